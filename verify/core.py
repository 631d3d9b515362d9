"""Verification runs: Keras (or a golden file) vs every bundle on the same inputs -> one result dict.

`verify_with_keras` needs TensorFlow (reference model, per-layer debugger, --fix);
`verify_with_golden` imports numpy + runtime only. Both return the same JSON-ready structure that
verify/report.py renders and verify/command.py writes.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgekit import __version__
from edgekit.core import UserError, atomic_dir, first_line, log, now_iso, sha256_file
from edgekit.verify import layers
from edgekit.verify.evaluate import EvalData, Task, evaluate_bundle, find_bundles, read_manifest, reference_summary
from edgekit.verify.gates import Gate, gate_for, gates_from_tolerances, tolerances
from edgekit.verify.golden import Golden, load_golden, save_golden

FIXED_SUFFIX = "-keepfloat"


def verify_with_keras(model_dir: str | Path, artifacts: str | Path, *, data: str | Path | None = None,
                      text_column: str | None = None, label_column: str | None = None,
                      gate_overrides: dict | None = None, max_samples: int | None = None,
                      fix: bool = False, save_golden_to: str | Path | None = None,
                      converter_factory: str = layers.DEFAULT_CONVERTER_FACTORY,
                      load: Callable | None = None, allow_unsafe: bool = False,
                      layer_debug: bool = True, debug_samples: int = layers.DEBUG_SAMPLES) -> dict:
    from edgekit.verify.reference import load_labelled_data, load_reference, reference_outputs

    start = time.perf_counter()
    model_dir = Path(model_dir)
    bundles = find_bundles(artifacts)          # fail fast on a bad folder, before loading Keras
    model, metadata = load_reference(model_dir, allow_unsafe)
    task = Task(metadata.get("task", ""), list(metadata.get("labels") or []),
                dict(metadata.get("preprocessing") or {}))
    if data is not None:
        eval_data = load_labelled_data(data, model_dir, metadata, text_column, label_column)
    else:
        from edgekit.verify.evaluate import load_heldout
        eval_data = load_heldout(model_dir)
    eval_data = eval_data.head(max_samples)
    log(f"verify: Keras reference {model_dir.name} on {len(eval_data)} samples from {eval_data.source}")
    reference = reference_outputs(model, eval_data.x)
    result = _base_result(task, eval_data, reference, source="keras", model_dir=str(model_dir),
                          artifacts=str(artifacts), overrides=gate_overrides)
    if save_golden_to:
        golden_meta = {"task": task.name, "labels": task.labels, "preprocessing": task.preprocessing,
                       "model": metadata.get("name"), "data_source": eval_data.source,
                       "reference_accuracy": result["reference"]["accuracy"],
                       "tolerance": result["gates"], "created": now_iso(),
                       "edgekit_version": __version__}
        save_golden(save_golden_to, Golden(eval_data.x, reference, eval_data.y,
                                           eval_data.utterance_y, golden_meta))
        result["written"].append(str(save_golden_to))
        log(f"verify: wrote golden file {save_golden_to}")
    entries = _evaluate_all(bundles, eval_data, reference, task, result, gate_overrides, load)
    if layer_debug:
        _add_layer_tables(entries, model_dir, converter_factory, debug_samples, eval_data.x)
    if fix:
        fixed = _fix_int8_failures(entries, model_dir, Path(artifacts), eval_data, reference, task,
                                   result, gate_overrides, converter_factory, load)
        entries.extend(fixed)
    else:
        _suggest_fixes(entries)
    return _finish(result, entries, start)


def verify_with_golden(golden_path: str | Path, artifacts: str | Path, *,
                       gate_overrides: dict | None = None, max_samples: int | None = None,
                       load: Callable | None = None) -> dict:
    """Bundles vs a golden file's stored Keras outputs: no Keras, no TensorFlow."""
    start = time.perf_counter()
    bundles = find_bundles(artifacts)
    golden = load_golden(golden_path)
    meta = golden.meta
    task = Task(meta.get("task", ""), list(meta.get("labels") or []), dict(meta.get("preprocessing") or {}))
    eval_data = EvalData(golden.x, golden.y, golden.utterance_y, str(golden_path)).head(max_samples)
    reference = golden.reference[:len(eval_data)]
    base = gates_from_tolerances(meta.get("tolerance"))
    log(f"verify: golden reference {golden_path} ({len(eval_data)} samples, task {task.name})")
    result = _base_result(task, eval_data, reference, source=f"golden:{golden_path}", model_dir=None,
                          artifacts=str(artifacts), overrides=gate_overrides, base=base)
    entries = _evaluate_all(bundles, eval_data, reference, task, result, gate_overrides, load, base)
    for entry in entries:
        if entry.get("format") == "tflite" and entry.get("variant") == "int8":
            entry["layers"] = {"skipped": "per-layer error needs the Keras model (not with --golden)"}
    return _finish(result, entries, start)


