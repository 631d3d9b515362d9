"""export_model: model directory -> one bundle per (format, variant), conversions in child processes.

The parent process never imports TensorFlow. Per format it starts one worker (export/worker.py) that
converts that format's variants in turn (the formats' workers run at the same time where there are
cores for them); a worker that dies (converter segfault) costs only the
variant it was converting: that variant is reported failed and a new worker takes the rest. The
parent then checks each file's ops (export/opcheck.py) and writes its bundle atomically:
`{out_dir}/{name}-{format}-{variant}/` = model file + manifest.json + assets/ from the model dir.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from edgekit.core import Progress, UserError, atomic_dir, atomic_write_json, format_bytes, log, sha256_file
from edgekit.export import formats as registered_formats
from edgekit.export import opcheck, recipes, source
from edgekit.export.manifest import MANIFEST_FILE, build_manifest
from edgekit.runtime import profiles
from edgekit.train.io import keras_layer_names, model_file

POLL_SECONDS = 0.2


@dataclass
class ExportResult:
    format: str
    variant: str
    recipe: str | None
    status: str                   # "ok" | "skipped" | "failed"
    reason: str = ""
    bundle: Path | None = None
    size_bytes: int | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict:
        data = asdict(self)
        data["bundle"] = str(self.bundle) if self.bundle else None
        return data


def bundle_name(name: str, fmt: str, variant: str) -> str:
    return f"{name}-{fmt}-{variant}"


def export_model(model_dir, out_dir, formats=None, variants=None,
                 calibration_samples: int = 200, int8_io: str = "float32", opset: int = 17,
                 device: str | None = None, keep_float_layers: list[str] | None = None,
                 allow_unsafe: bool = False, model_options: dict | None = None) -> list[ExportResult]:
    """Write one bundle per requested (format, variant) into `out_dir`; return one result each.

    model_dir: a model directory from `edgekit train`, or a Keras file (.keras; .h5 with allow_unsafe).
    model_options (export/source.py `model_view`): calibration (an .npz of representative inputs:
    `x`, or one array per input name), name (of the bundles; default the file's stem), task,
    preprocess, labels, vocab, max_len (pre/post-processing of an outside model).
    keep_float_layers: Keras layer names kept in float inside the int8/int16x8 TFLite and the int8 ONNX
    files (selective quantization, e.g. the layers verify found most sensitive).
    Raises UserError for a bad model or options; a variant that cannot apply is "skipped" (the
    calibrated ones without calibration samples too), one whose conversion or op check fails is
    "failed" (the others still run)."""
    options = {k: v for k, v in (model_options or {}).items() if v is not None}
    if source.needs_view(Path(model_dir), options):
        with tempfile.TemporaryDirectory(prefix="edgekit-model-") as scratch:
            view = source.model_view(model_dir, Path(scratch) / "model", allow_unsafe=allow_unsafe, **options)
            return export_model(view, out_dir, formats, variants, calibration_samples, int8_io, opset,
                                device, keep_float_layers, allow_unsafe)
    model_dir, out_dir = Path(model_dir), Path(out_dir).resolve()  # the worker runs in its own cwd
    chosen_formats = _checked_choices(formats or registered_formats.NAMES, registered_formats.NAMES, "format")
    variants = _checked_choices(variants or recipes.variants(), recipes.variants(), "variant")
    if int8_io not in recipes.IO_TYPES:
        raise UserError(f"int8_io must be one of {', '.join(recipes.IO_TYPES)}, not {int8_io!r}")
    if opset < 17:
        raise UserError(f"ONNX opset {opset} is too old; use 17 or newer")
    if calibration_samples < 1:
        raise UserError("calibration_samples must be at least 1")
    metadata = source.check_model_dir(model_dir, allow_unsafe)
    profile = profiles.load(device) if device else None
    _check_layer_names(keep_float_layers, model_file(model_dir, allow_unsafe))

    plan: list[tuple[str, str]] = [(f, v) for f in chosen_formats for v in variants]
    results, to_convert = _skipped_and_to_convert(plan, model_dir, profile)
    chosen = {(fmt, v): recipes.get(v).keeping_float(keep_float_layers).with_io_type(int8_io)
              for fmt, fmt_variants in to_convert.items() for v in fmt_variants}
    settings = {"opset": opset, "io_dtype": "float32", "device": device,
                "calibration_samples": _calibration_used(model_dir, chosen.values(), calibration_samples)}
    context = _Context(model_dir, out_dir, metadata, profile, settings, plan, results, chosen)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", suffix=".staging", dir=out_dir))
    try:
        for key in plan:  # decided before converting: reported first
            if key in results:
                context.report(results[key])
        requests = {fmt: {"model_dir": str(model_dir.resolve()), "allow_unsafe": allow_unsafe, "format": fmt,
                          "calibration_samples": calibration_samples, "opset": opset,
                          "recipes": {v: chosen[(fmt, v)].to_json() for v in fmt_variants}}
                    for fmt, fmt_variants in to_convert.items() if fmt_variants}
        # The formats convert at the same time where there are cores for it: each worker is a single
        # TensorFlow process that keeps about one core busy.
        with ThreadPoolExecutor(max_workers=max(1, min(len(requests), os.cpu_count() or 1))) as pool:
            for future in [pool.submit(_run_workers, request, to_convert[fmt], staging / fmt, context)
                           for fmt, request in requests.items()]:
                future.result()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    ordered = [results[key] for key in plan]
    _log_summary(ordered)
    return ordered


def _skipped_and_to_convert(plan, model_dir: Path, profile) -> tuple[dict, dict[str, list[str]]]:
    """The variants that cannot apply here (as "skipped" results, with the reason) and, per format,
    the variants to convert."""
    results: dict[tuple[str, str], ExportResult] = {}
    to_convert: dict[str, list[str]] = {}
    for fmt, variant in plan:
        recipe = recipes.get(variant)
        unsupported = registered_formats.host(fmt).unsupported(recipe)
        why_not = unsupported or profiles.format_unsupported_by(profile, fmt)
        if not why_not and recipe.calibrated and not (model_dir / source.CALIBRATION_FILE).is_file():
            why_not = ("needs representative inputs to calibrate: pass --calibration FILE.npz (`x`, or one "
                       "array per input name)")
        if why_not:
            results[(fmt, variant)] = ExportResult(fmt, variant, None if unsupported else
                                                   registered_formats.recipe_name(fmt, recipe), "skipped", why_not)
        else:
            to_convert.setdefault(fmt, []).append(variant)
    return results, to_convert


def _calibration_used(model_dir: Path, chosen, requested: int) -> int | None:
    """How many calibration samples the calibrated recipes will use (None when none is calibrated)."""
    if not any(recipe.calibrated for recipe in chosen):
        return None
    available = source.calibration_count(model_dir)
    used = min(available, requested)
    if available < requested:
        log(f"warning: calibration.npz holds {available} samples (< {requested} requested); using all of them")
    if used < source.MIN_CALIBRATION_SAMPLES:
        log(f"warning: calibrating on only {used} samples: int8 scales may be poor")
    return used


def _check_layer_names(names: list[str] | None, keras_file: Path) -> None:
    """Layers named by the user must exist: checked here, before minutes of conversion, not in a worker."""
    if not names:
        return
    known = keras_layer_names(keras_file)
    unknown = sorted(set(names) - known) if known is not None else []
    if unknown:
        raise UserError(f"--keep-float-layers: no layer named {', '.join(map(repr, unknown))} in {keras_file.name}; "
                        f"its layers are {', '.join(sorted(known))}")


def _checked_choices(items, valid: tuple[str, ...], what: str) -> list[str]:
    items = [items] if isinstance(items, str) else list(items)
    bad = [i for i in items if i not in valid]
    if bad or not items:
        raise UserError(f"unknown {what} {', '.join(bad) or '(none given)'}; choose from {', '.join(valid)}")
    return list(dict.fromkeys(items))


class _Context:
    """What the per-variant steps share: inputs, results so far, and the progress counter."""

    def __init__(self, model_dir, out_dir, metadata, profile, settings, plan, results, chosen):
        self.model_dir, self.out_dir, self.metadata = model_dir, out_dir, metadata
        self.profile, self.settings, self.plan, self.results = profile, settings, plan, results
        self.recipes: dict[tuple[str, str], recipes.Recipe] = chosen
        self.layer_classes: dict[str, str] = {}
        self.source_sha256 = sha256_file(source.model_file(model_dir, True))
        self.progress = Progress(len(plan))
        self.lock = threading.Lock()

    def recipe_name(self, fmt: str, variant: str) -> str:
        return registered_formats.recipe_name(fmt, self.recipes[(fmt, variant)])

    def report(self, result: ExportResult) -> None:
        with self.lock:  # the formats' workers report from their own threads
            self.results[(result.format, result.variant)] = result
            head = f"{result.format} {result.variant} ..."
            if result.status == "ok":
                self.progress.step(f"{head} ok {format_bytes(result.size_bytes)} ({result.seconds:.1f} s)")
            else:
                self.progress.step(f"{head} {result.status}: {result.reason}"
                                   + (f" ({result.seconds:.1f} s)" if result.seconds else ""))


def _run_workers(request: dict, variants: list[str], staging: Path, context: _Context) -> None:
    """Convert `variants` of one format in worker processes, restarting after a crash."""
    staging.mkdir(parents=True, exist_ok=True)
    remaining = list(variants)
    attempt = 0
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    while remaining:
        attempt += 1
        events_path = staging / f"events-{attempt}.jsonl"
        request_path = staging / f"request-{attempt}.json"
        stderr_path = staging / f"worker-{attempt}.log"
        atomic_write_json(request_path, {**request, "variants": remaining, "staging": str(staging),
                                         "events": str(events_path)})
        events_path.touch()
        started: tuple[str, float] | None = None
        progressed = False
        with open(stderr_path, "wb") as stderr, open(events_path, encoding="utf-8") as events:
            process = subprocess.Popen([sys.executable, "-m", "edgekit.export.worker", str(request_path)],
                                       cwd=staging, env=env, stdin=subprocess.DEVNULL,
                                       stdout=subprocess.DEVNULL, stderr=stderr)
            pending = ""
            while True:
                finished = process.poll() is not None
                pending += events.read()
                *lines, pending = pending.split("\n")
                for line in lines:
                    event = json.loads(line)
                    kind = event["event"]
                    if kind == "fatal":
                        process.wait()
                        raise UserError(event["message"])
                    if kind == "model":
                        context.layer_classes = event["layer_classes"]
                    elif kind == "start":
                        started = (event["variant"], time.perf_counter())
                    elif kind == "done":
                        started = None
                        progressed = True
                        remaining.remove(event["variant"])
                        context.report(_finish_variant(request["format"], event, context))
                if finished:
                    break
                time.sleep(POLL_SECONDS)
        code = process.returncode
        if started is not None:
            variant, since = started
            remaining.remove(variant)
            context.report(ExportResult(request["format"], variant,
                                        context.recipe_name(request["format"], variant), "failed",
                                        _death_reason(code, stderr_path),
                                        seconds=round(time.perf_counter() - since, 2)))
        elif remaining and not progressed:  # died before converting anything: do not loop forever
            reason = _death_reason(code, stderr_path)
            for variant in list(remaining):
                remaining.remove(variant)
                context.report(ExportResult(request["format"], variant,
                                            context.recipe_name(request["format"], variant), "failed", reason))


def _death_reason(code: int, stderr_path: Path) -> str:
    if code is not None and code < 0:
        try:
            name = f", {signal.Signals(-code).name}"
        except ValueError:
            name = ""
        return f"converter crashed (signal {-code}{name})"
    tail = [l for l in stderr_path.read_text(errors="replace").splitlines() if l.strip()][-1:]
    return f"worker exited with code {code}" + (f": {tail[0].strip()[:300]}" if tail else "")


def _finish_variant(fmt: str, event: dict, context: _Context) -> ExportResult:
    """Op-check a converted file and write its bundle (or turn the event into a skipped/failed result)."""
    variant = event["variant"]
    recipe = context.recipes[(fmt, variant)]
    host = registered_formats.host(fmt)
    result = ExportResult(fmt, variant, host.recipe_name(recipe), event["status"], event.get("reason", ""),
                          seconds=event.get("seconds", 0.0))
    if result.status != "ok":
        return result
    details = event["details"]
    problems = opcheck.check_ops(fmt, details["op_records"], context.layer_classes, context.profile)
    if problems:
        result.status, result.reason = "failed", "op check: " + "; ".join(problems)
        return result
    settings = host.export_settings(recipe, dict(context.settings))
    if not recipe.calibrated:
        settings["calibration_samples"] = None
    settings["seconds"] = result.seconds
    name = context.metadata["name"]
    final = context.out_dir / bundle_name(name, fmt, variant)
    with atomic_dir(final) as tmp:
        model_path = tmp / registered_formats.file_name(fmt)
        shutil.copyfile(event["file"], model_path)
        # phone-app metadata changes the file's bytes: written before the manifest's sha256
        written = host.write_metadata(model_path, context.metadata, details["inputs"][0], final.name)
        if written is not None:
            settings[f"{fmt}_metadata"] = written
        assets = context.model_dir / "assets"
        if assets.is_dir():
            shutil.copytree(assets, tmp / "assets")
        manifest = build_manifest(fmt=fmt, variant=variant, recipe=recipe, recipe_name=host.recipe_name(recipe),
                                  model_path=model_path, details=details, metadata=context.metadata,
                                  source_sha256=context.source_sha256, settings=settings)
        atomic_write_json(tmp / MANIFEST_FILE, manifest)
    result.bundle, result.size_bytes = final, manifest["size_bytes"]
    return result


def _log_summary(results: list[ExportResult]) -> None:
    log("")
    log(f"{'format':<7} {'variant':<8} {'recipe':<18} {'status':<8} {'size':>10} {'time':>7}  bundle / reason")
    for r in results:
        where = r.bundle.name if r.bundle else r.reason
        log(f"{r.format:<7} {r.variant:<8} {r.recipe or '-':<18} {r.status:<8} {format_bytes(r.size_bytes):>10} "
            f"{r.seconds:>6.1f}s  {where}")
    counts = {s: sum(r.status == s for r in results) for s in ("ok", "skipped", "failed")}
    log(f"wrote {counts['ok']}, skipped {counts['skipped']}, failed {counts['failed']}")
