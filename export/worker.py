"""Child process that converts one format's variants: `python -m edgekit.export.worker REQUEST.json`.

Why a child: a converter crash (the TFLite quantizer segfaults on some graphs) kills the process that
runs it. The parent (export/__init__.py) starts one worker per format, so TensorFlow is imported once
per format, and the worker reports each variant as JSON lines appended to the request's `events` file:
  {"event": "start", "variant": "int8"}
  {"event": "done", "variant": "int8", "status": "ok"|"skipped"|"failed", "reason": ..., "seconds": s,
   "file": path, "details": {inputs, outputs, op_records, ops, ...}}
  {"event": "fatal", "message": ...}            (the model directory cannot be used: a UserError)
A "start" without its "done" means the worker died in that variant; the parent marks only that
variant failed and starts a new worker for the rest.

Test hook: EDGEKIT_EXPORT_CRASH="tflite:int8" makes the worker kill itself with SIGSEGV when it starts
that variant (proves the isolation without a real converter bug).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path

from edgekit.core import UserError, first_line, quiet_tensorflow
from edgekit.export import formats

CRASH_HOOK = "EDGEKIT_EXPORT_CRASH"
RUNTIMES = {"tflite": "LiteRT", "onnx": "onnxruntime"}


class Events:
    def __init__(self, path: str):
        self._path = path

    def emit(self, **event) -> None:
        with open(self._path, "a", encoding="utf-8") as f:
            f.write(json.dumps(event, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    # TF converter errors start with a location line; the useful part has "error:" in it.
    useful = next((l.split("error:", 1)[1].strip() for l in lines if "error:" in l), None)
    return f"{type(exc).__name__}: {useful or first_line(exc)}"[:500]


def _parity(reference, got, output_names: list[str], file_outputs: list[dict]) -> float | None:
    """Largest |Keras - file| over every output; several outputs are paired by name (Keras's by
    `output_names`, the file's in its own output order, as `describe` lists them)."""
    import numpy as np

    if reference is None or got is None:
        return None
    if isinstance(reference, dict):
        reference = [reference[name] for name in output_names]
    if isinstance(reference, (list, tuple)) and len(reference) > 1:
        by_name = dict(zip([o["name"] for o in file_outputs], got))
        if set(by_name) != set(output_names):
            raise RuntimeError(f"converted outputs {sorted(by_name)} do not match the model's {sorted(output_names)}")
        return max(_parity(r, by_name[n], [], []) for r, n in zip(reference, output_names))
    reference = reference[0] if isinstance(reference, (list, tuple)) else reference
    got = got[0] if isinstance(got, (list, tuple)) else got
    return float(np.max(np.abs(np.asarray(reference, np.float32) - np.asarray(got, np.float32))))


def export_variant(recipe, model, metadata, request, calibration, check_x, reference, staging, cache):
    """Convert one recipe through its format module, then prove the file runs in the edge runtime."""
    fmt = recipe.format
    module = formats.module(fmt)
    path = module.export_variant(recipe, model, metadata, request, calibration, staging, cache)
    details = module.describe(path)
    try:  # the file must run in the edge runtime, not only convert
        got = module.run(path, check_x) if check_x is not None else None
    except Exception as exc:
        raise RuntimeError(f"converted model does not run in {RUNTIMES[fmt]}: {_first_line(exc)}") from None
    from edgekit.export.tflite import io_names

    details["max_abs_err_vs_keras"] = _parity(reference, got, io_names(model, metadata)[1], details["outputs"])
    details["converter_path"] = module.conversion_path(model, recipe.variant)
    return path, details


def main(argv: list[str]) -> int:
    request = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    events = Events(request["events"])
    quiet_tensorflow()
    from edgekit.export import recipes, source, tflite
    from edgekit.train.io import load_model

    try:
        model, metadata = load_model(request["model_dir"], request.get("allow_unsafe", False))
        calibrated = any(recipes.RECIPES[(request["format"], v)].calibrated for v in request["variants"])
        calibration = (source.load_calibration(request["model_dir"], request["calibration_samples"])
                       if calibrated else None)
        check_x = source.load_check_samples(request["model_dir"])
    except UserError as exc:
        events.emit(event="fatal", message=str(exc))
        return 2
    reference = model(check_x, training=False) if check_x is not None else None
    layer_classes = tflite.keras_layer_classes(model)
    events.emit(event="model", layer_classes=layer_classes)
    crash_at = os.environ.get(CRASH_HOOK, "")
    cache: dict = {}
    for variant in request["variants"]:
        events.emit(event="start", variant=variant)
        if crash_at == f"{request['format']}:{variant}":
            os.kill(os.getpid(), signal.SIGSEGV)
        start = time.perf_counter()
        staging = Path(request["staging"]) / variant
        staging.mkdir(parents=True, exist_ok=True)
        recipe = recipes.Recipe.from_json(request["recipes"][variant])
        done = {"event": "done", "variant": variant, "status": "ok", "reason": "", "file": None,
                "details": None}
        try:
            refusal = recipes.refusal_reason(recipe, set(layer_classes.values()))
            if refusal:
                done.update(status="skipped", reason=refusal)
            else:
                path, details = export_variant(recipe, model, metadata, request, calibration, check_x,
                                               reference, staging, cache)
                done.update(file=str(path), details=details)
        except tflite.ConverterRefused as exc:
            done.update(status="skipped", reason=f"converter refused {variant}: {exc}")
        except Exception as exc:  # this variant failed; the next one may still work
            traceback.print_exc(file=sys.stderr)
            done.update(status="failed", reason=_first_line(exc))
        done["seconds"] = round(time.perf_counter() - start, 2)
        events.emit(**done)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
