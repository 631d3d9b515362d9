"""The export formats, listed once. Each is one module with the same interface:

    FILE_NAME                       the model file's name inside a bundle
    export_variant(recipe, model, metadata, request, calibration, staging, cache) -> Path
    describe(path) -> dict          inputs, outputs, op records and histogram, read from the file
    run(path, x) -> np.ndarray      float outputs on `x`, in that format's edge runtime
    conversion_path(model, variant) -> str

Adding a format is one module plus one line here (and its recipes in export/recipes.py).
"""

from __future__ import annotations

import importlib

FORMAT_MODULES = {"tflite": "edgekit.export.tflite", "onnx": "edgekit.export.onnx"}
FILE_NAMES = {"tflite": "model.tflite", "onnx": "model.onnx"}


def module(fmt: str):
    """The module of format `fmt` (imported on demand: each pulls in its converter)."""
    if fmt not in FORMAT_MODULES:
        raise ValueError(f"unknown format {fmt!r}; formats: {', '.join(FORMAT_MODULES)}")
    return importlib.import_module(FORMAT_MODULES[fmt])
