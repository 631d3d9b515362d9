"""Export: a model directory written by `edgekit train` -> TFLite / ONNX bundles for edge devices.

    from edgekit.export import export_model
    results = export_model("models/text", "artifacts", formats=("tflite", "onnx"),
                           variants=("fp32", "fp16", "dynamic", "int8", "int16x8"),
                           calibration_samples=200, int8_io="float32", opset=17, device=None,
                           keep_float_layers=None)
    for r in results: r.format, r.variant, r.status ("ok"/"skipped"/"failed"), r.reason, r.bundle,
                      r.size_bytes, r.seconds

Modules: recipes (the variant table and naming scheme), tflite / onnx (one per format), lstm (tf-keras
rebuild of recurrent models), opcheck, manifest, source (model dir inputs), worker (child process),
exporter (orchestration), command (`edgekit export`).
"""

from edgekit.export.exporter import ExportResult, bundle_name, export_model

__all__ = ["ExportResult", "bundle_name", "export_model"]
