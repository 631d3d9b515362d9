"""Slow device tests: bundles run under user-mode QEMU (Raspberry Pi 4/5 aarch64, 32-bit armv7) inside a
Python assembled from Debian packages and PyPI wheels (downloaded once into ~/.cache/edgekit/devices),
and `edgekit deploy` against an sshd that the test starts on loopback.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgekit.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parent))
import device_bundles as bundle_builder  # noqa: E402  (the bundle builder, run in a child process)

pytestmark = pytest.mark.slow

INT8_TFLITE = ["text-tflite-int8", "speech-tflite-int8", "image-tflite-int8"]


def _need_emulation_tools():
    if not (shutil.which("apt-get") and shutil.which("dpkg-deb")):
        from edgekit.devices.emulation import find_qemu

        if not find_qemu("qemu-aarch64"):
            pytest.skip("no apt-get/dpkg-deb to fetch qemu-user and the device Python (not a Debian host)")


@pytest.fixture(scope="session")
def device_bundles(tmp_path_factory) -> Path:
    return bundle_builder.build(tmp_path_factory.mktemp("device-bundles"))


def _check(name: str, bundles: list[Path], tmp_path: Path, capsys) -> tuple[int, dict, str]:
    out = tmp_path / f"{name}.json"
    rc = main(["devices", "check", name, *map(str, bundles), "--json", str(out)])
    captured = capsys.readouterr()
    return rc, json.loads(out.read_text()), captured.out


def test_rpi4_runs_int8_bundles_like_the_host(device_bundles, tmp_path, capsys):
    _need_emulation_tools()
    names = INT8_TFLITE + ["image-onnx-int8", "text-tflite-fp32"]
    rc, summary, out = _check("rpi4", [device_bundles / n for n in names], tmp_path, capsys)
    assert rc == 0, out
    assert summary["passed"] and summary["checked"] == len(names)
    for r in summary["results"]:
        assert r["status"] == "pass", r
        machine = r["machine"]["machine"] if isinstance(r["machine"], dict) else r["machine"]
        assert machine == "aarch64"
        assert r["reference_source"] == "host (same bundle)" and "held-out" in r["inputs"]
        assert r["timing"] == "emulated: timings not meaningful"
    # the fused LSTM op really ran on the emulated Cortex-A72
    ops = json.loads((device_bundles / "text-tflite-int8" / "manifest.json").read_text())["ops"]
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" in ops
    assert "emulated: timings not meaningful" in out and " ms" not in out


def test_rpi5_cortex_a76(device_bundles, tmp_path, capsys):
    _need_emulation_tools()
    rc, summary, out = _check("rpi5", [device_bundles / "speech-tflite-int8"], tmp_path, capsys)
    assert rc == 0, out
    assert summary["emulation"]["cpu"] == "cortex-a76"


def test_armv7_runs_tflite_and_skips_onnx(device_bundles, tmp_path, capsys):
    _need_emulation_tools()
    names = INT8_TFLITE + ["speech-tflite-fp32", "image-onnx-int8"]
    rc, summary, out = _check("rpi3-armv7", [device_bundles / n for n in names], tmp_path, capsys)
    assert rc == 0, out
    by_name = {r["bundle"]: r for r in summary["results"]}
    assert by_name["image-onnx-int8"]["status"] == "skipped"
    for n in names[:-1]:
        assert by_name[n]["status"] == "pass", by_name[n]
        assert "tflite" in str(by_name[n]["backend"])
        machine = by_name[n]["machine"]
        assert (machine["machine"] if isinstance(machine, dict) else machine) == "armv7l"


def test_check_with_a_golden_file(device_bundles, tmp_path, capsys):
    """--golden FILE: the device compares with the file's reference (here made from the fp32 bundle)."""
    _need_emulation_tools()
    import numpy as np

    from edgekit.devices import check

    bundle, manifest = check.read_bundle(device_bundles / "speech-tflite-fp32")
    golden = tmp_path / "golden.npz"
    check.make_golden(bundle, manifest, 6, golden)
    with np.load(golden) as data:
        assert data["x"].shape[0] == 6
    rc, summary, out = _check_golden("rpi4", device_bundles / "speech-tflite-int8", golden, tmp_path, capsys)
    assert rc == 0, out
    assert summary["results"][0]["reference_source"] == "golden file"


