"""Export: a model directory written by `edgekit train` -> TFLite / ONNX bundles for edge devices.

    from edgekit.export import export_model
    results = export_model("models/text", "artifacts", formats=("tflite", "onnx"),
                           variants=("fp32", "fp16", "dynamic", "int8", "int16x8"),
                           calibration_samples=200, int8_io="float32", opset=17, device=None,
                           keep_float_layers=None)
    for r in results: r.format, r.variant, r.status ("ok"/"skipped"/"failed"), r.reason, r.bundle,
                      r.size_bytes, r.seconds

Modules: recipes (the recipes as data and their naming scheme), formats (the host-half registry), one
host half per format (tflite, onnx; with tflite_debug / onnx_debug for per-layer error and fix candidates,
lstm for the tf-keras rebuild of recurrent models, onnx_quantize for the one ONNX quantizer, metadata and
mediapipe_* for phone-app metadata), keras_layers, opcheck, manifest, source (model inputs), worker
(child process), exporter (orchestration), command (`edgekit export`).
"""

__all__ = ["ExportResult", "bundle_name", "export_model"]


def __getattr__(name: str):
    # Lazy, so that importing one export module (a format's, the registry) does not import all of them.
    if name in __all__:
        from edgekit.export import exporter

        return getattr(exporter, name)
    raise AttributeError(f"module 'edgekit.export' has no attribute {name!r}")
