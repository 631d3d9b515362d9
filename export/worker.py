"""Child process that converts one format's variants: `python -m edgekit.export.worker REQUEST.json`.

Why a child: a converter crash (the TFLite quantizer segfaults on some graphs) kills the process that
runs it. The parent (export/exporter.py) starts one worker per format, so TensorFlow is imported once
per format, and the worker reports each variant as JSON lines appended to the request's `events` file
(a stream, so the parent shows progress and knows which variant a crash cost):
  {"event": "start", "variant": "int8"}
  {"event": "done", "variant": "int8", "status": "ok"|"skipped"|"failed", "reason": ..., "seconds": s,
   "file": path, "details": {inputs, outputs, op_records, ops, ...}}
  {"event": "fatal", "message": ...}            (the model directory cannot be used: a UserError)
A "start" without its "done" means the worker died in that variant; the parent marks only that
variant failed and starts a new worker for the rest.

Every converted file is run once before it is accepted, through the runtime's own runner with a
device's default settings (XNNPACK for TFLite), on a few held-out samples: its largest difference
from Keras is the manifest's `max_abs_err_vs_keras`.

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

from edgekit.core import UserError, error_reason, quiet_tensorflow
from edgekit.export import formats, recipes

CRASH_HOOK = "EDGEKIT_EXPORT_CRASH"


class Events:
    def __init__(self, path: str):
        self._path = path

    def emit(self, **event) -> None:
        with open(self._path, "a", encoding="utf-8") as f:
            f.write(json.dumps(event, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())


def _by_name(value, names: list[str]) -> dict:
    """Keras outputs (one array, a list in output order, or a dict) by output name."""
    if isinstance(value, dict):
        return {name: value[name] for name in names if name in value} or dict(zip(names, value.values()))
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    return dict(zip(names, values))


def parity(reference, got: dict, output_names: list[str]) -> float | None:
    """Largest |Keras - file| over every output, paired by output name."""
    import numpy as np

    if reference is None or got is None:
        return None
    expected = _by_name(reference, output_names)
    if set(expected) != set(got):
        raise RuntimeError(f"converted outputs {sorted(got)} do not match the model's {sorted(expected)}")
    return max(float(np.max(np.abs(np.asarray(expected[n], np.float32) - np.asarray(got[n], np.float32))))
               for n in expected)


def run_converted(path: Path, details: dict, x) -> dict:
    """The converted file's outputs by name on `x`, run as a device runs it (the runtime's runner)."""
    from edgekit.runtime.model import load_converted

    with load_converted(path, {"inputs": details["inputs"], "outputs": details["outputs"]}) as model:
        return model.predict_outputs(x)


def export_variant(recipe, model, metadata, request, calibration, check_x, reference, staging, cache):
    """Convert one recipe through its format's host half, then prove the file runs in the edge runtime."""
    from edgekit.export.tflite import io_names

    fmt = request["format"]
    host = formats.host(fmt)
    path = host.export_variant(recipe, model, metadata, request, calibration, staging, cache)
    details = formats.device(fmt).read_graph(path.read_bytes()).describe()
    try:  # the file must run in the edge runtime, not only convert
        got = run_converted(path, details, check_x) if check_x is not None else None
    except Exception as exc:
        raise RuntimeError(f"converted model does not run in {formats.device(fmt).runtime}: "
                           f"{error_reason(exc)}") from None
    details["max_abs_err_vs_keras"] = parity(reference, got, io_names(model, metadata)[1])
    details["converter_path"] = host.conversion_path(model, recipe)
    return path, details


def main(argv: list[str]) -> int:
    request = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    events = Events(request["events"])
    quiet_tensorflow()
    from edgekit.export import source
    from edgekit.export.keras_layers import keras_layer_classes
    from edgekit.train.io import load_model

    chosen = {v: recipes.Recipe.from_json(request["recipes"][v]) for v in request["variants"]}
    try:
        model, metadata = load_model(request["model_dir"], request.get("allow_unsafe", False))
        calibrated = any(r.calibrated for r in chosen.values())
        calibration = (source.load_calibration(request["model_dir"], request["calibration_samples"])
                       if calibrated else None)
        check_x = source.load_check_samples(request["model_dir"])
    except UserError as exc:
        events.emit(event="fatal", message=str(exc))
        return 2
    reference = model(check_x, training=False) if check_x is not None else None
    layer_classes = keras_layer_classes(model)
    events.emit(event="model", layer_classes=layer_classes)
    crash_at = os.environ.get(CRASH_HOOK, "")
    host = formats.host(request["format"])
    cache: dict = {}
    for variant, recipe in chosen.items():
        events.emit(event="start", variant=variant)
        if crash_at == f"{request['format']}:{variant}":
            os.kill(os.getpid(), signal.SIGSEGV)
        start = time.perf_counter()
        staging = Path(request["staging"]) / variant
        staging.mkdir(parents=True, exist_ok=True)
        done = {"event": "done", "variant": variant, "status": "ok", "reason": "", "file": None,
                "details": None}
        try:
            refusal = host.refusal(recipe, set(layer_classes.values()))
            if refusal:
                done.update(status="skipped", reason=refusal)
            else:
                path, details = export_variant(recipe, model, metadata, request, calibration, check_x,
                                               reference, staging, cache)
                done.update(file=str(path), details=details)
        except recipes.RecipeRefused as exc:
            done.update(status="skipped", reason=f"converter refused {variant}: {exc}")
        except Exception as exc:  # this variant failed; the next one may still work
            traceback.print_exc(file=sys.stderr)
            done.update(status="failed", reason=error_reason(exc))
        done["seconds"] = round(time.perf_counter() - start, 2)
        events.emit(**done)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
