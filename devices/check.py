"""`edgekit devices check NAME BUNDLE...`: run bundles on the device's CPU under user-mode QEMU, with
edgekit's own `runtime` package inside a Python of the device's architecture, and compare the outputs
with the host's (a golden file).

Golden: `--golden FILE` (verify --save-golden: Keras reference), or computed here by running the SAME
bundle on the host with the same runtime code on the model's held-out inputs (heldout.npz beside the
model directory) or, when no data is at hand, random-but-valid inputs of the bundle's input spec.

Emulated timings say nothing about the device's speed, so none are reported as latency.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgekit.core import UserError, atomic_write_json, log
from edgekit.devices import emulation
from edgekit.runtime import gates, profiles
from edgekit.runtime import samples as sample_files
from edgekit.runtime.bundle import read_manifest
from edgekit.runtime.errors import EdgekitError, last_line
from edgekit.runtime.golden import Golden
from edgekit.runtime.golden import read as read_golden
from edgekit.runtime.synthetic import synthetic_inputs

EMULATED_NOTE = "emulated: timings not meaningful"
DEVICE_TIMEOUT_S = 1800


# --- bundles and inputs -------------------------------------------------------------------------

def read_bundle(path: str | os.PathLike) -> tuple[Path, dict]:
    bundle = Path(path)
    manifest = read_manifest(bundle)
    for key in ("variant", "inputs", "outputs"):
        if key not in manifest:
            raise UserError(f"{bundle / 'manifest.json'} lacks {key!r}; re-export the bundle")
    if not (bundle / manifest["model_file"]).is_file():
        raise UserError(f"{bundle / manifest['model_file']} is missing")
    return bundle.resolve(), manifest


def find_heldout(bundle: Path, manifest: dict) -> Path | None:
    """heldout.npz of the model the bundle came from: in the bundle, or in a model directory
    (edgekit.json with the same name) beside the bundle's folder (export's default layout)."""
    if (bundle / "heldout.npz").is_file():
        return bundle / "heldout.npz"
    for parent in (bundle.parent, bundle.parent.parent):
        if not parent.is_dir():
            continue
        for model_dir in [parent, *sorted(p for p in parent.iterdir() if p.is_dir())]:
            meta, heldout = model_dir / "edgekit.json", model_dir / "heldout.npz"
            if meta.is_file() and heldout.is_file():
                try:
                    name = json.loads(meta.read_text(encoding="utf-8")).get("name")
                except (OSError, json.JSONDecodeError):
                    continue
                if name == manifest.get("name"):
                    return heldout
    return None


def random_inputs(bundle: Path, manifest: dict, samples: int, seed: int = 0) -> np.ndarray:
    """Random inputs that the model accepts (the runtime's synthetic generator): token ids below the
    vocabulary size, standardized features."""
    vocab = bundle / ((manifest.get("preprocessing") or {}).get("vocab_file") or "assets/vocab.txt")
    vocab_size = sum(1 for _ in vocab.open(encoding="utf-8")) if vocab.is_file() else None
    feed = synthetic_inputs(manifest["inputs"], samples, seed, vocab_size)
    return next(iter(feed.values())) if len(feed) == 1 else feed  # several inputs: by name


def golden_inputs(bundle: Path, manifest: dict, count: int) -> tuple[np.ndarray | dict, str]:
    heldout = find_heldout(bundle, manifest)
    if heldout is not None:
        try:
            found = sample_files.read(heldout, [i["name"] for i in manifest["inputs"]], "held-out split")
        except EdgekitError as exc:
            log(f"  note: {exc}; using random inputs")
        else:
            if len(found):
                return sample_files.take(found.x, 0, count), f"held-out inputs ({heldout})"
    return random_inputs(bundle, manifest, count), "random inputs of the bundle's input spec"


# --- the code that travels to the device --------------------------------------------------------

def stage_runtime(dest: Path) -> Path:
    """Copy what `keras-edgekit[runtime]` needs on a device into `dest`: the `edgekit` root's
    `__init__.py` and the `edgekit.runtime` package (source and profiles), nothing else. The device runs
    `python -m edgekit.runtime golden|bench` with `dest` on its PYTHONPATH."""
    import edgekit
    from edgekit import runtime

    package = dest / "edgekit"
    package.mkdir(parents=True)
    shutil.copy2(edgekit.__file__, package / "__init__.py")
    shutil.copytree(Path(runtime.__file__).parent, package / "runtime",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.md"))
    return dest


def golden_argv(bundle: str, golden: str, threads: int | None, device: str | None = None) -> list[str]:
    argv = ["-m", "edgekit.runtime", "golden", bundle, golden, "--json"]
    return argv + (["--device", device] if device else []) + (["--threads", str(threads)] if threads else [])


def parse_json_output(stdout: str) -> dict | None:
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    try:
        return json.loads(stdout)
    except json.JSONDecodeError:
        return None


def make_golden(bundle: Path, manifest: dict, count: int, out: Path, golden_file: str | None = None,
                inputs_cache: dict | None = None) -> dict:
    """Write the golden npz the device compares against; returns a description."""
    if golden_file:
        path = Path(golden_file)
        try:
            golden = read_golden(path)
        except EdgekitError as exc:
            raise UserError(str(exc)) from None
        golden = golden.head(count)
        np.savez(out, **golden.arrays())
        return {"golden": str(path), "reference_source": "golden file", "samples": sample_files.batch_size(golden.x)}
    key = manifest.get("name")
    if inputs_cache is not None and key in inputs_cache:
        x, where = inputs_cache[key]
    else:
        x, where = golden_inputs(bundle, manifest, count)
        if inputs_cache is not None:
            inputs_cache[key] = (x, where)
    reference, backend = host_outputs(bundle, x)
    variant = manifest["variant"]
    # Same bundle, another machine: the table's SAME_BUNDLE entry, not the bundle-vs-Keras gate.
    gate = gates.gate(variant, gates.SAME_BUNDLE, manifest.get("recipe"))
    if gate is None:
        raise UserError(f"{bundle.name}: no gate for variant {variant!r} (recipe {manifest.get('recipe')!r})")
    meta = {"task": manifest.get("task"), "labels": manifest.get("labels"), "bundle": bundle.name,
            "reference_source": "host-bundle", "inputs": where, "host_backend": backend,
            "tolerance": {variant: gate.to_dict()}}
    np.savez(out, **Golden(x, reference, None, None, meta).arrays())
    return {"reference_source": "host (same bundle)", "inputs": where, "samples": sample_files.batch_size(x),
            "host_backend": meta["host_backend"]}


def host_outputs(bundle: Path, x: np.ndarray) -> tuple[np.ndarray, str]:
    """The bundle's float outputs on the host, through the same `runtime` code the device runs."""
    from edgekit import runtime

    try:
        with runtime.load(bundle) as model:
            return model.predict_tensors(x), model.backend
    except runtime.EdgekitError as exc:
        raise UserError(f"host run of {bundle.name} failed: {exc}") from None


# --- the command --------------------------------------------------------------------------------

def check(name: str, bundles: list[str], golden: str | None = None, samples: int = 8) -> dict:
    profile = profiles.load(name)
    items = [read_bundle(b) for b in bundles]
    start = time.perf_counter()
    native = profile.get("qemu") is None and profile["arch"] == _host_arch()
    if profile.get("qemu") is None and not native:
        raise UserError(f"device {name!r} cannot be emulated: "
                        f"{profile.get('notes') or 'no qemu settings in its profile'}")
    runnable = [(b, m) for b, m in items if profiles.backend_for(profile, m["format"])]
    emulator = emulation.Emulator(profile) if runnable and not native else None
    setup_s = time.perf_counter() - start
    results = []
    inputs_cache: dict = {}
    with tempfile.TemporaryDirectory(prefix="edgekit-check-") as tmp:
        stage = stage_runtime(Path(tmp) / "stage")
        for i, (bundle, manifest) in enumerate(items):
            backend = profiles.backend_for(profile, manifest["format"])
            if backend is None:
                results.append({"bundle": bundle.name, "path": str(bundle), "status": "skipped",
                                "passed": None, "reason": f"no {manifest['format']} backend has a wheel "
                                f"for {profile['arch']} ({', '.join(profile['backends'])} only)"})
                log(f"  SKIP {bundle.name}: {results[-1]['reason']}")
                continue
            golden_path = Path(tmp) / f"golden-{i}.npz"
            source = make_golden(bundle, manifest, samples, golden_path, golden, inputs_cache)
            results.append(_run_on_device(profile, emulator, bundle, golden_path, stage, source))
            log("  " + format_result(results[-1]))
    checked = [r for r in results if r["status"] != "skipped"]
    return {
        "device": profile["name"], "title": profile["title"],
        "emulation": ({"qemu": emulator.qemu, "cpu": emulator.cpu, "sysroot": str(emulator.sysroot),
                       "site": str(emulator.site), "note": EMULATED_NOTE} if emulator else None),
        "setup_seconds": round(setup_s, 2), "results": results,
        "passed": bool(checked) and all(r["passed"] for r in checked),
        "checked": len(checked), "skipped": len(results) - len(checked),
    }


def _run_on_device(profile: dict, emulator, bundle: Path, golden_path: Path, stage: Path, source: dict) -> dict:
    """Run `python -m edgekit.runtime golden` on the (emulated or native) device; its verdict as a result."""
    t0 = time.perf_counter()
    argv = golden_argv(str(bundle), str(golden_path), profile["default_threads"], profile["name"])
    if emulator is not None:
        cmd, env = emulator.argv(argv), emulator.env([stage])
    else:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        cmd, env["PYTHONPATH"] = [sys.executable, *argv], str(stage)
    log(f"  running {bundle.name} on {profile['name']} ({profile['qemu']['cpu'] if emulator else 'native'})")
    try:
        proc = subprocess.run(cmd, cwd=stage, env=env, capture_output=True, text=True, timeout=DEVICE_TIMEOUT_S)
        out, rc, err = proc.stdout, proc.returncode, proc.stderr
    except subprocess.TimeoutExpired:
        out, rc, err = "", 124, f"timed out after {DEVICE_TIMEOUT_S} s"
    data = parse_json_output(out) or {}
    result = {"bundle": bundle.name, "path": str(bundle), **source}
    if "passed" in data:
        result.update({k: v for k, v in data.items() if k != "bundle"})
        result["status"] = "pass" if data["passed"] else "fail"
    else:
        detail = data.get("error") or _crash_reason(rc, err)
        result.update(status="error", passed=False, error=detail)
    result["check_seconds"] = round(time.perf_counter() - t0, 2)
    result["timing"] = EMULATED_NOTE if emulator else "native host run"
    return result


def _crash_reason(rc: int, stderr: str) -> str:
    if rc < 0 or rc in (139, 134):
        return f"device process crashed (signal {-rc if rc < 0 else rc - 128}): {last_line(stderr)}"
    return last_line(stderr) or f"exit {rc}"


def _host_arch() -> str:
    import platform

    return platform.machine()


def format_result(r: dict) -> str:
    if r["status"] == "skipped":
        return f"SKIP  {r['bundle']}: {r['reason']}"
    if r["status"] == "error":
        return f"ERROR {r['bundle']}: {r['error']}"
    tol = r.get("tolerance") or {}
    machine = r.get("machine")
    if isinstance(machine, dict):
        machine = machine.get("machine")
    backend = " ".join(str(v) for v in (r.get("backend"), r.get("backend_version")) if v)
    limit = f" (limit {tol['max_abs_error']:g})" if "max_abs_error" in tol else ""
    return (f"{r['status'].upper():5} {r['bundle']}: max_abs_error {r['max_abs_error']:.3g}{limit}, "
            f"agreement {r['agreement']:.3f} on {r.get('samples')} samples, "
            f"{backend} on {machine}")


def run(args) -> int:
    if getattr(args, "data", None):
        raise UserError(f"--data is for phone checks (photos through MediaPipe Tasks); {args.name} compares "
                        "with the host's golden outputs (--golden FILE)")
    summary = check(args.name, args.bundles, golden=args.golden, samples=args.samples)
    print(f"devices check {summary['device']} ({summary['title']})")
    if summary["emulation"]:
        print(f"  emulated with {Path(summary['emulation']['qemu']).name} -cpu {summary['emulation']['cpu']}: "
              f"correctness only, {EMULATED_NOTE}")
    for r in summary["results"]:
        print("  " + format_result(r))
    verdict = "PASS" if summary["passed"] else "FAIL"
    print(f"{verdict}: {sum(1 for r in summary['results'] if r['passed'])}/{summary['checked']} bundles "
          f"match the host" + (f", {summary['skipped']} skipped" if summary["skipped"] else ""))
    if args.json_path:
        atomic_write_json(args.json_path, summary)
    return 0 if summary["passed"] else 1
