"""`edgekit fleet`: deploy, verify and roll back bundles on a fleet through Ansible.

The fleet is four sshd instances on 127.0.0.2 .. 127.0.0.5 (tests/fleet_hosts.py: each its own user
and home when the test runs as root), the inventory an ordinary INI file. One test walks the whole
life of a fleet (first deploy, a no-change run, a new release while a server answers requests on one
host and another host's disk folder is read-only, rollback, status); the others are fast checks of
user mistakes, the release id, the runtime wheel, and the server following a `current` link.
"""

from __future__ import annotations

import http.client
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import fleet_hosts
import numpy as np
import pytest

from edgekit.cli import main
from edgekit.devices.fleet import PLAYBOOKS, prepare

ANSIBLE = shutil.which("ansible-playbook", path=str(Path(sys.executable).parent)) or shutil.which("ansible-playbook")
needs_ansible = pytest.mark.skipif(ANSIBLE is None, reason="ansible-core not installed (the dev and fleet extras "
                                                           "install it)")


# ------------------------------------------------------------------------------------- fast checks

def test_release_id_is_the_content_hash(tmp_path):
    bundle = tmp_path / "b"
    (bundle / "assets").mkdir(parents=True)
    (bundle / "model.tflite").write_bytes(b"abc")
    (bundle / "assets" / "vocab.txt").write_text("x\n")
    first = prepare.content_hash(bundle)
    (bundle / "__pycache__").mkdir()
    (bundle / "__pycache__" / "x.pyc").write_bytes(b"cache")
    assert prepare.content_hash(bundle) == first and len(first) == 16   # caches are not part of a release
    (bundle / "assets" / "vocab.txt").write_text("y\n")
    assert prepare.content_hash(bundle) != first


def test_wheel_platform_tags_follow_the_devices_glibc():
    tags = prepare.platform_tags("aarch64", "glibc", "2.36")
    assert tags[0] == "manylinux_2_36_aarch64" and tags[-1] == "manylinux2014_aarch64"
    assert "manylinux_2_17_aarch64" in tags and "manylinux_2_28_aarch64" in tags
    assert prepare.platform_tags("armv7l", "glibc", "2.31")[-1] == "linux_armv7l"
    with pytest.raises(prepare.UserError, match="glibc"):
        prepare.platform_tags("aarch64", "musl", "1.2")
    # a Raspberry Pi's wheels: the set `devices check` runs under emulation (device profile rpi4)
    wheels, deps, source = prepare.platform_wheels("aarch64", "3.11")
    assert "ai-edge-litert==2.3.0" in wheels and deps and "rpi4" in source


def test_the_runtime_wheel_is_reproducible_and_holds_only_the_device_side():
    first, key = prepare.runtime_wheel()
    again, key2 = prepare.runtime_wheel()
    assert (first, key) == (again, key2)  # same sources, same wheel: no new upload to the devices
    names = zipfile.ZipFile(first).namelist()
    assert "edgekit/runtime/__main__.py" in names and "edgekit/runtime/profiles/rpi4.json" in names
    assert not any(n.startswith(("edgekit/train", "edgekit/export", "edgekit/devices", "edgekit/verify"))
                   for n in names)
    record = zipfile.ZipFile(first).read(next(n for n in names if n.endswith("/RECORD"))).decode()
    assert "edgekit/runtime/__init__.py,sha256=" in record


