"""ONNX's per-tensor int8 error and fix candidates (the ONNX format's host half for `verify` and
`verify --fix`): onnxruntime's qdq_loss_debug on a QDQ bundle and the fp32 ONNX bundle beside it, and
re-quantization through export/onnx.py `quantize_int8` (the one ONNX quantizer) with other
calibration methods and the worst nodes kept in float. In-process: onnxruntime's quantizer does not
crash the way TFLite's calibrator can.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from edgekit.runtime import samples
from edgekit.runtime.bundle import read_manifest
from edgekit.runtime.errors import ModelFileError

KEEP_FLOAT_COUNT = 3
# onnxruntime calibration methods tried in turn (before any float node): percentile keeps 99.999% of
# each activation's values (clips rare outliers), entropy picks the range that minimises KL divergence.
CALIBRATIONS = ("MinMax", "Percentile", "Entropy")


def float_twin(entry: dict, bundles: list[dict] | None = None) -> Path | None:
    """The model file of the float ONNX bundle of the same model beside a quantized one."""
    path = Path(entry["path"])
    try:
        name = read_manifest(path).get("name")
    except ModelFileError:
        return None
    folders = [Path(b["path"]) for b in bundles] if bundles else sorted(p for p in path.parent.iterdir() if p.is_dir())
    for folder in folders:
        try:
            manifest = read_manifest(folder)
        except ModelFileError:
            continue
        if manifest.get("format") == "onnx" and manifest.get("recipe", "").startswith("float_wf32") \
                and manifest.get("name") == name:
            return folder / str(manifest["model_file"])
    return None


def _feeds(x, names: list[str], count: int):
    """Batch-1 feeds {input name: array} for a one-input array or a dict by input name."""
    arrays = x if isinstance(x, dict) else {names[0]: x}
    n = min(count, samples.batch_size(arrays))
    return [{name: np.asarray(arrays[name][i:i + 1]) for name in names} for i in range(n)]


def layer_errors(entry: dict, bundles: list[dict], x, count: int) -> dict:
    """Per-tensor SNR of a QDQ int8 ONNX model vs its float twin (onnxruntime's qdq_loss_debug):
    `snr_db` compares each activation with the float model's (error accumulated up to that tensor),
    `local_snr_db` with its own quantize-dequantize (the tensor's own rounding). Worst (lowest) first."""
    float_model = float_twin(entry, bundles)
    if float_model is None:
        return {"skipped": "needs the fp32 ONNX bundle beside the int8 one to compare tensors"}
    qdq_model = Path(entry["path"]) / str(read_manifest(Path(entry["path"]))["model_file"])
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

    names = [i.name for i in ort.InferenceSession(str(float_model), providers=["CPUExecutionProvider"]).get_inputs()]
    feeds = _feeds(x, names, count)

    class Rows(CalibrationDataReader):
        def __init__(self):
            self.items = iter(feeds)

        def get_next(self):
            return next(self.items, None)

    try:
        with tempfile.TemporaryDirectory(prefix="edgekit-qdq-") as tmp:
            float_aug, qdq_aug = Path(tmp) / "float.onnx", Path(tmp) / "qdq.onnx"
            modify_model_output_intermediate_tensors(str(float_model), str(float_aug))
            modify_model_output_intermediate_tensors(str(qdq_model), str(qdq_aug))
            float_acts = collect_activations(str(float_aug), Rows())
            qdq_acts = collect_activations(str(qdq_aug), Rows())
        errors = compute_activation_error(create_activation_matching(qdq_acts, float_acts))
    except Exception as exc:  # noqa: BLE001 - a debugging aid must not sink the verification
        return {"skipped": f"qdq_loss_debug failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
    table = [{"tensor": name, "op": "", "rmse_over_scale": None,
              "snr_db": _finite(err.get("xmodel_err")), "local_snr_db": _finite(err.get("qdq_err"))}
             for name, err in errors.items() if "xmodel_err" in err]
    if not table:
        return {"skipped": "no tensor of the int8 model matched the float model by name"}
    table.sort(key=lambda r: r["snr_db"] if r["snr_db"] is not None else float("inf"))
    return {"tensors": table, "worst": [r["tensor"] for r in table[:KEEP_FLOAT_COUNT]], "metric": "snr_db"}


def _finite(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


def _lowest_first(*values) -> float:
    return next((float(v) for v in values if v is not None), float("inf"))


class FixCandidates:
    """What `verify --fix` tries for a failing QDQ bundle: other calibration methods, then the worst
    nodes of the per-tensor table kept in float."""
    calibrations = CALIBRATIONS
    # A tensor's own quantize-dequantize error (local SNR), not the error accumulated up to it: the
    # accumulated one is worst at the last layers, whatever layer caused it.
    ranked_by = "local_snr_db (onnxruntime qdq_loss_debug), lowest first"

    def __init__(self, entry: dict, ctx):
        self.entry, self.ctx = entry, ctx
        # An ONNX step runs in-process in about a second: a small budget meant for TFLite's child
        # processes (the pipeline's --quick) does not cut the ONNX search short.
        self.max_steps = max(ctx.max_steps, ctx.default_steps)
        self.skipped = None
        self.float_model = float_twin(entry)
        if self.float_model is None:
            self.skipped = "needs the fp32 ONNX bundle beside the int8 one to re-quantize"
            self.ranked, self.max_float = [], 0
            return
        table = entry.get("layers") or {}
        # The worst tensors first; keeping one in float keeps the node that produces it in float
        # (export/onnx.py matches node outputs, so BatchNorm folded into a Conv is still found).
        rows = sorted(table.get("tensors") or [], key=lambda r: _lowest_first(r.get("local_snr_db"), r.get("snr_db")))
        self.ranked = list(dict.fromkeys(row["tensor"] for row in rows if row.get("tensor")))
        self.max_float = max(1, int(ctx.max_float_fraction * self._node_count()))

    def _node_count(self) -> int:
        from edgekit.runtime.formats import onnx as onnx_graph

        return len(onnx_graph.read_graph(self.float_model.read_bytes()).ops)

    def write(self, target: Path, calibration: str, keep: list[str]) -> None:
        calibration_file = Path(self.ctx.model_dir) / "calibration.npz"
        x = samples.read(calibration_file, what="calibration data").x

        def build(path: Path) -> dict:
            from edgekit.export.onnx_quantize import quantize_int8

            quantize_int8(self.float_model, path, x, keep_float_nodes=keep, calibration_method=calibration)
            return {}

        self.ctx.write_bundle(Path(self.entry["path"]), target, build,
                              f"+{calibration.lower()}" + ("+float_nodes" if keep else ""), keep,
                              {"calibration_method": calibration, "calibration_samples": samples.batch_size(x)})
