"""Per-layer int8 error (float vs quantized, tensor by tensor) and the selective-quantization fix.

TFLite: tf.lite.experimental.QuantizationDebugger on the converter that export builds for the variant,
run in a CHILD process (`python -m edgekit.verify.layers`), because TFLite calibration can kill the process
that runs it (conversion-facts.md). The fix re-quantizes with the worst tensors denylisted
(`QuantizationDebugOptions(denylisted_nodes=...)`), so those layers run in float.

The converter factory is "module:function" taking (model_dir, variant, calibration_x) and returning a
configured tf.lite.TFLiteConverter (export.tflite provides it; tests pass their own).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from edgekit.core import UserError, first_line

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

# The fix keeps the few worst tensors in float: each float layer costs size and latency (and adds
# QUANTIZE/DEQUANTIZE pairs around it), so one round keeps at most 3, worst first, and always leaves
# at least one tensor quantized (the debugger needs one to build its model, and an all-float "int8"
# bundle would just be the fp32 one).
KEEP_FLOAT_COUNT = 3


# Parent side --------------------------------------------------------------------------------------

def tflite_layer_errors(model_dir: str | Path, variant: str = "int8",
                        factory: str = DEFAULT_CONVERTER_FACTORY,
                        samples: int = DEBUG_SAMPLES, timeout: int = CHILD_TIMEOUT_S) -> dict:
    """{"tensors": [...worst first...], "worst": [names]} or {"skipped": reason}."""
    with tempfile.TemporaryDirectory(prefix="edgekit-layers-") as tmp:
        out = Path(tmp) / "layers.json"
        args = ["--model-dir", str(model_dir), "--variant", variant, "--factory", factory,
                "--samples", str(samples), "--out", str(out)]
        failure = _run_child(args, timeout)
        if failure:
            return {"skipped": failure}
        return json.loads(out.read_text())


def requantize_keeping_float(model_dir: str | Path, keep_float: list[str], model_out: str | Path,
                             variant: str = "int8", factory: str = DEFAULT_CONVERTER_FACTORY,
                             timeout: int = CHILD_TIMEOUT_S) -> dict:
    """Write a .tflite with `keep_float` tensors denylisted; returns {"ops": {...}} or {"skipped": why}."""
    with tempfile.TemporaryDirectory(prefix="edgekit-fix-") as tmp:
        out = Path(tmp) / "fix.json"
        args = ["--model-dir", str(model_dir), "--variant", variant, "--factory", factory,
                "--out", str(out), "--write-model", str(model_out)]
        for name in keep_float:
            args += ["--keep-float", name]
        failure = _run_child(args, timeout)
        if failure:
            return {"skipped": failure}
        return json.loads(out.read_text())


def _run_child(args: list[str], timeout: int) -> str | None:
    """Run `python -m edgekit.verify.layers ARGS`; None on success, else one line saying why it failed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p or os.getcwd() for p in sys.path)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        proc = subprocess.run([sys.executable, "-m", "edgekit.verify.layers", *args], env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"per-layer debugger ran past {timeout} s"
    if proc.returncode == 0:
        return None
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("LAYERS-ERROR:")]
    if errors:
        return errors[-1].removeprefix("LAYERS-ERROR:").strip()
    if proc.returncode < 0:
        return f"the converter crashed (signal {-proc.returncode}) while debugging quantization"
    return f"per-layer debugger failed (exit {proc.returncode}): {lines[-1] if lines else 'no output'}"


