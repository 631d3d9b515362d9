"""Verification runs: Keras (or a golden file) vs every bundle on the same inputs -> one result dict.

`verify_with_keras` needs TensorFlow (reference model, per-layer debugger, --fix);
`verify_with_golden` imports numpy + runtime only. Both return the same JSON-ready structure that
verify/report.py renders and verify/command.py writes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgekit import __version__
from edgekit.core import Progress, UserError, log, now_iso
from edgekit.export import formats, recipes
from edgekit.export.tflite_debug import DEBUG_SAMPLES, DEFAULT_CONVERTER_FACTORY
from edgekit.verify.evaluate import EvalData, Task, evaluate_bundle, find_bundles, read_manifest, reference_summary
from edgekit.verify.fix import FIXED_SUFFIX, MAX_STEPS, FixContext, fix_failures
from edgekit.verify.gates import Gate, gate_for, tolerances
from edgekit.verify.golden import Golden, load_golden, save_golden

__all__ = ["FIXED_SUFFIX", "verify_with_golden", "verify_with_keras"]


def verify_with_keras(model_dir: str | Path, artifacts: str | Path, *, data: str | Path | None = None,
                      text_column: str | None = None, label_column: str | None = None,
                      gate_overrides: dict | None = None, max_samples: int | None = None,
                      fix: bool = False, save_golden_to: str | Path | None = None,
                      converter_factory: str = DEFAULT_CONVERTER_FACTORY,
                      load: Callable | None = None, allow_unsafe: bool = False,
                      layer_debug: bool = True, debug_samples: int = DEBUG_SAMPLES,
                      fix_steps: int = MAX_STEPS) -> dict:
    from edgekit.train.io import is_model_file
    from edgekit.verify.reference import load_labelled_data, load_reference, reference_dir, reference_outputs

    if is_model_file(model_dir):  # a user's .keras file: through a model view (verify/reference.py)
        with reference_dir(model_dir, find_bundles(artifacts), data, allow_unsafe) as view:
            result = verify_with_keras(
                view, artifacts, data=data, text_column=text_column, label_column=label_column,
                gate_overrides=gate_overrides, max_samples=max_samples, fix=fix, save_golden_to=save_golden_to,
                converter_factory=converter_factory, load=load, allow_unsafe=allow_unsafe,
                layer_debug=layer_debug, debug_samples=debug_samples, fix_steps=fix_steps)
        result["model_dir"] = str(model_dir)
        return result
    start = time.perf_counter()
    model_dir = Path(model_dir)
    bundles = find_bundles(artifacts)          # fail fast on a bad folder, before loading Keras
    model, metadata = load_reference(model_dir, allow_unsafe)
    task = Task(metadata.get("task", ""), list(metadata.get("labels") or []),
                dict(metadata.get("preprocessing") or {}))
    if data is not None:
        eval_data = load_labelled_data(data, model_dir, metadata, text_column, label_column, model=model)
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
        context = FixContext(model_dir, Path(artifacts), eval_data, reference, task,
                             result["reference"]["accuracy"],
                             lambda manifest: _gate_or_none(manifest, gate_overrides, None),
                             converter_factory, load, fix_steps)
        entries.extend(fix_failures(entries, context))
    else:
        _suggest_fixes(entries)
    if task.photos:  # labels on photos decoded by a second JPEG decoder (verify/decoders.py)
        from edgekit.verify.decoders import add_decoder_sensitivity

        add_decoder_sensitivity(result, entries, metadata, data, lambda x: reference_outputs(model, x),
                                task.preprocessing, load)
    return _finish(result, entries, start)


def verify_with_golden(golden_path: str | Path, artifacts: str | Path, *,
                       gate_overrides: dict | None = None, max_samples: int | None = None,
                       load: Callable | None = None) -> dict:
    """Bundles vs a golden file's stored Keras outputs: no Keras, no TensorFlow."""
    start = time.perf_counter()
    bundles = find_bundles(artifacts)
    golden = load_golden(golden_path).head(max_samples)
    meta = golden.meta
    task = Task(meta.get("task", ""), list(meta.get("labels") or []), dict(meta.get("preprocessing") or {}))
    eval_data = EvalData(golden.x, golden.y, golden.utterance_y, str(golden_path))
    reference = golden.reference
    log(f"verify: golden reference {golden_path} ({len(eval_data)} samples, task {task.name})")
    result = _base_result(task, eval_data, reference, source=f"golden:{golden_path}", model_dir=None,
                          artifacts=str(artifacts), overrides=gate_overrides, meta=meta)
    entries = _evaluate_all(bundles, eval_data, reference, task, result, gate_overrides, load, meta)
    for entry in entries:
        if _debugged(entry):
            entry["layers"] = {"skipped": "per-layer error needs the Keras model (not with --golden)"}
    if task.photos:
        result["decoder_sensitivity"] = {"skipped": "needs photo files; a golden file holds model inputs"}
    return _finish(result, entries, start)