# Steps ---------------------------------------------------------------------------------------------

def _base_result(task: Task, data: EvalData, reference: np.ndarray, *, source: str, model_dir,
                 artifacts: str, overrides, base: dict[str, Gate] | None = None) -> dict:
    summary = reference_summary(reference, data, task)
    warnings = []
    if not summary["confident"]:
        warnings.append(f"reference outputs are near-uniform (median top-1 margin "
                        f"{summary['confidence_margin']:.3f} < {summary['confidence_floor']}): "
                        "parity on such a model proves little; train it (longer) first")
    if summary["accuracy"] is None:
        warnings.append("no labels: accuracy gates cannot be checked, only parity")
    return {
        "edgekit_version": __version__, "created": now_iso(), "task": task.name, "labels": task.labels,
        "model_dir": model_dir, "artifacts_dir": artifacts, "data_source": data.source,
        "samples": len(data), "reference": {"source": source, **summary},
        "gates": tolerances(overrides, base), "artifacts": [], "warnings": warnings,
        "passed": False, "written": [],
    }


def _evaluate_all(bundles: list[Path], data: EvalData, reference: np.ndarray, task: Task,
                  result: dict, overrides, load, base: dict[str, Gate] | None = None) -> list[dict]:
    entries = []
    for i, bundle in enumerate(bundles, 1):
        manifest = read_manifest(bundle)
        gate = _gate_or_none(manifest, overrides, base)
        entry = evaluate_bundle(bundle, data, reference, task, result["reference"]["accuracy"], gate, load)
        log(f"[{i}/{len(bundles)}] {bundle.name}: {len(data)} samples ... {entry['seconds']:.1f} s "
            f"{'PASS' if entry['passed'] else 'FAIL'}")
        entries.append(entry)
    return entries


def _gate_or_none(manifest: dict, overrides, base) -> Gate | None:
    try:
        return gate_for(str(manifest.get("format")), str(manifest.get("variant")), overrides, base)
    except UserError:
        return None


def _add_layer_tables(entries: list[dict], model_dir: Path, factory: str, samples: int,
                      x: np.ndarray) -> None:
    float_onnx = next((e for e in entries if e.get("format") == "onnx" and e.get("variant") == "fp32"
                       and "error" not in e), None)
    for entry in entries:
        if entry.get("variant") != "int8" or "error" in entry:
            continue
        if entry.get("format") == "tflite":
            log(f"verify: per-layer int8 error of {entry['bundle']} (child process)")
            entry["layers"] = layers.tflite_layer_errors(model_dir, "int8", factory, samples)
        elif entry.get("format") == "onnx":
            entry["layers"] = _onnx_layers(entry, float_onnx, x, samples)


def _onnx_layers(entry: dict, float_entry: dict | None, x: np.ndarray, samples: int) -> dict:
    if float_entry is None:
        return {"skipped": "needs the fp32 ONNX bundle beside the int8 one to compare tensors"}
    model_file = lambda e: Path(e["path"]) / str(read_manifest(Path(e["path"])).get("model_file"))  # noqa: E731
    log(f"verify: per-layer int8 error of {entry['bundle']} (onnxruntime qdq_loss_debug)")
    try:
        return layers.onnx_layer_errors(model_file(float_entry), model_file(entry), x, samples)
    except Exception as exc:  # noqa: BLE001 - a debugging aid must not sink the verification
        message = first_line(exc)
        return {"skipped": f"qdq_loss_debug failed: {type(exc).__name__}: {message}"}