def test_every_file_of_the_role_ships_in_the_wheel():
    """The role is package data: each of its files is matched by pyproject's package-data or lies in a
    listed package (the two Python plugin folders)."""
    import tomllib

    root = Path(__file__).resolve().parents[1]
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    fleet = root / "devices" / "fleet"
    shipped = {p for pattern in config["package-data"]["edgekit.devices.fleet"] for p in fleet.glob(pattern)}
    for package in config["packages"]:
        if package.startswith("edgekit.devices.fleet"):
            folder = root / "devices" / Path(*package.split(".")[2:])
            shipped |= set(folder.glob("*.py"))
    files = {p for p in (fleet / "ansible").rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert files and files <= shipped, sorted(str(p.relative_to(fleet)) for p in files - shipped)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_the_roles_systemd_unit_is_valid(tmp_path):
    """The unit the role installs where a device runs systemd (docs/serving.md's), rendered for two
    bundles and checked by systemd's own parser (the test hosts have no systemd to run it)."""
    import jinja2

    launcher = tmp_path / "edgekit" / "bin" / "edgekit-runtime"
    launcher.parent.mkdir(parents=True)
    launcher.write_text("#!/bin/sh\n")
    launcher.chmod(0o755)
    template = (PLAYBOOKS["deploy"].parent / "roles" / "edgekit" / "templates" / "edgekit.service.j2").read_text()
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    unit = env.from_string(template).render(
        ansible_managed="managed by Ansible", edgekit_serve_bundles=[], edgekit_names=["text", "image"],
        ansible_facts={"edgekit": {"user": "root", "launcher": str(launcher), "root": str(tmp_path / "edgekit")}},
        edgekit_serve_host="0.0.0.0", edgekit_serve_port=8500, edgekit_serve_threads=4,
        edgekit_serve_token_file="/etc/edgekit/token")
    path = tmp_path / "edgekit.service"
    path.write_text(unit)
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert exec_start == (f"ExecStart={launcher} serve {tmp_path}/edgekit/bundles/text/current "
                          f"{tmp_path}/edgekit/bundles/image/current --host 0.0.0.0 --port 8500 --threads 4 "
                          "--token-file /etc/edgekit/token")
    proc = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60)
    problems = [line for line in proc.stderr.splitlines() if str(path) in line]
    assert proc.returncode == 0 and not problems, proc.stderr


class _Copy:
    """A stand-in model copy that remembers whether it was closed."""

    def __init__(self, release: str):
        self.release, self.closed = release, False
        self.bundle = type("B", (), {"manifest": {}, "task": "tensor", "format": "tflite", "variant": "fp32",
                                     "sha256": release, "preprocessing": None})()
        self.runner = type("R", (), {"inputs": [], "outputs": []})()
        self.backend, self.labels = "standin", None

    def close(self) -> None:
        self.closed = True


def test_a_pool_swaps_releases_while_requests_hold_the_old_copies():
    from edgekit.runtime.serve.pool import ModelPool

    pool = ModelPool("m", "releases/a", 2, lambda: _Copy("a"))
    with pool.lend(1.0) as held:                     # a request in flight on release a
        old = pool.swap("releases/b", lambda: _Copy("b"))
        assert old == Path("releases/a") and pool.path == Path("releases/b") and pool.metadata["sha256"] == "b"
        with pool.lend(1.0) as fresh:                # a new request gets release b at once
            assert fresh.release == "b"
        assert held.release == "a" and not held.closed  # still answering on its copy
    assert held.closed                               # closed after the last request on it
    with pool.lend(1.0) as model:
        assert model.release == "b"
    pool.swap("releases/c", lambda: _Copy("c"))      # nothing in flight: the old copies close at once
    assert model.closed
    pool.close()


def test_hosts_the_play_never_reached_are_reported_not_run():
    from edgekit.devices.fleet import report

    data = {"hosts": {"a": {"stats": {"ok": 3, "changed": 1, "failures": 0}, "facts": {"machine": "aarch64"},
                            "bundles": {"m": {"result": {"name": "m", "current": "r2", "previous": "r1",
                                                         "releases": ["r1", "r2"], "changed": True, "replaced": "r1",
                                                         "record": {"passed": True, "latency_ms": {"p50": 4.2},
                                                                    "backend": "litert", "golden": {}}}}}}}}
    rows = report.host_entries("deploy", ["a", "b"], data, 25)
    assert rows[0]["status"] == "changed" and rows[0]["bundles"][0]["release"] == "r2"
    assert rows[1] == {"host": "b", "status": "not run", "bundles": [],
                       "reason": "the play stopped before this host (more than 25% of a batch failed)"}
    result = {"action": "deploy", "hosts": rows, "summary": report.summarize(rows), "seconds": 2.0,
              "seconds_per_host": 1.0}
    table = report.table(result)
    assert "switched from r1" in table and "NOT RUN: the play stopped" in table and "4.200" in table
    assert "1 not run" in report.summary_line(result)