def onnx_layer_errors(float_model: str | Path, qdq_model: str | Path, x: np.ndarray,
                      samples: int = DEBUG_SAMPLES) -> dict:
    """Per-tensor SNR of a QDQ int8 ONNX model vs its float twin (onnxruntime's qdq_loss_debug):
    `snr_db` compares each activation with the float model's (error accumulated up to that tensor),
    `local_snr_db` with its own quantize-dequantize (the tensor's own rounding). Worst (lowest) first."""
    try:
        import onnxruntime as ort
        from onnxruntime.quantization import CalibrationDataReader
        from onnxruntime.quantization.qdq_loss_debug import (
            collect_activations,
            compute_activation_error,
            create_activation_matching,
            modify_model_output_intermediate_tensors,
        )
    except ImportError as exc:
        return {"skipped": f"onnxruntime quantization tools are not installed ({exc})"}

    input_name = ort.InferenceSession(str(float_model), providers=["CPUExecutionProvider"]).get_inputs()[0].name
    rows = np.asarray(x[:samples])

    class Rows(CalibrationDataReader):
        def __init__(self):
            self.items = iter(rows)

        def get_next(self):
            row = next(self.items, None)
            return None if row is None else {input_name: row[None]}

    with tempfile.TemporaryDirectory(prefix="edgekit-qdq-") as tmp:
        float_aug, qdq_aug = Path(tmp) / "float.onnx", Path(tmp) / "qdq.onnx"
        modify_model_output_intermediate_tensors(str(float_model), str(float_aug))
        modify_model_output_intermediate_tensors(str(qdq_model), str(qdq_aug))
        float_acts = collect_activations(str(float_aug), Rows())
        qdq_acts = collect_activations(str(qdq_aug), Rows())
    errors = compute_activation_error(create_activation_matching(qdq_acts, float_acts))
    table = [{"tensor": name, "op": "", "rmse_over_scale": None,
              "snr_db": _finite(err.get("xmodel_err")), "local_snr_db": _finite(err.get("qdq_err"))}
             for name, err in errors.items() if "xmodel_err" in err]
    if not table:
        return {"skipped": "no tensor of the int8 model matched the float model by name"}
    table.sort(key=lambda r: r["snr_db"] if r["snr_db"] is not None else float("inf"))
    return {"tensors": table, "worst": [r["tensor"] for r in table[:KEEP_FLOAT_COUNT]],
            "metric": "snr_db"}


def _finite(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


# Child side ---------------------------------------------------------------------------------------

def _load_factory(spec: str):
    import importlib

    module_name, _, func_name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module_name), func_name)
    except (ImportError, AttributeError) as exc:
        raise UserError(f"converter factory {spec} is not available ({exc})") from None


def _calibration(model_dir: Path) -> np.ndarray:
    path = model_dir / "calibration.npz"
    if not path.is_file():
        raise UserError(f"no calibration data {path}: retrain with `edgekit train`")
    with np.load(path, allow_pickle=False) as data:
        return data["x"]


def _snr_db(float_tensors, quant_tensors, scale, zero_point) -> float:
    """SNR of one tensor's dequantized int8 values vs its float values (layer_direct_compare_metrics)."""
    reference = np.asarray(float_tensors[0], dtype=np.float64)
    dequantized = (np.asarray(quant_tensors[0], dtype=np.float64) - zero_point) * scale
    noise = float(np.sum((reference - dequantized) ** 2))
    signal = float(np.sum(reference ** 2))
    return float(10 * np.log10(max(signal, 1e-30) / max(noise, 1e-30)))


def _debugger(model_dir: Path, variant: str, factory: str, samples: int, keep_float: list[str]):
    from edgekit.core import quiet_tensorflow

    quiet_tensorflow()
    import tensorflow as tf

    calibration = _calibration(model_dir)
    converter = _load_factory(factory)(model_dir, variant, calibration)
    debug_rows = calibration[:samples]
    options = tf.lite.experimental.QuantizationDebugOptions(
        layer_direct_compare_metrics={"snr_db": _snr_db},
        denylisted_nodes=keep_float or None)
    return tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_options=options,
        debug_dataset=lambda: ([row[None]] for row in debug_rows))


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


def _op_counts(model_bytes: bytes) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    counts: dict[str, int] = {}
    for op in Interpreter(model_content=model_bytes)._get_ops_details():
        counts[op["op_name"]] = counts.get(op["op_name"], 0) + 1
    return counts


def child_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgekit.verify.layers")
    parser.add_argument("--model-dir", required=True, type=Path)
    parser.add_argument("--variant", default="int8")
    parser.add_argument("--factory", default=DEFAULT_CONVERTER_FACTORY)
    parser.add_argument("--samples", type=int, default=DEBUG_SAMPLES)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--keep-float", action="append", default=[])
    parser.add_argument("--write-model", type=Path)
    args = parser.parse_args(argv)
    try:
        debugger = _debugger(args.model_dir, args.variant, args.factory, args.samples, args.keep_float)
        if args.write_model:
            from edgekit.export.tflite import without_lstm_cell_clip  # the same post-pass as every export

            model = without_lstm_cell_clip(debugger.get_nondebug_quantized_model())
            args.write_model.write_bytes(model)
            result = {"keep_float": args.keep_float, "ops": _op_counts(model), "size_bytes": len(model)}
        else:
            result = layer_table(debugger)
    except Exception as exc:  # noqa: BLE001 - reported to the parent as one line
        message = first_line(exc)
        print(f"LAYERS-ERROR: {type(exc).__name__}: {message}", file=sys.stderr)
        return 1
    args.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(child_main())
