"""TFLite's per-layer int8 error and keep-float candidates (the TFLite format's host half for
`verify` and `verify --fix`).

The QuantizationDebugger runs on the converter export builds for the recipe, in a CHILD process
(`python -m edgekit.export.tflite_debug`), because TFLite calibration can kill the process that runs
it (docs/conversion-facts.md). The fix re-quantizes with the worst tensors denylisted
(`QuantizationDebugOptions(denylisted_nodes=...)`), so those layers run in float.

The converter factory is "module:function" taking (model_dir, variant, calibration_x) and returning a
configured tf.lite.TFLiteConverter (edgekit.export.tflite provides it; tests pass their own).
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from edgekit.core import UserError
from edgekit.runtime import child, samples
from edgekit.runtime.formats import tflite as tflite_graph

DEFAULT_CONVERTER_FACTORY = "edgekit.export.tflite:build_converter"
CHILD_TIMEOUT_S = 600

# Debugging runs the float and the quantized model side by side on every sample, op by op (slow in
# Python): 64 samples estimate per-tensor error statistics to a few percent, which is all a ranking needs.
DEBUG_SAMPLES = 64

# Uniform rounding to a step `scale` has RMSE scale/sqrt(12) = 0.29*scale: a tensor near 0.29 is as
# good as 8 bits allow; above 0.7 (2.4x that) its range is badly clipped or badly covered by the
# calibration data, which is what the table flags.
IDEAL_RMSE_OVER_SCALE = 1 / np.sqrt(12)
SUSPICIOUS_RMSE_OVER_SCALE = 0.7

# The table names the few worst tensors: each float layer costs size and latency (and adds
# QUANTIZE/DEQUANTIZE pairs around it), so at most 3, worst first, and at least one tensor stays
# quantized (the debugger needs one to build its model; an all-float "int8" bundle is the fp32 one).
KEEP_FLOAT_COUNT = 3


# Parent side --------------------------------------------------------------------------------------

def layer_errors(model_dir: str | Path, variant: str = "int8", factory: str = DEFAULT_CONVERTER_FACTORY,
                 samples_count: int = DEBUG_SAMPLES, timeout: int = CHILD_TIMEOUT_S) -> dict:
    """{"tensors": [...worst first...], "worst": [names]} or {"skipped": reason}."""
    args = ["--model-dir", str(model_dir), "--variant", variant, "--factory", factory,
            "--samples", str(samples_count)]
    return _run(args, timeout)


def requantize_keeping_float(model_dir: str | Path, keep_float: list[str], model_out: str | Path,
                             variant: str = "int8", factory: str = DEFAULT_CONVERTER_FACTORY,
                             timeout: int = CHILD_TIMEOUT_S) -> dict:
    """Write a .tflite with `keep_float` tensors denylisted; returns {"ops": {...}} or {"skipped": why}."""
    args = ["--model-dir", str(model_dir), "--variant", variant, "--factory", factory,
            "--write-model", str(model_out)]
    for name in keep_float:
        args += ["--keep-float", name]
    return _run(args, timeout)


def _run(args: list[str], timeout: int) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p or os.getcwd() for p in sys.path)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        return child.run([sys.executable, "-m", "edgekit.export.tflite_debug", *args], env=env, timeout=timeout,
                         what="the per-layer debugger")
    except child.ChildFailed as exc:
        if exc.crashed:
            return {"skipped": f"the converter crashed ({exc.signal_name}) while debugging quantization"}
        return {"skipped": str(exc)}


class FixCandidates:
    """What `verify --fix` tries for a failing full-int8 TFLite bundle: the converter's own
    calibration on every calibration sample, then the worst tensors of the per-layer table in float."""
    calibrations = ("converter",)
    ranked_by = "rmse_over_scale (TFLite QuantizationDebugger)"

    def __init__(self, entry: dict, ctx):
        self.entry, self.ctx = entry, ctx
        self.max_steps = ctx.max_steps
        table = entry.get("layers") or {}
        self.ranked = [row["tensor"] for row in table.get("tensors") or []]
        self.skipped = None if self.ranked else table.get("skipped", "no per-layer table")
        # The debugger needs one quantized tensor left; the context's float fraction bounds the rest.
        self.max_float = max(1, min(len(self.ranked) - 1, int(ctx.max_float_fraction * len(self.ranked))))

    def write(self, target: Path, calibration: str, keep: list[str]) -> None:
        def build(path: Path) -> dict:
            outcome = requantize_keeping_float(self.ctx.model_dir, keep, path, self.entry.get("variant") or "int8",
                                               self.ctx.factory)
            if "skipped" in outcome:
                raise RuntimeError(outcome["skipped"])
            return outcome

        self.ctx.write_bundle(Path(self.entry["path"]), target, build,
                              "+float_layers" if keep else "+recalibrated", keep, {})


# Child side ---------------------------------------------------------------------------------------

def _load_factory(spec: str):
    import importlib

    module_name, _, func_name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module_name), func_name)
    except (ImportError, AttributeError) as exc:
        raise UserError(f"converter factory {spec} is not available ({exc})") from None


def _calibration(model_dir: Path):
    path = model_dir / "calibration.npz"
    if not path.is_file():
        raise UserError(f"no calibration data {path}: pass --calibration to export, or retrain with `edgekit train`")
    return samples.read(path, what="calibration data").x


def _rows(x, model_dir: Path, count: int):
    """Batch-1 samples as the converter's debug dataset wants them: a list of arrays in the model's
    input order (a several-input model's calibration holds one array per input name)."""
    if isinstance(x, dict):
        from edgekit.train.io import keras_input_shapes, model_file

        order = [n for n in keras_input_shapes(model_file(model_dir, True)) if n in x] or list(x)
        arrays = [np.asarray(x[n]) for n in order]
    else:
        arrays = [np.asarray(x)]
    n = min(count, len(arrays[0]))
    return lambda: ([a[i:i + 1] for a in arrays] for i in range(n))


def _snr_db(float_tensors, quant_tensors, scale, zero_point) -> float:
    """SNR of one tensor's dequantized int8 values vs its float values (layer_direct_compare_metrics)."""
    reference = np.asarray(float_tensors[0], dtype=np.float64)
    dequantized = (np.asarray(quant_tensors[0], dtype=np.float64) - zero_point) * scale
    noise = float(np.sum((reference - dequantized) ** 2))
    signal = float(np.sum(reference ** 2))
    return float(10 * np.log10(max(signal, 1e-30) / max(noise, 1e-30)))


def _debugger(model_dir: Path, variant: str, factory: str, count: int, keep_float: list[str]):
    from edgekit.core import quiet_tensorflow

    quiet_tensorflow()
    import tensorflow as tf

    calibration = _calibration(model_dir)
    converter = _load_factory(factory)(model_dir, variant, calibration)
    options = tf.lite.experimental.QuantizationDebugOptions(
        layer_direct_compare_metrics={"snr_db": _snr_db}, denylisted_nodes=keep_float or None)
    return tf.lite.experimental.QuantizationDebugger(converter=converter, debug_options=options,
                                                     debug_dataset=_rows(calibration, model_dir, count))


def layer_table(debugger) -> dict:
    """Run the debugger and turn its statistics dump into rows, worst RMSE/scale first."""
    debugger.run()
    dump = io.StringIO()
    debugger.layer_statistics_dump(dump)
    rows = []
    for record in csv.DictReader(io.StringIO(dump.getvalue())):
        scale = float(record["scale"])
        rmse = float(np.sqrt(float(record["mean_squared_error"])))
        rows.append({
            "tensor": record["tensor_name"], "op": record["op_name"],
            "rmse_over_scale": rmse / scale if scale > 0 else None,
            "snr_db": float(record["snr_db"]), "max_abs_error": float(record["max_abs_error"]),
            "mean_error": float(record["mean_error"]), "scale": scale,
            "elements": int(float(record["num_elements"])),
        })
    rows.sort(key=lambda r: -(r["rmse_over_scale"] or 0.0))
    for row in rows:
        row["suspicious"] = bool((row["rmse_over_scale"] or 0) > SUSPICIOUS_RMSE_OVER_SCALE)
    keep = min(KEEP_FLOAT_COUNT, len(rows) - 1)
    return {"tensors": rows, "worst": [r["tensor"] for r in rows[:max(keep, 0)]],
            "ideal_rmse_over_scale": IDEAL_RMSE_OVER_SCALE,
            "suspicious_rmse_over_scale": SUSPICIOUS_RMSE_OVER_SCALE}


def _work(argv: list[str] | None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m edgekit.export.tflite_debug")
    parser.add_argument("--model-dir", required=True, type=Path)
    parser.add_argument("--variant", default="int8")
    parser.add_argument("--factory", default=DEFAULT_CONVERTER_FACTORY)
    parser.add_argument("--samples", type=int, default=DEBUG_SAMPLES)
    parser.add_argument("--keep-float", action="append", default=[])
    parser.add_argument("--write-model", type=Path)
    args = parser.parse_args(argv)
    debugger = _debugger(args.model_dir, args.variant, args.factory, args.samples, args.keep_float)
    if not args.write_model:
        return layer_table(debugger)
    from edgekit.export.lstm import without_lstm_cell_clip  # the same post-pass as every export

    model = without_lstm_cell_clip(debugger.get_nondebug_quantized_model())
    fd, tmp = tempfile.mkstemp(prefix=".fix-", suffix=".tflite", dir=args.write_model.parent)
    with os.fdopen(fd, "wb") as f:
        f.write(model)
    os.replace(tmp, args.write_model)
    return {"keep_float": args.keep_float, "ops": tflite_graph.read_graph(model).histogram(),
            "size_bytes": len(model)}


if __name__ == "__main__":
    sys.exit(child.child_main(lambda: _work(sys.argv[1:])))
