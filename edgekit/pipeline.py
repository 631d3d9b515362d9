"""`edgekit pipeline`: train -> export every variant -> verify, for each model kind, into one report.

OUT/
  models/TASK/           model directories (edgekit train)
  artifacts/TASK/        bundles (edgekit export)
  report.html            one self-contained report (plots inline)
  report.md, report.json the same as Markdown and JSON
  results.md             the accuracy / size / latency table per variant (for the README)
  logs/TASK.log          each task's full output, when tasks run in parallel (--jobs > 1)

Data: embedded defaults, or `--data-dir` laid out like shared/data (sms_spam/sms_spam.tsv,
cifar10_small/, fsdd/). The reports are always written; the exit code is 1 when any bundle failed its
gate (and, for int8, no keep-float or recalibrated bundle found by verify's fix search passes either)
or a model could not be trained or exported, so a demo still shows what went wrong.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from edgekit.core import UserError, atomic_write_text, log
from edgekit.train import KINDS as TRAIN_KINDS

DATA_LAYOUT = {name: kind.data_layout for name, kind in TRAIN_KINDS.items()}
# Parallel runs start the longest task first (quick run: image 2-3 minutes, speech and text under one).
TASK_COST_ORDER = tuple(sorted(TRAIN_KINDS, key=lambda name: TRAIN_KINDS[name].cost_rank))
LOWER_PRIORITY = 19  # nice value of the tasks that run beside the longest one: idle CPU only

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
    jobs = min(len(tasks), getattr(args, "jobs", None) or os.cpu_count() or 1)
    for i, task in enumerate(tasks, 1):
        log(f"pipeline [{i}/{len(tasks)}] {task}: train -> export -> verify "
            f"({sources[task] or 'embedded data'})" + (f" in parallel ({jobs} at a time)" if jobs > 1 else ""))
    task_args = {task: (task, out, sources[task], args.seed, args.quick, settings, devices) for task in tasks}
    outcomes = _run_parallel(task_args, out, jobs) if jobs > 1 else _run_in_order(task_args)
    results = [outcomes[task] for task in tasks if isinstance(outcomes[task], dict)]
    failures = [f"{task}: {outcomes[task]}" for task in tasks if isinstance(outcomes[task], UserError)]
    if results:
        _write_reports(results, out)
        if getattr(args, "readme", None):
            update_readme(Path(args.readme), results, args)
    for line in failures:
        log(f"FAIL {line}")
    verdict = "PASS" if results and not failures and all(r["passed"] for r in results) else "FAIL"
    wrote = f"wrote {out}/report.html, report.md, report.json, results.md" if results else "no report (no task ended)"
    log(f"pipeline {verdict} in {time.perf_counter() - start:.0f} s: {wrote}{gate_summary(results)}")
    return 0 if verdict == "PASS" else 1


def gate_summary(results: list[dict]) -> str:
    """"; failed gates: ..." and "; fixed: A -> B": an int8 bundle that the fix search replaced with a
    passing one is named as fixed, not failed."""
    fixed = {a["fixed_from"]: a["bundle"] for r in results for a in r["artifacts"]
             if a.get("fixed_from") and a["passed"]}
    failed = [f"{r['task']}/{a['bundle']}" for r in results for a in r["artifacts"]
              if not a["passed"] and not a.get("fixed_from") and a["bundle"] not in fixed]
    return ((f"; failed gates: {', '.join(failed)}" if failed else "")
            + (f"; fixed: {', '.join(f'{old} -> {new}' for old, new in fixed.items())}" if fixed else ""))


def _run_in_order(task_args: dict[str, tuple]) -> dict[str, dict | UserError]:
    outcomes: dict[str, dict | UserError] = {}
    for task, task_arguments in task_args.items():
        try:
            outcomes[task] = run_task(*task_arguments)
        except UserError as exc:
            outcomes[task] = exc
            log(f"pipeline: {task} failed: {exc}")
    return outcomes


def _run_parallel(task_args: dict[str, tuple], out: Path, jobs: int) -> dict[str, dict | UserError]:
    """Each task in its own process, `jobs` at a time, longest first: training and conversion use about
    one core each, so two tasks on two cores take about the time of the longest. The others run at a
    lower CPU priority: they have time to spare, and the longest one sets the pipeline's time (quick run
    on 2 cores: the image model trained in 131 s beside them at equal priority, 98 s with them at idle
    priority; the whole run took 160 s). A task's output goes to
    OUT/logs/TASK.log; its lines are shown here too, prefixed with the task."""
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_paths = {task: logs / f"{task}.log" for task in task_args}
    for path in log_paths.values():
        path.write_bytes(b"")
    stop = threading.Event()
    follower = threading.Thread(target=_follow_logs, args=(log_paths, stop), daemon=True)
    follower.start()
    outcomes: dict[str, dict | UserError] = {}
    # spawn, not fork: a forked child would inherit TensorFlow's threads in a broken state.
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        order = sorted(task_args, key=TASK_COST_ORDER.index)
        futures = {pool.submit(_task_in_child, log_paths[task], task_args[task], task != order[0]): task
                   for task in order}
        try:
            for future in as_completed(futures):
                task = futures[future]
                try:
                    outcomes[task] = future.result()
                except (UserError, BrokenProcessPool) as exc:
                    if isinstance(exc, BrokenProcessPool):  # killed (out of memory) or crashed
                        exc = UserError(f"a task process died; see {log_paths[task]}")
                    outcomes[task] = exc
                    log(f"pipeline: {task} failed: {exc}")
        finally:
            stop.set()
            follower.join()
    return outcomes


def _task_in_child(log_path: Path, task_arguments: tuple, lower_priority: bool) -> dict:
    """Runs in a pool process: everything it prints, TensorFlow's native logs included, goes to the log."""
    if lower_priority and hasattr(os, "setpriority") and os.getpriority(os.PRIO_PROCESS, 0) < LOWER_PRIORITY:
        os.setpriority(os.PRIO_PROCESS, 0, LOWER_PRIORITY)
    sys.stdout.flush()
    sys.stderr.flush()
    with open(log_path, "ab", buffering=0) as stream:
        os.dup2(stream.fileno(), 1)
        os.dup2(stream.fileno(), 2)
    return run_task(*task_arguments)


def _follow_logs(log_paths: dict[str, Path], stop: threading.Event) -> None:
    offsets = dict.fromkeys(log_paths, 0)
    pending = dict.fromkeys(log_paths, b"")
    while True:
        stopping = stop.is_set()  # read every log once more after the tasks end
        for task, path in log_paths.items():
            with open(path, "rb") as stream:
                stream.seek(offsets[task])
                chunk = stream.read()
            offsets[task] += len(chunk)
            *lines, pending[task] = (pending[task] + chunk).split(b"\n")
            for line in lines:
                log(f"[{task}] {line.decode('utf-8', 'replace').rstrip()}")
        if stopping:
            for task, rest in pending.items():
                if rest.strip():
                    log(f"[{task}] {rest.decode('utf-8', 'replace').rstrip()}")
            return
        time.sleep(0.5)


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
    from edgekit.core import format_bytes
    from edgekit.verify.report import fmt_num, fmt_pct, status_text

    for result in results:
        lines.append(f"| {result['task']} | Keras | - | - | {fmt_pct(result['reference'].get('accuracy'))} "
                     "| - | - | - | - |")
        for e in result["artifacts"]:
            lines.append(f"| {result['task']} | {e.get('variant') or '-'} | {e.get('format') or '-'} "
                         f"| {format_bytes(e.get('size_bytes'))} | {fmt_pct(e.get('accuracy'))} "
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
