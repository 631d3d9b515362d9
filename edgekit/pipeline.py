"""`edgekit pipeline`: train -> export every variant -> verify, for each model kind, into one report.

OUT/
  models/TASK/           model directories (edgekit train)
  artifacts/TASK/        bundles (edgekit export)
  report.html            one self-contained report (plots inline)
  report.md, report.json the same as Markdown and JSON
  results.md             the accuracy / size / latency table per variant (for the README)

Data: embedded defaults, or `--data-dir` laid out like shared/data (sms_spam/sms_spam.tsv,
cifar10_small/, fsdd/). The reports are always written; the exit code is 1 when any bundle failed its
gate (and, for int8, no keep-float or recalibrated bundle found by verify's fix search passes either)
or a model could not be trained or exported, so a demo still shows what went wrong.
"""

from __future__ import annotations

import time
from pathlib import Path

from edgekit.core import UserError, atomic_write_text, log

DATA_LAYOUT = {"text": "sms_spam/sms_spam.tsv", "image": "cifar10_small", "speech": "fsdd"}

# --quick must finish within 3 minutes on 2 cores: fewer calibration samples (100 is export's floor for
# usable int8 scales), fewer evaluated samples, a smaller per-layer debug set, and the three variants
# a device needs (fp32 reference, fp16 half size, int8 full integer) in both formats: each TFLite
# conversion costs 8-20 s, and dynamic / int16x8 prove nothing that int8 does not (the full run keeps them).
# The fix search (verify/fix.py) re-quantizes a failing int8 bundle once per step (a TFLite step is a
# child process, 10-30 s): quick allows 3 steps, the full run verify's default.
# The per-layer int8 error tables (a TFLite QuantizationDebugger child process, 15-25 s per model) are
# what the fix search ranks layers by; quick computes them only when an int8 bundle failed its gate
# (then verifies again with them), the full run always (they are in the report).
QUICK = {"calibration_samples": 100, "max_samples": 200, "debug_samples": 16,
         "variants": ("fp32", "fp16", "int8"), "fix_steps": 3, "layers_when": "failed"}
DEFAULT = {"calibration_samples": 200, "max_samples": None, "debug_samples": 64, "variants": None,
           "fix_steps": None, "layers_when": "always"}
# The report names the bundle to ship to each of these devices (verify/recommend.py: latency ESTIMATES
# from the graph, no emulation, well under a second per bundle) unless --device names others.
DEFAULT_DEVICES = ("rpi4",)


def run(args) -> int:
    out = Path(args.out)
    settings = QUICK if args.quick else DEFAULT
    tasks = list(args.tasks)
    devices = list(dict.fromkeys(getattr(args, "devices", None) or DEFAULT_DEVICES))
    from edgekit.verify.recommend import check_devices

    check_devices(devices)  # an unknown device name fails now, before any training
    sources = {task: _data_source(args.data_dir, task) for task in tasks}
    start = time.perf_counter()
    results, failures = [], []
    for i, task in enumerate(tasks, 1):
        log(f"pipeline [{i}/{len(tasks)}] {task}: train -> export -> verify "
            f"({sources[task] or 'embedded data'})")
        try:
            results.append(run_task(task, out, sources[task], args.seed, args.quick, settings,
                                    devices))
        except UserError as exc:
            failures.append(f"{task}: {exc}")
            log(f"pipeline: {task} failed: {exc}")
    if results:
        _write_reports(results, out)
        if getattr(args, "readme", None):
            update_readme(Path(args.readme), results, args)
    for line in failures:
        log(f"FAIL {line}")
    failed_gates = [f"{r['task']}/{a['bundle']}" for r in results for a in r["artifacts"]
                    if not a["passed"] and not a.get("fixed_from")]
    verdict = "PASS" if results and not failures and all(r["passed"] for r in results) else "FAIL"
    log(f"pipeline {verdict} in {time.perf_counter() - start:.0f} s: wrote {out}/report.html, report.md, "
        f"report.json, results.md" + (f"; failed gates: {', '.join(failed_gates)}" if failed_gates else ""))
    return 0 if verdict == "PASS" else 1


def _data_source(data_dir: str | None, task: str) -> Path | None:
    if not data_dir:
        return None
    path = Path(data_dir) / DATA_LAYOUT[task]
    if not path.exists():
        raise UserError(f"--data-dir {data_dir}: {path} is missing (expected "
                        + ", ".join(DATA_LAYOUT.values()) + ")")
    return path