@needs_ansible
@pytest.mark.parametrize("argv, message", [
    (["fleet", "deploy", "missing.ini", "BUNDLE"], "inventory not found: missing.ini"),
    (["fleet", "deploy", "INV", "b", "--serial", "0"], "--serial expects"),
    (["fleet", "deploy", "INV", "b", "--serial", "150%"], "--serial expects"),
    (["fleet", "deploy", "INV", "b", "--max-fail-percent", "120"], "--max-fail-percent expects 0..100"),
    (["fleet", "status", "INV", "--limit", "nosuchhost"], "no hosts in"),
    (["fleet", "deploy", "INV", "EMPTY"], "no manifest.json"),
    (["fleet", "deploy", "INV", "BUNDLE", "--golden", "b1=nope.npz"], "golden file not found"),
    (["fleet", "rollback", "INV", "../x"], "rollback expects a bundle name"),
    (["fleet", "status", "BROKEN"], "cannot read inventory"),
])
def test_user_mistakes_are_one_line_and_exit_2(argv, message, tmp_path, capsys):
    inventory = tmp_path / "inventory.ini"
    inventory.write_text("[pis]\npi ansible_host=127.0.0.9\n")
    broken = tmp_path / "broken.ini"
    broken.write_text("[pis\npi ansible_host=\n")
    bundle = tmp_path / "b1"
    bundle.mkdir()
    (bundle / "model.tflite").write_bytes(b"x")
    manifest = {"format": "tflite", "variant": "fp32", "model_file": "model.tflite", "inputs": [], "outputs": []}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "empty").mkdir()
    subst = {"INV": str(inventory), "BUNDLE": str(bundle), "EMPTY": str(tmp_path / "empty"), "BROKEN": str(broken)}
    argv = [next((v.replace(k, subst[k]) for k in subst if k in v), v) for v in argv]
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and message in err[0], err


# ------------------------------------------------------------------------------ the served release