def _check_golden(name, bundle, golden, tmp_path, capsys):
    out = tmp_path / "g.json"
    rc = main(["devices", "check", name, str(bundle), "--golden", str(golden), "--json", str(out)])
    return rc, json.loads(out.read_text()), capsys.readouterr().out


@pytest.mark.parametrize("task", ["text", "image", "speech"])
def test_rpi4_on_exported_int8_bundles(task, exported_dir, tmp_path, capsys):
    """The real thing: int8 bundles of the three trained models, as `edgekit export` writes them."""
    _need_emulation_tools()
    folder = exported_dir(task)
    bundles = sorted(p for p in folder.rglob("*-int8") if (p / "manifest.json").is_file())
    assert {p.name for p in bundles} == {f"{task}-tflite-int8", f"{task}-onnx-int8"}
    rc, summary, out = _check("rpi4", bundles, tmp_path, capsys)
    assert rc == 0, out
    assert summary["checked"] == len(bundles)


@pytest.mark.parametrize("task", ["text", "image", "speech"])
def test_armv7_on_exported_tflite_bundles(task, exported_dir, tmp_path, capsys):
    """The 32-bit board runs the real TFLite bundles with tflite-runtime 2.14 (its only LiteRT wheel)."""
    _need_emulation_tools()
    folder = exported_dir(task)
    bundles = [folder / f"{task}-tflite-int8", folder / f"{task}-tflite-fp32"]
    rc, summary, out = _check("rpi3-armv7", bundles, tmp_path, capsys)
    assert rc == 0, out
    assert summary["checked"] == len(bundles)


# ----------------------------------------------------------------------------- deploy over ssh

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def loopback_sshd(tmp_path):
    sshd = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)
    if not sshd or not shutil.which("ssh") or not shutil.which("ssh-keygen") or not shutil.which("scp"):
        pytest.skip("openssh-server / openssh-client not installed (.ci/run installs them)")
    d = tmp_path / "sshd"
    d.mkdir()
    for key in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)], check=True)
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    os.chmod(d / "authorized_keys", 0o600)
    port = _free_port()
    (d / "sshd_config").write_text(
        f"ListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\nAuthorizedKeysFile {d / 'authorized_keys'}\n"
        "PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\n"
        f"PidFile {d / 'sshd.pid'}\nSubsystem sftp internal-sftp\n")
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege-separation folder
    proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(d / "sshd_config"), "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=open(d / "sshd.log", "w"))
    deadline = time.time() + 15
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"sshd exited: {(d / 'sshd.log').read_text()[-500:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.2)
    try:
        yield {"port": port, "key": d / "client_key", "known_hosts": d / "known_hosts",
               "user": getpass.getuser(), "log": d / "sshd.log"}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_deploy_over_ssh_to_loopback(device_bundles, loopback_sshd, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EDGEKIT_SSH_KNOWN_HOSTS", str(loopback_sshd["known_hosts"]))
    remote = tmp_path / "remote dir"  # a space, to prove the quoting
    out = tmp_path / "deploy.json"
    rc = main(["deploy", "x86_64-host", str(device_bundles / "text-tflite-int8"),
               "--ssh", f"{loopback_sshd['user']}@127.0.0.1", "--port", str(loopback_sshd["port"]),
               "--identity", str(loopback_sshd["key"]), "--python", sys.executable,
               "--remote-dir", str(remote), "--runs", "5", "--json", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err + loopback_sshd["log"].read_text()[-1000:]
    result = json.loads(out.read_text())
    assert result["golden"]["passed"] and result["golden"]["max_abs_error"] == 0
    assert result["bench"]  # latency measured on the (loopback) device
    assert "golden: PASS" in captured.out and "bench (measured on the device)" in captured.out
    assert (remote / "edgekit" / "runtime" / "__init__.py").is_file()
    assert (remote / "bundle" / "text-tflite-int8" / "manifest.json").is_file()
    assert sorted(p.name for p in (remote / "edgekit").iterdir()) == ["__init__.py", "runtime"]  # nothing host-side