def run_task(task: str, out: Path, data: Path | None, seed: int, quick: bool, settings: dict,
             devices: list[str] | tuple[str, ...] = ()) -> dict:
    from edgekit.export import export_model
    from edgekit.train import train_model
    from edgekit.verify.core import verify_with_keras
    from edgekit.verify.recommend import recommend

    model_dir = train_model(task, out / "models" / task, data=data, seed=seed, quick=quick)
    artifacts = out / "artifacts" / task
    variants = {"variants": settings["variants"]} if settings.get("variants") else {}
    exports = export_model(model_dir, artifacts, calibration_samples=settings["calibration_samples"], **variants)
    # The fix search runs by default: a failing int8 bundle gets its cheapest passing replacement.
    fix_steps = {"fix_steps": settings["fix_steps"]} if settings.get("fix_steps") else {}
    verify = dict(max_samples=settings["max_samples"], debug_samples=settings["debug_samples"], **fix_steps)
    result = None
    if settings.get("layers_when") == "failed":
        result = verify_with_keras(model_dir, artifacts, layer_debug=False, **verify)
        if _int8_failed(result):
            log(f"pipeline: {task}: an int8 bundle failed its gate: verifying again with per-layer "
                "errors, and searching for a fix")
            result = None
    if result is None:
        result = verify_with_keras(model_dir, artifacts, fix=True, **verify)
    result["exports"] = [{"bundle": e.bundle and Path(e.bundle).name, "format": e.format,
                          "variant": e.variant, "status": e.status, "reason": e.reason}
                         for e in exports]
    skipped = [f"{e.format}-{e.variant}: {e.reason}" for e in exports if e.status != "ok"]
    result["warnings"] += [f"not exported: {s}" for s in skipped]
    if devices:
        recommend(result, list(devices))
    return result


def _int8_failed(result: dict) -> bool:
    return any(e.get("variant") == "int8" and not e.get("passed") for e in result["artifacts"])


def results_table(results: list[dict]) -> str:
    """The README table: accuracy, size and latency of every variant next to Keras."""
    lines = ["| model | variant | format | size | accuracy | Δ vs Keras (pp) | agreement | latency (ms) | gate |",
             "|---|---|---|---:|---:|---:|---:|---:|---|"]
    from edgekit.verify.report import fmt_num, fmt_pct, fmt_size, status_text

    for result in results:
        lines.append(f"| {result['task']} | Keras | - | - | {fmt_pct(result['reference'].get('accuracy'))} "
                     "| - | - | - | - |")
        for e in result["artifacts"]:
            lines.append(f"| {result['task']} | {e.get('variant') or '-'} | {e.get('format') or '-'} "
                         f"| {fmt_size(e.get('size_bytes'))} | {fmt_pct(e.get('accuracy'))} "
                         f"| {fmt_num(e.get('accuracy_delta'), '+.2f')} | {fmt_pct(e.get('agreement'))} "
                         f"| {fmt_num(e.get('latency_ms'), '.3f')} | {status_text(e)} |")
    samples = ", ".join(f"{r['task']} {r['samples']}" for r in results)
    return ("\n".join(lines) + f"\n\nHeld-out samples: {samples}. Latency: median per sample, one "
            "call per sample, on the machine that ran the pipeline.\n")


def _write_reports(results: list[dict], out: Path) -> None:
    from edgekit.verify.command import write_outputs

    write_outputs(results, json_path=out / "report.json", html_path=out / "report.html",
                  markdown_path=out / "report.md", title="edgekit pipeline")
    atomic_write_text(out / "results.md", results_table(results))


README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"


def update_readme(readme: Path, results: list[dict], args) -> None:
    """Replace the README's results block with this run's table, naming how it was made."""
    text = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    if README_START not in text or README_END not in text:
        raise UserError(f"{readme} has no {README_START} ... {README_END} block to replace")
    from edgekit.core import library_versions, now_iso

    versions = library_versions()
    how = (f"Regenerated by `edgekit pipeline{' --quick' if args.quick else ''}"
           f"{' --data-dir ' + str(args.data_dir) if args.data_dir else ''}` on {now_iso()[:10]} "
           f"(Python {versions.get('python')}, TensorFlow {versions.get('tensorflow')}, "
           f"ai-edge-litert {versions.get('ai-edge-litert')}, onnxruntime {versions.get('onnxruntime')}).")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    atomic_write_text(readme, f"{head}{README_START}\n{how}\n\n{results_table(results)}{README_END}{tail}")
    log(f"pipeline: updated the results table in {readme}")
