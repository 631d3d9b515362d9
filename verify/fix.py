"""`verify --fix` (and the pipeline, by default): make a failing full-int8 bundle pass its gate at the
smallest cost, and report every step of the search.

The search is the same for every format; what it tries comes from the format's host half
(export/formats.py `fix_candidates`: export/tflite_debug.py, export/onnx_debug.py): first other
calibrations (cost no size), then the first 1, 2, 4, ... tensors of the format's per-layer ranking kept
in float, until the bundle passes or the budget is spent, then bisection back to the smallest passing
prefix. TFLite ranks by RMSE/scale (QuantizationDebugger) and re-quantizes in a child process; ONNX
tries percentile and entropy calibration, ranks by local SNR (qdq_loss_debug) and re-quantizes through
export/onnx.py's `quantize_int8` (the one ONNX quantizer).

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
from edgekit.export import formats, recipes
from edgekit.export.tflite_debug import DEFAULT_CONVERTER_FACTORY
from edgekit.verify.evaluate import EvalData, Task, evaluate_bundle, read_manifest

FIXED_SUFFIX = "-keepfloat"

# Each TFLite step re-quantizes in a child process (TensorFlow start + calibration, ~10-30 s); each
# ONNX step is in-process (~1 s on edgekit's models). Six conversions reach 32 float tensors by
# doubling, more than the worst decile of any of edgekit's models, and leave two for bisecting back.
MAX_STEPS = 6
# Beyond half of the tensors in float, the "int8" bundle is mostly a float one: ship fp16 instead.
MAX_FLOAT_FRACTION = 0.5


@dataclass
class FixContext:
    model_dir: Path
    artifacts: Path
    data: EvalData
    reference: np.ndarray
    task: Task
    reference_accuracy: float | None
    gate_of: Callable[[dict], object]    # manifest -> Gate | None
    factory: str = DEFAULT_CONVERTER_FACTORY
    load: Callable | None = None
    max_steps: int = MAX_STEPS
    default_steps: int = MAX_STEPS
    max_float_fraction: float = MAX_FLOAT_FRACTION

    def write_bundle(self, original: Path, target: Path, build: Callable[[Path], dict], recipe_suffix: str,
                     float_tensors: list[str], export_updates: dict) -> None:
        """What a format's fix candidates call to write one candidate bundle (see `_write_bundle`)."""
        _write_bundle(original, target, build, recipe_suffix, float_tensors, export_updates)


def fix_failures(entries: list[dict], ctx: FixContext) -> list[dict]:
    """Search a passing keep-float (or recalibrated) bundle for every failing int8 entry; returns the
    new entries (each with `fixed_from`, `keep_float`, `cost`, `search`)."""
    fixed_entries = []
    for entry in entries:
        recipe = recipes.RECIPES.get(str(entry.get("variant")))
        if entry["passed"] or recipe is None or recipe.activations != "int8" or "error" in entry \
                or entry.get("format") not in formats.NAMES:
            continue
        fixed = _search(entry, ctx, formats.host(entry["format"]).fix_candidates(entry, ctx))
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


def _write_bundle(original: Path, target: Path, build: Callable[[Path], dict],
                  recipe_suffix: str, float_tensors: list[str], export_updates: dict) -> None:
    """Copy `original` to `target` with a new model file made by `build(path) -> {"ops": ...}`. The
    manifest's recipe says what changed: its name gets `recipe_suffix`, and `float_tensors` lists the
    tensors (TFLite) or nodes (ONNX) the search left in float."""
    manifest = read_manifest(original)
    model_name = str(manifest["model_file"])
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
