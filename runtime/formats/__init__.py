"""Model-file formats, registered once: the device half of each format (numpy and that format's own
backend library only).

A `Format` holds what every layer needs to know about a format without converting anything: the
model file's suffix and name inside a bundle, the backends that run it (in order of preference), a
cheap check of the file's bytes, and the one graph reader (`read_graph`: tensors, ops, quantization
parameters, recurrent state inputs) with the op classes the cost estimates use (`count_work`).
The conversion side of each format (recipes -> converter settings, op rules, phone-app metadata,
per-layer debugging, fix candidates) is registered once on the host, in edgekit/export/formats.py.

Adding a format: one module here (the device half), one in export/ (the host half), one entry in
each registry, and a backend in runtime/backends if no existing one runs it. Everything else (bundles,
backends, profiles, both command lines, estimates, verify, fix, recommend) iterates the registries.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from edgekit.runtime.errors import ModelFileError


@dataclass(frozen=True)
class Format:
    name: str                    # as bundles and manifests name it: "tflite"
    suffix: str                  # ".tflite"
    file_name: str               # the model file inside a bundle
    runtime: str                 # the edge runtime's name in messages: "LiteRT"
    backends: tuple[str, ...]    # runtime/backends names that run it, in order of preference
    module: str                  # this format's device-half module (check_bytes, read_graph, count_work)
    # the latency cost model's rates were fitted on published figures of this format (devices/estimate)
    cost_calibrated: bool = False
    # MediaPipe Tasks (what phone apps run) load this format's files
    phone_apps: bool = False

    def impl(self):
        """The device-half module (imported on first use)."""
        return importlib.import_module(self.module)

    def check_bytes(self, data: bytes, path) -> None:
        """Cheap structural checks before any backend sees the bytes (ModelFileError, one line)."""
        self.impl().check_bytes(data, Path(path))

    def read_graph(self, data: bytes):
        """The model's graph (runtime/formats/graph.py `Graph`)."""
        return self.impl().read_graph(data)


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("tflite", ".tflite", "model.tflite", "LiteRT", ("litert", "tflite_runtime", "tensorflow"),
           "edgekit.runtime.formats.tflite", cost_calibrated=True, phone_apps=True),
    Format("onnx", ".onnx", "model.onnx", "onnxruntime", ("onnxruntime",),
           "edgekit.runtime.formats.onnx"),
)}
NAMES = tuple(FORMATS)


def get(name: str) -> Format:
    """The format called `name` (ModelFileError naming the known ones otherwise)."""
    try:
        return FORMATS[name]
    except (KeyError, TypeError):
        raise ModelFileError(f"unknown model format {name!r}; formats: {', '.join(FORMATS)}") from None


def by_suffix(path) -> Format | None:
    """The format of a model file, by its suffix (None when no format has it)."""
    suffix = Path(path).suffix.lower()
    return next((f for f in FORMATS.values() if f.suffix == suffix), None)


def suffixes() -> str:
    return ", ".join(f.suffix for f in FORMATS.values())
