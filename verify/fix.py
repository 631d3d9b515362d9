"""`verify --fix` (and the pipeline, by default): make a failing integer variant pass its gate at the
smallest cost, and report every step of the search.

TFLite int8: keep the layers that quantize worst in float. The per-layer table (verify/layers.py) ranks
tensors by RMSE/scale; the search keeps the first 1, 2, 4, ... of that ranking in float
(`QuantizationDebugOptions(denylisted_nodes=...)`, in a child process) until the bundle passes or the
budget is spent, then bisects back to the smallest passing prefix.

ONNX int8: first a better calibration (every calibration sample; percentile and entropy histograms
instead of min/max, which one outlier can stretch), then the same growing float set, by the per-tensor
SNR of onnxruntime's qdq_loss_debug, through export/onnx.py's `quantize_int8` (the one ONNX quantizer).

Each candidate is written to `BUNDLE-keepfloat/` beside the original and verified like any bundle;
the last one written is the result. Its cost in size (and host latency) is reported; `cost` has an
`estimated_latency_ms` field left for the per-device estimate (devices/estimate.py).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.core import atomic_dir, first_line, log, now_iso, sha256_file
from edgekit.verify import layers
from edgekit.verify.evaluate import EvalData, Task, evaluate_bundle, read_manifest

FIXED_SUFFIX = "-keepfloat"

# Each TFLite step re-quantizes in a child process (TensorFlow start + calibration, ~10-30 s); each
# ONNX step is in-process (~1 s on edgekit's models). Six conversions reach 32 float tensors by
# doubling, more than the worst decile of any of edgekit's models, and leave two for bisecting back.
MAX_STEPS = 6
# Beyond half of the tensors in float, the "int8" bundle is mostly a float one: ship fp16 instead.
MAX_FLOAT_FRACTION = 0.5
# onnxruntime calibration methods tried in turn (before any float node): percentile keeps 99.999% of
# each activation's values (clips rare outliers), entropy picks the range that minimises KL divergence.
ONNX_CALIBRATIONS = ("MinMax", "Percentile", "Entropy")


@dataclass
class FixContext:
    model_dir: Path
    artifacts: Path
    data: EvalData
    reference: np.ndarray
    task: Task
    reference_accuracy: float | None
    gate_of: Callable[[dict], object]    # manifest -> Gate | None
    factory: str = layers.DEFAULT_CONVERTER_FACTORY
    load: Callable | None = None
    max_steps: int = MAX_STEPS


def fix_failures(entries: list[dict], ctx: FixContext) -> list[dict]:
    """Search a passing keep-float (or recalibrated) bundle for every failing int8 entry; returns the
    new entries (each with `fixed_from`, `keep_float`, `cost`, `search`)."""
    fixed_entries = []
    for entry in entries:
        if entry["passed"] or entry.get("variant") != "int8" or "error" in entry:
            continue
        if entry.get("format") == "tflite":
            fixed = _search(entry, ctx, _TfliteCandidates(entry, ctx))
        elif entry.get("format") == "onnx":
            fixed = _search(entry, ctx, _OnnxCandidates(entry, ctx))
        else:
            continue
        if fixed is not None:
            fixed_entries.append(fixed)
    return fixed_entries


def _target(entry: dict, ctx: FixContext) -> Path:
    original = Path(entry["path"])
    folder = original.parent if ctx.artifacts.resolve() != original.resolve() else ctx.artifacts.parent
    return folder / f"{original.name}{FIXED_SUFFIX}"


def _search(entry: dict, ctx: FixContext, candidates) -> dict | None:
    """Try candidates (calibrations, then growing float sets) until one passes or MAX_STEPS is
    spent; bisect the float set back down when a big step passed. Every step is reported."""
    if candidates.skipped:
        entry["fix"] = {"skipped": candidates.skipped}
        return None
    target = _target(entry, ctx)
    steps: list[dict] = []
    built: list[dict] = []          # results of the candidates that could be built, in order

    def attempt(calibration: str, count: int) -> bool:
        keep = candidates.ranked[:count]
        log(f"verify: fix {entry['bundle']} step {len(steps) + 1}: calibration {calibration}, "
            f"{count} tensor(s) in float")
        try:
            candidates.write(target, calibration, keep)
        except Exception as exc:  # noqa: BLE001 - a failed candidate is one reported step
            steps.append({"calibration": calibration, "float_tensors": count, "keep_float": keep,
                          "passed": False, "reasons": [f"cannot build: {first_line(exc)}"]})
            return False
        result = evaluate_bundle(target, ctx.data, ctx.reference, ctx.task, ctx.reference_accuracy,
                                 ctx.gate_of(read_manifest(target)), ctx.load)
        steps.append({"calibration": calibration, "float_tensors": count, "keep_float": keep,
                      **{k: result.get(k) for k in _STEP_KEYS}})
        built.append({**result, "calibration": calibration, "keep_float": keep})
        log(f"  {'PASS' if result['passed'] else 'FAIL'}: agreement {100 * (result.get('agreement') or 0):.1f}%"
            f", size {result.get('size_bytes')} B" + (f"; {'; '.join(result['reasons'])}" if result["reasons"] else ""))
        return bool(result["passed"])

    passed_at = None
    for method in candidates.calibrations:           # 1. calibration only: costs no size
        if len(steps) < candidates.max_steps and attempt(method, 0):
            passed_at = 0
            break
    calibration = max(built, key=lambda r: (r.get("agreement") or 0, r.get("psnr_db") or 0))["calibration"] if built \
        else candidates.calibrations[0]
    count, failed_at = 1, 0
    while passed_at is None and len(steps) < candidates.max_steps and failed_at < candidates.max_float:
        if attempt(calibration, count):              # 2. grow the float set by doubling
            passed_at = count
        else:
            failed_at, count = count, min(count * 2, candidates.max_float)
    while passed_at and passed_at - failed_at > 1 and len(steps) < candidates.max_steps:
        middle = (passed_at + failed_at) // 2        # 3. bisect back to the smallest passing prefix
        if attempt(calibration, middle):
            passed_at = middle
        else:
            failed_at = middle
    if passed_at is not None and built[-1]["keep_float"] != candidates.ranked[:passed_at]:
        attempt(calibration, passed_at)              # leave the smallest passing bundle on disk
    return _final_entry(entry, target, steps, built, candidates)


_STEP_KEYS = ("passed", "reasons", "agreement", "accuracy_delta", "psnr_db", "size_bytes", "latency_ms")


def _final_entry(entry: dict, target: Path, steps: list[dict], built: list[dict], candidates) -> dict | None:
    """The entry of the bundle left on disk (the last one built), with the search that led to it."""
    search = {"steps": steps, "budget_steps": candidates.max_steps, "max_float_tensors": candidates.max_float,
              "ranked_by": candidates.ranked_by,
              # when none passed: the step that came closest (highest agreement), to rerun by hand
              "best_step": max(range(len(steps)), key=lambda i: steps[i].get("agreement") or 0) if steps else None}
    if not built:
        entry["fix"] = {"skipped": "no candidate could be built", "search": search}
        return None
    last = built[-1]
    keep, calibration = last.pop("keep_float"), last.pop("calibration")
    fixed = {**last, "fixed_from": entry["bundle"], "keep_float": keep, "calibration": calibration,
             "search": search}
    fixed["cost"] = _cost(entry, fixed)
    entry["fix"] = {"bundle": target.name, "passed": fixed["passed"], "keep_float": keep,
                    "calibration": calibration, "steps": len(steps)}
    log(f"verify: fix {entry['bundle']} -> {target.name}: {'PASS' if fixed['passed'] else 'FAIL'} after "
        f"{len(steps)} step(s), {len(keep)} tensor(s) in float, calibration {calibration}, "
        f"size {fixed['cost']['size_bytes']:+d} B")
    return fixed


def _cost(before: dict, after: dict) -> dict:
    size = (after.get("size_bytes") or 0) - (before.get("size_bytes") or 0)
    latency = (after.get("latency_ms") or 0.0) - (before.get("latency_ms") or 0.0)
    return {"size_bytes": int(size), "latency_ms": float(latency),
            "size_ratio": (after.get("size_bytes") or 0) / max(before.get("size_bytes") or 1, 1),
            "estimated_latency_ms": None}     # per-device estimate: filled by devices/estimate.py


def _write_bundle(original: Path, target: Path, model_name: str, build: Callable[[Path], dict],
                  recipe_suffix: str, float_tensors: list[str], export_updates: dict) -> None:
    """Copy `original` to `target` with a new model file made by `build(path) -> {"ops": ...}`. The
    manifest's recipe says what changed: its name gets `recipe_suffix`, and `float_tensors` lists the
    tensors (TFLite) or nodes (ONNX) the search left in float."""
    manifest = read_manifest(original)
    with atomic_dir(target) as tmp:
        shutil.copytree(original, tmp, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(model_name, "manifest.json"))
        outcome = build(tmp / model_name)
        manifest.update(sha256=sha256_file(tmp / model_name), size_bytes=(tmp / model_name).stat().st_size,
                        recipe=f"{manifest.get('recipe') or 'static_wi8_ai8'}{recipe_suffix}",
                        float_tensors=list(float_tensors), created=now_iso())
        if outcome.get("ops"):
            manifest["ops"] = outcome["ops"]
        manifest.setdefault("export", {}).update(export_updates)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


class _TfliteCandidates:
    calibrations = ("converter",)       # the converter's own calibration, on all calibration samples
    ranked_by = "rmse_over_scale (TFLite QuantizationDebugger)"

    def __init__(self, entry: dict, ctx: FixContext):
        self.entry, self.ctx = entry, ctx
        self.max_steps = ctx.max_steps
        table = entry.get("layers") or {}
        self.ranked = [row["tensor"] for row in table.get("tensors") or []]
        self.skipped = None if self.ranked else table.get("skipped", "no per-layer table")
        # The debugger needs one quantized tensor left; MAX_FLOAT_FRACTION bounds the rest.
        self.max_float = max(1, min(len(self.ranked) - 1, int(MAX_FLOAT_FRACTION * len(self.ranked))))

    def write(self, target: Path, calibration: str, keep: list[str]) -> None:
        original = Path(self.entry["path"])
        model_name = str(read_manifest(original).get("model_file", "model.tflite"))

        def build(path: Path) -> dict:
            outcome = layers.requantize_keeping_float(self.ctx.model_dir, keep, path, "int8", self.ctx.factory)
            if "skipped" in outcome:
                raise RuntimeError(outcome["skipped"])
            return outcome

        _write_bundle(original, target, model_name, build, "+float_layers" if keep else "+recalibrated",
                      keep, {})


class _OnnxCandidates:
    calibrations = ONNX_CALIBRATIONS
    # A tensor's own quantize-dequantize error (local SNR), not the error accumulated up to it: the
    # accumulated one is worst at the last layers, whatever layer caused it.
    ranked_by = "local_snr_db (onnxruntime qdq_loss_debug), lowest first"

    def __init__(self, entry: dict, ctx: FixContext):
        self.entry, self.ctx = entry, ctx
        # An ONNX step runs in-process in about a second: a small budget meant for TFLite's child
        # processes (the pipeline's --quick) does not cut the ONNX search short.
        self.max_steps = max(ctx.max_steps, MAX_STEPS)
        self.skipped = None
        self.float_model = self._float_model()
        if self.float_model is None:
            self.skipped = "needs the fp32 ONNX bundle beside the int8 one to re-quantize"
            self.ranked, self.max_float = [], 0
            return
        table = entry.get("layers") or {}
        # The worst tensors first; keeping one in float keeps the node that produces it in float
        # (export/onnx.py matches node outputs, so BatchNorm folded into a Conv is still found).
        rows = sorted(table.get("tensors") or [], key=lambda r: _lowest_first(r.get("local_snr_db"), r.get("snr_db")))
        self.ranked = list(dict.fromkeys(row["tensor"] for row in rows if row.get("tensor")))
        self.max_float = max(1, int(MAX_FLOAT_FRACTION * self._node_count()))

    def _float_model(self) -> Path | None:
        for sibling in Path(self.entry["path"]).parent.iterdir():
            manifest = read_manifest(sibling) if sibling.is_dir() else {}
            if manifest.get("format") == "onnx" and manifest.get("variant") == "fp32" \
                    and manifest.get("name") == read_manifest(Path(self.entry["path"])).get("name"):
                return sibling / str(manifest.get("model_file", "model.onnx"))
        return None

    def _node_count(self) -> int:
        import onnx

        return len(onnx.load(str(self.float_model)).graph.node)

    def write(self, target: Path, calibration: str, keep: list[str]) -> None:
        original = Path(self.entry["path"])
        model_name = str(read_manifest(original).get("model_file", "model.onnx"))
        x = _calibration(self.ctx.model_dir)

        def build(path: Path) -> dict:
            from edgekit.export.onnx import quantize_int8

            quantize_int8(self.float_model, path, x, keep_float_nodes=keep, calibration_method=calibration)
            return {}

        _write_bundle(original, target, model_name, build, f"+{calibration.lower()}"
                      + ("+float_nodes" if keep else ""), keep,
                      {"calibration_method": calibration, "calibration_samples": len(x)})


def _lowest_first(*values) -> float:
    return next((float(v) for v in values if v is not None), float("inf"))


def _calibration(model_dir: Path) -> np.ndarray:
    with np.load(Path(model_dir) / "calibration.npz", allow_pickle=False) as data:
        return data["x"]
