"""`edgekit export MODEL_DIR`: bundles for every requested format and variant (see export/__init__.py)."""

from __future__ import annotations

from pathlib import Path

from edgekit.export.exporter import export_model


def run(args) -> int:
    """Exit code 0 when every requested variant was written or skipped, 1 when any failed."""
    out = Path(args.out) if args.out else Path(args.model_dir).resolve().parent / "artifacts"
    results = export_model(args.model_dir, out, formats=args.formats, variants=args.variants,
                           calibration_samples=args.calibration_samples, int8_io=args.int8_io,
                           opset=args.opset, device=args.device,
                           keep_float_layers=getattr(args, "keep_float_layers", None),
                           allow_unsafe=getattr(args, "allow_unsafe", False))
    return 1 if any(r.status == "failed" for r in results) else 0