def _suggest_fixes(entries: list[dict]) -> None:
    for entry in entries:
        worst = (entry.get("layers") or {}).get("worst")
        if not entry["passed"] and entry.get("format") == "tflite" and entry.get("variant") == "int8" and worst:
            entry["suggestion"] = ("rerun with --fix to re-export keeping in float: " + ", ".join(worst))


def _fix_int8_failures(entries, model_dir: Path, artifacts: Path, data: EvalData, reference, task: Task,
                       result: dict, overrides, factory: str, load) -> list[dict]:
    """Re-export each failing TFLite int8 bundle with its worst tensors in float; verify the result."""
    fixed_entries = []
    for entry in [e for e in entries if not e["passed"] and e.get("format") == "tflite"
                  and e.get("variant") == "int8" and "error" not in e]:
        worst = (entry.get("layers") or {}).get("worst")
        if not worst:
            entry["fix"] = {"skipped": (entry.get("layers") or {}).get("skipped", "no per-layer table")}
            continue
        original = Path(entry["path"])
        target = (original.parent if artifacts.resolve() != original.resolve() else artifacts.parent) \
            / f"{original.name}{FIXED_SUFFIX}"
        log(f"verify: --fix: re-exporting {original.name} with {len(worst)} tensors in float -> {target.name}")
        outcome = _write_fixed_bundle(original, target, model_dir, worst, factory)
        if "skipped" in outcome:
            entry["fix"] = outcome
            continue
        gate = _gate_or_none(read_manifest(target), overrides, None)
        fixed = evaluate_bundle(target, data, reference, task, result["reference"]["accuracy"], gate, load)
        fixed["fixed_from"] = original.name
        fixed["keep_float"] = worst
        fixed["cost"] = _cost(entry, fixed)
        log(f"  {target.name}: {'PASS' if fixed['passed'] else 'FAIL'} "
            f"(size {fixed['cost']['size_bytes']:+d} B, latency {fixed['cost']['latency_ms']:+.3f} ms)")
        entry["fix"] = {"bundle": target.name, "passed": fixed["passed"], "keep_float": worst}
        fixed_entries.append(fixed)
    return fixed_entries


def _write_fixed_bundle(original: Path, target: Path, model_dir: Path, keep_float: list[str],
                        factory: str) -> dict:
    manifest = read_manifest(original)
    model_name = str(manifest.get("model_file", "model.tflite"))
    try:
        return _write_fixed_bundle_in(original, target, manifest, model_name, model_dir, keep_float, factory)
    except _Skip as skip:
        return {"skipped": str(skip)}


def _write_fixed_bundle_in(original: Path, target: Path, manifest: dict, model_name: str,
                           model_dir: Path, keep_float: list[str], factory: str) -> dict:
    with atomic_dir(target) as tmp:
        shutil.copytree(original, tmp, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(model_name, "manifest.json"))
        outcome = layers.requantize_keeping_float(model_dir, keep_float, tmp / model_name, "int8", factory)
        if "skipped" in outcome:
            raise _Skip(outcome["skipped"])
        manifest.update(
            sha256=sha256_file(tmp / model_name), size_bytes=(tmp / model_name).stat().st_size,
            ops=outcome.get("ops", manifest.get("ops")),
            recipe=f"{manifest.get('recipe') or 'static_wi8_ai8'}+float_layers",
            created=now_iso())
        manifest.setdefault("export", {})["keep_float_layers"] = keep_float
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return {"bundle": target.name}


class _Skip(Exception):
    pass


def _cost(before: dict, after: dict) -> dict:
    size = (after.get("size_bytes") or 0) - (before.get("size_bytes") or 0)
    latency = (after.get("latency_ms") or 0.0) - (before.get("latency_ms") or 0.0)
    return {"size_bytes": int(size), "latency_ms": float(latency),
            "size_ratio": (after.get("size_bytes") or 0) / max(before.get("size_bytes") or 1, 1)}


def _finish(result: dict, entries: list[dict], start: float) -> dict:
    fixed_ok = {e["fixed_from"] for e in entries if e.get("fixed_from") and e["passed"]}
    result["artifacts"] = entries
    result["passed"] = bool(entries) and all(
        e["passed"] or e["bundle"] in fixed_ok for e in entries if not e.get("fixed_from"))
    result["seconds"] = time.perf_counter() - start
    return result
