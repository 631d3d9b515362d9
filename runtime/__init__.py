"""edgekit's device-side runtime: numpy plus one inference backend (ai_edge_litert, tflite_runtime,
tensorflow.lite as a last resort, or onnxruntime). Never imports TensorFlow (except that last-resort
backend, when chosen), Keras, tf2onnx, onnx, or the host packages.

    from edgekit import runtime
    with runtime.load("bundles/text-tflite-int8", threads=2) as model:
        model.predict(["free entry, claim your prize now"])

Importing this package is light: numpy, the backends and preprocessing load on first use.
"""

from __future__ import annotations

from edgekit.runtime.errors import (
    BackendUnavailableError,
    EdgekitError,
    InferenceError,
    IntegrityError,
    InvalidInputError,
    ModelFileError,
    SettingsError,
)

__all__ = ["load", "EdgeModel", "Prediction", "RuntimeSettings", "EdgekitError", "InferenceError", "InvalidInputError",
           "ModelFileError", "IntegrityError", "BackendUnavailableError", "SettingsError"]

_LAZY = {"load": "edgekit.runtime.model", "EdgeModel": "edgekit.runtime.model", "Prediction": "edgekit.runtime.heads",
         "RuntimeSettings": "edgekit.runtime.settings"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'runtime' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
