"""Backend registry and selection: which runner class runs which model format, in order of preference.

Nothing here imports a backend library: availability is checked with `importlib.util.find_spec`,
and a runner's module (which imports its library lazily on activation) only when it is chosen.
"""

from __future__ import annotations

import importlib
import importlib.util

from edgekit.runtime import formats
from edgekit.runtime.errors import BackendUnavailableError

# name -> (runner module, runner class, the library it needs)
BACKENDS = {
    "litert": ("edgekit.runtime.backends.litert", "LiteRTRunner", "ai_edge_litert"),
    "tflite_runtime": ("edgekit.runtime.backends.tflite_runtime", "TFLiteRuntimeRunner", "tflite_runtime"),
    "tensorflow": ("edgekit.runtime.backends.tensorflow_lite", "TensorFlowLiteRunner", "tensorflow"),
    "onnxruntime": ("edgekit.runtime.backends.onnxruntime", "OnnxRuntimeRunner", "onnxruntime"),
}
# format -> backends in order of preference, as each format lists them (runtime/formats; for TFLite,
# tensorflow.lite comes last: it loads all of TensorFlow)
FORMAT_BACKENDS = {f.name: f.backends for f in formats.FORMATS.values()}
INSTALL_HINT = {
    "litert": "pip install ai-edge-litert",
    "tflite_runtime": "pip install tflite-runtime (Python <= 3.11, numpy < 2)",
    "tensorflow": "pip install tensorflow",
    "onnxruntime": "pip install onnxruntime",
}


def is_available(name: str) -> bool:
    try:
        return importlib.util.find_spec(BACKENDS[name][2]) is not None
    except (ImportError, ValueError):
        return False


def available_backends() -> list[str]:
    return [name for name in BACKENDS if is_available(name)]


def candidates(fmt: str, backend: str | None = None) -> list[str]:
    """Backends to try for a model format: the requested one, or every installed one in order."""
    if fmt not in FORMAT_BACKENDS:
        raise BackendUnavailableError(f"no backend runs {fmt!r} models; formats: {', '.join(FORMAT_BACKENDS)}")
    if backend in (None, "auto"):
        found = [name for name in FORMAT_BACKENDS[fmt] if is_available(name)]
        if not found:
            hints = "; ".join(INSTALL_HINT[n] for n in FORMAT_BACKENDS[fmt])
            raise BackendUnavailableError(f"no backend for .{fmt} models is installed: {hints}")
        return found
    if backend not in BACKENDS:
        raise BackendUnavailableError(f"unknown backend {backend!r}; choose from auto, {', '.join(BACKENDS)}")
    if backend not in FORMAT_BACKENDS[fmt]:
        raise BackendUnavailableError(f"backend {backend} cannot run .{fmt} models; choose from "
                                      f"{', '.join(FORMAT_BACKENDS[fmt])}")
    if not is_available(backend):
        raise BackendUnavailableError(f"backend {backend} is not installed: {INSTALL_HINT[backend]}")
    return [backend]


def runner_class(name: str):
    module, cls, _ = BACKENDS[name]
    return getattr(importlib.import_module(module), cls)


def create_runner(fmt: str, model: bytes, settings=None, backend: str | None = None, name: str = "model"):
    """An active runner for `model`: the requested backend, or the first installed one that imports
    (a broken install, e.g. tflite_runtime built for numpy 1 under numpy 2, falls through to the next)."""
    errors = []
    for candidate in candidates(fmt, backend):
        runner = runner_class(candidate)(model, settings=settings, name=name)
        try:
            return runner.activate()
        except ImportError as exc:
            errors.append(f"{candidate}: {exc}")
    raise BackendUnavailableError(f"no working backend for .{fmt} models ({'; '.join(errors)})")
