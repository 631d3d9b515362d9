"""`edgekit deploy NAME BUNDLE --ssh USER@HOST`: copy edgekit's `runtime` package (source), the bundle
and a golden file to a real device with the system's ssh/scp, then run the golden comparison and
`python -m edgekit.runtime bench` there, and report both. These timings are real device latencies.

The device needs Python 3 with numpy and one backend (ai-edge-litert / onnxruntime, or tflite-runtime
on 32-bit ARM): `pip install 'keras-edgekit[runtime]'` installs exactly that; nothing else is imported.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

from edgekit.core import UserError, atomic_write_json, log
from edgekit.devices.check import make_golden, parse_json_output, read_bundle, stage_runtime
from edgekit.runtime import profiles
from edgekit.runtime.errors import last_line

CONNECT_TIMEOUT_S = 15
COMMAND_TIMEOUT_S = 1800


class Remote:
    """ssh/scp to USER@HOST with batch-mode options (never prompts)."""

    def __init__(self, target: str, port: int = 22, identity: str | None = None):
        for tool in ("ssh", "scp"):
            if not shutil.which(tool):
                raise UserError(f"{tool} not found: install the OpenSSH client (Debian/Ubuntu: "
                                f"apt-get install openssh-client)")
        if "@" not in target or target.startswith("@") or target.endswith("@"):
            raise UserError(f"--ssh expects USER@HOST, got {target!r}")
        if identity and not Path(identity).expanduser().is_file():
            raise UserError(f"ssh identity file not found: {identity}")
        self.target, self.port = target, port
        self.options = ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new",
                        "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}", "-o", "LogLevel=ERROR"]
        known_hosts = os.environ.get("EDGEKIT_SSH_KNOWN_HOSTS")  # tests keep ~/.ssh untouched
        if known_hosts:
            self.options += ["-o", f"UserKnownHostsFile={known_hosts}"]
        if identity:
            self.options += ["-i", str(Path(identity).expanduser()), "-o", "IdentitiesOnly=yes"]

    def ssh(self, command: str, what: str, check: bool = True,
            timeout: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess:
        argv = ["ssh", *self.options, "-p", str(self.port), self.target, command]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise UserError(f"{what} on {self.target} timed out after {timeout:.0f} s") from None
        if proc.returncode == 255:
            raise UserError(f"ssh to {self.target} port {self.port} failed: {last_line(proc.stderr)}")
        if check and proc.returncode != 0:
            raise UserError(f"{what} on {self.target} failed: {last_line(proc.stderr) or last_line(proc.stdout)}")
        return proc

    def copy(self, sources: list[Path], remote_dir: str) -> None:
        argv = ["scp", *self.options, "-P", str(self.port), "-r", "-q", *map(str, sources),
                f"{self.target}:{remote_dir}/"]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S,
                              stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise UserError(f"scp to {self.target}:{remote_dir} failed: {last_line(proc.stderr)}")


def remote_path(path: str) -> str:
    """Quote a remote path for the shell, keeping a leading ~/ expandable."""
    if path == "~":
        return "~"
    if path.startswith("~/"):
        return "~/" + shlex.quote(path[2:])
    return shlex.quote(path)


def deploy(name: str, bundle_path: str, target: str, port: int = 22, identity: str | None = None,
           python: str = "python3", remote_dir: str = "~/edgekit-deploy", golden: str | None = None,
           runs: int = 50, samples: int = 32) -> dict:
    profile = profiles.load(name)
    bundle, manifest = read_bundle(bundle_path)
    remote = Remote(target, port, identity)
    log(f"deploy: connecting to {target}:{port}")
    proc = remote.ssh(f"mkdir -p {remote_path(remote_dir)} && cd {remote_path(remote_dir)} && pwd "
                      f"&& {shlex.quote(python)} -c 'import platform,sys; print(platform.machine(), "
                      f"sys.version.split()[0])'", "preparing the remote folder", check=False)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or len(lines) < 2:
        raise UserError(f"{python} on {target} did not start: {last_line(proc.stderr) or 'no output'}")
    abs_dir, (machine, py_version) = lines[0].strip(), lines[1].split()[:2]
    if machine != profile["arch"]:
        log(f"  note: the device reports {machine}, profile {profile['name']} expects {profile['arch']}")
    qdir = shlex.quote(abs_dir)
    with tempfile.TemporaryDirectory(prefix="edgekit-deploy-") as tmp:
        stage = stage_runtime(Path(tmp) / "stage")
        source = make_golden(bundle, manifest, samples, stage / "golden.npz", golden)
        (stage / "bundle").mkdir()
        shutil.copytree(bundle, stage / "bundle" / bundle.name,
                        ignore=shutil.ignore_patterns("__pycache__"))
        log(f"  copying runtime, {bundle.name} and golden.npz to {target}:{abs_dir}")
        remote.ssh(f"cd {qdir} && rm -rf edgekit bundle golden.npz",
                   "cleaning the remote folder")
        remote.copy(sorted(stage.iterdir()), abs_dir)
    rbundle = f"bundle/{bundle.name}"
    env = f"cd {qdir} && PYTHONPATH={qdir} PYTHONDONTWRITEBYTECODE=1 {shlex.quote(python)}"
    device = shlex.quote(profile["name"])
    golden_cmd = f"{env} -m edgekit.runtime golden {rbundle} golden.npz --json --device {device}"
    bench_cmd = f"{env} -m edgekit.runtime bench {rbundle} --runs {runs} --json --device {device}"
    log("  golden comparison on the device")
    g = remote.ssh(golden_cmd, "the golden comparison", check=False)
    golden_result = parse_json_output(g.stdout)
    if not golden_result or "passed" not in golden_result:
        raise UserError(f"golden comparison on {target} failed: "
                        f"{(golden_result or {}).get('error') or last_line(g.stderr) or last_line(g.stdout)}")
    log(f"  benchmark on the device ({runs} runs)")
    b = remote.ssh(bench_cmd, "the benchmark")
    bench_result = parse_json_output(b.stdout)
    if not bench_result:
        raise UserError(f"benchmark on {target} printed no JSON: {last_line(b.stdout)}")
    return {"device": profile["name"], "target": target, "port": port, "remote_dir": abs_dir,
            "remote_machine": machine, "remote_python": py_version, "bundle": bundle.name,
            "golden": {**source, **golden_result}, "bench": bench_result,
            "passed": bool(golden_result["passed"])}


def _latency_text(bench: dict) -> str:
    lat = bench.get("latency_ms")
    if isinstance(lat, dict):
        return ", ".join(f"{k} {v:.3f} ms" for k, v in lat.items() if isinstance(v, (int, float)) and k.startswith("p"))
    if "median_ms" in bench:
        return f"median {bench['median_ms']:.3f} ms, p90 {bench['p90_ms']:.3f} ms"
    return json.dumps(bench)


def run(args) -> int:
    result = deploy(args.name, args.bundle, args.ssh, port=args.port, identity=args.identity,
                    python=args.python, remote_dir=args.remote_dir, golden=args.golden, runs=args.runs)
    g, b = result["golden"], result["bench"]
    print(f"deploy {result['bundle']} -> {result['target']}:{result['remote_dir']} "
          f"({result['remote_machine']}, Python {result['remote_python']}, profile {result['device']})")
    print(f"  golden: {'PASS' if g['passed'] else 'FAIL'}  max_abs_error {g['max_abs_error']:.3g} "
          f"(limit {g.get('tolerance', {}).get('max_abs_error', float('nan')):g})  agreement "
          f"{g['agreement']:.3f} on {g.get('samples')} samples  [{g.get('backend')}]")
    print(f"  bench (measured on the device): {_latency_text(b)}"
          + (f", peak RSS {b['peak_rss_mb']} MB" if b.get("peak_rss_mb") is not None else ""))
    if args.json_path:
        atomic_write_json(args.json_path, result)
    return 0 if result["passed"] else 1