class Client:
    """Sends :predict requests in a loop on one keep-alive connection; records every answer."""

    def __init__(self, port: int, name: str, x: np.ndarray):
        self.port, self.path, self.body = port, f"/v1/models/{name}:predict", json.dumps({"instances": x.tolist()})
        self.answers: list[tuple[int, np.ndarray | str]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while not self.stop.is_set():
            try:
                conn.request("POST", self.path, self.body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                data = response.read()
                self.answers.append((response.status, np.asarray(json.loads(data)["predictions"], np.float32)
                                     if response.status == 200 else data.decode()))
            except (OSError, http.client.HTTPException, ValueError) as exc:
                self.answers.append((0, f"{type(exc).__name__}: {exc}"))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.close()

    def which(self, expected: dict[str, np.ndarray]) -> list[str]:
        """Per answer, the release whose outputs it equals ('?' for none, 'failed' for an error)."""
        out = []
        for status, value in self.answers:
            if status != 200:
                out.append("failed")
                continue
            match = [name for name, y in expected.items()
                     if y.shape == value.shape and np.allclose(y, value, atol=1e-6)]
            out.append(match[0] if match else "?")
        return out


def _serve(argv: list[str], log: Path, user: str | None = None) -> tuple[subprocess.Popen, int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=open(log, "w"), env=env, user=user,
                            cwd="/")
    deadline = time.time() + 60
    while time.time() < deadline:
        text = log.read_text()
        if "on http://127.0.0.1:" in text:
            return proc, int(text.split("on http://127.0.0.1:")[1].split()[0])
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    _stop(proc)
    raise AssertionError(f"server did not start: {log.read_text()[-1000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait_for(client: Client, expected: dict, name: str, seconds: float = 20) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline and name not in client.which(expected)[-3:]:
        time.sleep(0.1)


def _expected(bundle: Path, x: np.ndarray) -> np.ndarray:
    from edgekit import runtime

    with runtime.load(bundle) as model:
        return np.asarray(model.predict_tensors(x), np.float32)


def _releases(rt_bundles: Path, base: Path) -> dict[str, Path]:
    """Two releases of bundle `dense` (the fp32 model, then the int8 one: its outputs differ) and
    one of `tokens`, named like the folders users deploy."""
    out = {}
    for key, source in (("v1/dense", "dense-tflite-fp32"), ("v2/dense", "dense-tflite-int8"),
                        ("v1/tokens", "tokens-tflite-fp32")):
        dest = base / key
        shutil.copytree(rt_bundles / source, dest)
        out[key] = dest
    return out


def test_the_server_follows_a_current_link_without_failed_requests(rt_bundles, tmp_path):
    """`serve .../NAME/current`: served as NAME; when the link is renamed over, the new release
    answers and no request fails (runtime/serve/reload.py), here on the controller's own Python."""
    releases = _releases(rt_bundles, tmp_path / "src")
    folder = tmp_path / "bundles" / "dense"
    (folder / "releases").mkdir(parents=True)
    for key in ("v1/dense", "v2/dense"):
        shutil.copytree(releases[key], folder / "releases" / key.split("/")[0])
    os.symlink("releases/v1", folder / "current")
    x = np.load(rt_bundles / "model-dense" / "heldout.npz")["x"][:4]
    expected = {"v1": _expected(releases["v1/dense"], x), "v2": _expected(releases["v2/dense"], x)}
    assert np.abs(expected["v1"] - expected["v2"]).max() > 1e-3  # the two releases are told apart
    proc, port = _serve([sys.executable, "-m", "edgekit.runtime", "serve", str(folder / "current"), "--port", "0",
                         "--threads", "2"], tmp_path / "serve.log")
    client = Client(port, "dense", x)
    try:
        client.thread.start()
        _wait_for(client, expected, "v1")
        os.symlink("releases/v2", folder / "current.new")
        os.replace(folder / "current.new", folder / "current")  # what the role does on a device
        _wait_for(client, expected, "v2")
    finally:
        client.stop.set()
        client.thread.join(timeout=15)
        _stop(proc)
    seen = client.which(expected)
    assert seen and "failed" not in seen and "?" not in seen, client.answers[:3]
    assert seen[0] == "v1" and seen[-1] == "v2" and seen.index("v2") > 0
    assert "v1" not in seen[seen.index("v2"):]  # once switched, only the new release answers
    assert "dense: now serving" in (tmp_path / "serve.log").read_text()


def _host_module():
    import importlib.util

    path = PLAYBOOKS["deploy"].parent / "roles" / "edgekit" / "library" / "edgekit_host.py"
    spec = importlib.util.spec_from_file_location("edgekit_host", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@needs_ansible
def test_a_release_that_fails_its_golden_check_is_not_switched_to(rt_bundles, tmp_path):
    """The device side without ssh: `deploy` of a good release switches `current`; a release whose
    golden check fails on the device stays beside it, recorded as failed, with a one-line reason; and
    `rollback` without a previous release says so."""
    from edgekit.devices.check import stage_runtime

    host = _host_module()
    root = tmp_path / "edgekit"
    edgekit_dir, site = root / "runtime" / "edgekit-k", root / "runtime" / "site-s"
    stage_runtime(edgekit_dir)
    site.mkdir()
    for folder in (edgekit_dir, site):
        (folder / ".complete").touch()
    # the launcher's keys name the runtime: this test's own Python with its own backends
    (root / "bin").mkdir()
    (root / "bin" / "edgekit-runtime").write_text(host.KEYS_LINE + json.dumps(
        {"site": "s", "edgekit": "k", "python": sys.executable}) + "\n")
    releases = _releases(rt_bundles, tmp_path / "src")
    good = prepare.bundle_release(str(releases["v1/dense"]))
    params = {"root": str(root), "name": "dense", "device": None, "bench_runs": 3, "keep": 3, "archive": None}
    with pytest.raises(host.HostError, match="no previous release of dense to roll back to .none deployed"):
        host.rollback(params, False)
    result = host.deploy({**params, "release": good["release"], "payload": good["inline"]}, False)
    assert result["changed"] and result["edgekit"]["current"] == good["release"]
    # a golden file whose reference is not what the new release computes (every row shifted by one)
    with np.load(good["golden"]) as data:
        arrays = dict(data)
    arrays["reference"] = np.roll(arrays["reference"], 1, axis=0)
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, **arrays)
    bad = prepare.bundle_release(str(releases["v2/dense"]), golden=str(wrong))
    with pytest.raises(host.HostError) as failed:
        host.deploy({**params, "release": bad["release"], "payload": bad["inline"]}, False)
    reason = str(failed.value)
    assert reason.startswith("golden check failed: ") and "\n" not in reason, reason
    assert failed.value.details["record"]["passed"] is False
    state = host.bundle_state(str(root), "dense")
    assert state["current"] == good["release"] and bad["release"] in state["releases"]  # kept, not switched
    assert os.readlink(root / "bundles" / "dense" / "current") == f"releases/{good['release']}"
    again = host.deploy({**params, "release": good["release"]}, False)
    assert not again["changed"]  # already current: nothing to do, nothing uploaded


# -------------------------------------------------------------------------------------- the fleet

@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    why = fleet_hosts.missing_tools() or (None if ANSIBLE else "ansible-core not installed")
    if why:
        pytest.skip(why)
    hosts = fleet_hosts.Hosts(tmp_path_factory.mktemp("fleet"), 4)
    try:
        yield hosts
    finally:
        hosts.stop()


def _fleet(argv: list[str], out: Path, capsys) -> tuple[int, dict, str, str]:
    rc = main([*argv, "--json", str(out)])
    captured = capsys.readouterr()
    assert out.is_file(), captured.err[-3000:]
    return rc, json.loads(out.read_text()), captured.out, captured.err


def _by_host(report: dict) -> dict[str, dict]:
    return {h["host"]: h for h in report["hosts"]}


def _bundles(entry: dict) -> dict[str, dict]:
    return {b["bundle"]: b for b in entry["bundles"]}


@needs_ansible
@pytest.mark.timeout(900)
@pytest.mark.cost(90)
def test_a_fleet_deploys_verifies_serves_and_rolls_back(rt_bundles, fleet, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ANSIBLE_SSH_CONTROL_PATH_DIR", str(fleet.control_dir))
    # no -C: every archive is gzipped already, so ssh compression only costs CPU
    monkeypatch.setenv("ANSIBLE_SSH_ARGS", "-o ControlMaster=auto -o ControlPersist=300s")
    releases = _releases(rt_bundles, tmp_path / "src")
    v1, v2, tokens = (prepare.content_hash(releases[k]) for k in ("v1/dense", "v2/dense", "v1/tokens"))
    inventory = str(fleet.inventory)
    hosts = {h["name"]: h for h in fleet.hosts}
    timings = {}

    # 1. first deploy: runtime and both bundles on every host, golden check there, `current` switched
    rc, report, out, err = _fleet(["fleet", "deploy", inventory, str(releases["v1/dense"]), str(releases["v1/tokens"])],
                             tmp_path / "first.json", capsys)
    assert rc == 0 and report["passed"], out
    timings["first"] = report["seconds"]
    for name, entry in _by_host(report).items():
        assert entry["status"] == "changed" and entry["architecture"] == platform.machine()
        b = _bundles(entry)
        assert (b["dense"]["release"], b["tokens"]["release"]) == (v1, tokens)
        assert b["dense"]["golden"] == "pass" and b["dense"]["max_abs_error"] == 0
        assert b["dense"]["latency_ms"]["p50"] > 0 and b["dense"]["backend"] == "litert"
        root = hosts[name]["root"]
        assert os.readlink(root / "bundles" / "dense" / "current") == f"releases/{v1}"
        assert os.access(root / "bin" / "edgekit-runtime", os.X_OK)
    assert "switched (first release)" in out

    # 2. the same again, with plain ansible-playbook and the role's own preparation: nothing changes
    # anywhere (Ansible's recap: changed=0 on every host)
    extra = tmp_path / "vars.json"
    extra.write_text(json.dumps({"edgekit_bundles": [str(releases["v1/dense"]), str(releases["v1/tokens"])]}))
    start = time.perf_counter()
    proc = subprocess.run([ANSIBLE, "-i", inventory, str(PLAYBOOKS["deploy"]), "-e", f"@{extra}"],
                          capture_output=True, text=True, timeout=600)
    timings["no change"] = time.perf_counter() - start
    recap = [line for line in proc.stdout.splitlines() if re.match(r"^pi\d\s+: ok=", line)]
    assert proc.returncode == 0 and len(recap) == len(hosts), proc.stdout[-3000:]
    assert all(" changed=0 " in line and " failed=0 " in line for line in recap), recap

    # 3. a new release of `dense` while pi2 serves it and pi5's release folder is read-only
    pi2, pi5 = hosts["pi2"], hosts["pi5"]
    x = np.load(rt_bundles / "model-dense" / "heldout.npz")["x"][:4]
    expected = {v1: _expected(releases["v1/dense"], x), v2: _expected(releases["v2/dense"], x)}
    proc, port = _serve([str(pi2["root"] / "bin" / "edgekit-runtime"), "serve",
                         str(pi2["root"] / "bundles" / "dense" / "current"), "--port", "0", "--threads", "2"],
                        tmp_path / "pi2-serve.log", user=pi2["user"] if fleet.as_root else None)
    client = Client(port, "dense", x)
    read_only = pi5["root"] / "bundles" / "dense" / "releases"
    os.chmod(read_only, 0o555)
    try:
        client.thread.start()
        _wait_for(client, expected, v1)
        rc, report, out, err = _fleet(["fleet", "deploy", inventory, str(releases["v2/dense"]),
                                       str(releases["v1/tokens"]), "--serial", "2", "--max-fail-percent", "50"],
                                      tmp_path / "new.json", capsys)
        _wait_for(client, expected, v2)
    finally:
        client.stop.set()
        client.thread.join(timeout=15)
        _stop(proc)
        os.chmod(read_only, 0o755)
    timings["new release"] = report["seconds"]
    assert rc == 1 and not report["passed"], out  # one host failed; the others moved
    entries = _by_host(report)
    failed = entries["pi5"]
    assert failed["status"] == "failed" and "read-only" in failed["reason"] and str(read_only) in failed["reason"]
    assert _bundles(failed)["dense"]["release"] == v1  # kept its previous release
    assert os.readlink(pi5["root"] / "bundles" / "dense" / "current") == f"releases/{v1}"
    for name in ("pi2", "pi3", "pi4"):
        b = _bundles(entries[name])
        assert b["dense"]["release"] == v2 and b["dense"]["previous"] == v1 and b["dense"]["golden"] == "pass"
        assert b["tokens"]["release"] == tokens and not b["tokens"]["changed"]
    assert "FAILED: cannot write to" in out and f"(kept {v1})" in out
    assert err.count("TASK [edgekit : golden check on the device") == 2  # --serial 2: two batches of two
    seen = client.which(expected)
    assert "failed" not in seen and "?" not in seen, [a for a in client.answers if a[0] != 200][:3]
    assert seen[0] == v1 and seen[-1] == v2 and v1 not in seen[seen.index(v2):]

    # 4. rollback: pi2..pi4 return to v1; pi5 has no previous release of dense, and says so; a host
    # that is switched off (nothing listens on 127.0.0.6) is reported unreachable
    with_dead = tmp_path / "with-dead-host.ini"
    with_dead.write_text(fleet.inventory.read_text().replace("[pis]\n", "[pis]\npi6 ansible_host=127.0.0.6 "
                                                             f"ansible_port={fleet.hosts[0]['port']}\n"))
    rc, report, out, err = _fleet(["fleet", "rollback", str(with_dead), "dense"], tmp_path / "rollback.json", capsys)
    assert rc == 1, out
    entries = _by_host(report)
    assert entries["pi5"]["status"] == "failed" and "no previous release of dense" in entries["pi5"]["reason"]
    assert entries["pi6"]["status"] == "unreachable" and "127.0.0.6" in entries["pi6"]["reason"]
    assert report["summary"] == {**report["summary"], "ok": 3, "failed": 1, "unreachable": 1}
    for name in ("pi2", "pi3", "pi4"):
        b = _bundles(entries[name])["dense"]
        assert (b["release"], b["previous"], b["changed"]) == (v1, v2, True)
        assert os.readlink(hosts[name]["root"] / "bundles" / "dense" / "current") == f"releases/{v1}"
    timings["rollback"] = report["seconds"]

    # 5. status: per host architecture, release per bundle, its golden result and latency
    rc, report, out, err = _fleet(["fleet", "status", inventory], tmp_path / "status.json", capsys)
    assert rc == 0, out
    for entry in report["hosts"]:
        b = _bundles(entry)
        assert entry["architecture"] == platform.machine() and b["dense"]["release"] == v1
        assert b["dense"]["golden"] == "pass" and b["dense"]["latency_ms"]["p50"] > 0
        assert b["tokens"]["release"] == tokens
    timings["status"] = report["seconds"]
    n = len(fleet.hosts)
    shown = ", ".join(f"{k} {v:.1f} ({v / n:.1f} per host)" for k, v in timings.items())
    print(f"fleet timings (s, {n} hosts): {shown}")