# Steps ---------------------------------------------------------------------------------------------

def _base_result(task: Task, data: EvalData, reference: np.ndarray, *, source: str, model_dir,
                 artifacts: str, overrides, meta: dict | None = None) -> dict:
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
        "gates": tolerances(overrides, meta), "artifacts": [], "warnings": warnings,
        "passed": False, "written": [],
    }


def _evaluate_all(bundles: list[Path], data: EvalData, reference: np.ndarray, task: Task,
                  result: dict, overrides, load, meta: dict | None = None) -> list[dict]:
    entries = []
    progress = Progress(len(bundles))
    for bundle in bundles:
        manifest = read_manifest(bundle)
        gate = _gate_or_none(manifest, overrides, meta)
        entry = evaluate_bundle(bundle, data, reference, task, result["reference"]["accuracy"], gate, load)
        progress.step(f"{bundle.name}: {len(data)} samples ... {entry['seconds']:.1f} s "
                      f"{'PASS' if entry['passed'] else 'FAIL'}")
        entries.append(entry)
    return entries


def _gate_or_none(manifest: dict, overrides, meta) -> Gate | None:
    from edgekit.runtime.kinds import kind_gate  # the model kind's overrides (runtime/kinds.py)

    try:
        return kind_gate(gate_for(str(manifest.get("format")), str(manifest.get("variant")), overrides, meta,
                                  manifest.get("recipe")), manifest)
    except UserError:
        return None


def _debugged(entry: dict) -> bool:
    """Entries with a per-layer table: full-int8 bundles that ran (recipes with int8 activations)."""
    recipe = recipes.RECIPES.get(str(entry.get("variant")))
    return recipe is not None and recipe.activations == "int8" and "error" not in entry \
        and entry.get("format") in formats.NAMES


def _add_layer_tables(entries: list[dict], model_dir: Path, factory: str, samples: int, x) -> None:
    for entry in entries:
        if _debugged(entry):
            log(f"verify: per-layer int8 error of {entry['bundle']}")
            entry["layers"] = formats.host(entry["format"]).layer_errors(entry, entries, model_dir, x, samples,
                                                                         factory)


def _suggest_fixes(entries: list[dict]) -> None:
    for entry in entries:
        worst = (entry.get("layers") or {}).get("worst")
        if not entry["passed"] and _debugged(entry) and worst:
            entry["suggestion"] = ("rerun with --fix to search the fewest layers to keep in float "
                                   "(the worst first: " + ", ".join(worst) + ")")


def _finish(result: dict, entries: list[dict], start: float) -> dict:
    fixed_ok = {e["fixed_from"] for e in entries if e.get("fixed_from") and e["passed"]}
    result["artifacts"] = entries
    result["passed"] = bool(entries) and all(
        e["passed"] or e["bundle"] in fixed_ok for e in entries if not e.get("fixed_from"))
    result["seconds"] = time.perf_counter() - start
    return result
