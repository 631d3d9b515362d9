"""`edgekit export MODEL`: bundles for every requested format and variant (see export/__init__.py).
MODEL is a model directory from `edgekit train` or a Keras file (.keras; .h5 with --allow-unsafe)."""

from __future__ import annotations

from pathlib import Path

from edgekit.export.exporter import export_model

# command-line flags that describe the model (export/source.py model_view)
MODEL_OPTIONS = ("calibration", "name", "task", "preprocess", "labels", "vocab", "max_len")


def run(args) -> int:
    """Exit code 0 when every requested variant was written or skipped, 1 when any failed."""
    out = Path(args.out) if args.out else Path(args.model_dir).resolve().parent / "artifacts"
    results = export_model(args.model_dir, out, formats=args.formats, variants=args.variants,
                           calibration_samples=args.calibration_samples, int8_io=args.int8_io,
                           opset=args.opset, device=args.device,
                           keep_float_layers=getattr(args, "keep_float_layers", None),
                           allow_unsafe=getattr(args, "allow_unsafe", False),
                           model_options={k: getattr(args, k, None) for k in MODEL_OPTIONS})
    return 1 if any(r.status == "failed" for r in results) else 0
