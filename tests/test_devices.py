"""Fast tests of devices/: profiles, `devices list/show`, error messages, source-list parsing."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.cli import main
from edgekit.core import UserError
from edgekit.devices import check, emulation
from edgekit.runtime import profiles

REQUIRED_PROFILES = {"rpi4", "rpi5", "rpi3-armv7", "android-arm64", "x86_64-host"}


def test_every_profile_is_valid_and_named_like_its_file():
    assert REQUIRED_PROFILES <= set(profiles.names())
    for path in profiles.PROFILE_DIR.glob("*.json"):
        data = json.loads(path.read_text())
        assert profiles.validate(data) == [], path.name
        assert data["name"] == path.stem


def test_profiles_say_what_runs_where():
    rpi4, rpi5, armv7 = profiles.load("rpi4"), profiles.load("rpi5"), profiles.load("rpi3-armv7")
    assert (rpi4["arch"], rpi4["qemu"]["cpu"], rpi4["cores"]) == ("aarch64", "cortex-a72", 4)
    assert rpi5["qemu"]["cpu"] == "cortex-a76"
    # 32-bit ARM: tflite-runtime 2.14.0 only (needs numpy<2, from Debian), no onnxruntime wheel
    assert armv7["arch"] == "armv7l" and armv7["qemu"]["binary"] == "qemu-arm"
    assert armv7["backends"] == ["tflite_runtime"]
    assert armv7["qemu"]["wheels"] == ["tflite-runtime==2.14.0"]
    assert "python3-numpy" in armv7["qemu"]["debian_packages"]
    assert profiles.backend_for(armv7, "onnx") is None
    assert profiles.backend_for(rpi4, "onnx") == "onnxruntime"
    assert profiles.load("android-arm64")["qemu"] is None
    # every published figure names who published it and where
    for p in profiles.load_all():
        for fig in p["reference_figures"]:
            assert fig["published_by"] and fig["source"]


def test_validate_reports_missing_fields():
    data = json.loads((profiles.PROFILE_DIR / "rpi4.json").read_text())
    del data["cores"]
    data["backends"] = ["cuda"]
    assert any("cores" in p for p in profiles.validate(data))
    data["cores"] = 4
    assert any("backends" in p for p in profiles.validate(data))


def test_runtime_takes_its_defaults_from_the_profile():
    from edgekit.runtime.settings import make_settings

    assert make_settings(device="rpi4").threads == profiles.load("rpi4")["default_threads"] == 4
    assert make_settings(device="rpi4", threads=1).threads == 1


def test_devices_list_and_show(capsys):
    assert main(["devices", "list"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:3] == ["NAME", "ARCH", "CPU"]
    for name in REQUIRED_PROFILES:
        assert name in out
    assert main(["devices", "show", "rpi4"]) == 0
    out = capsys.readouterr().out
    assert "Cortex-A72" in out and "qemu-aarch64 -cpu cortex-a72" in out
    assert "XNNPACK" in out and "44 ms" in out and "github.com/google/XNNPACK" in out


@pytest.mark.parametrize("argv", [["devices", "show", "rpi9"], ["devices", "check", "rpi9", "x"],
                                  ["deploy", "rpi9", "x", "--ssh", "u@h"]])
def test_unknown_device_is_one_line_exit_2(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown device 'rpi9'" in err[0] and "rpi4" in err[0] and "rpi3-armv7" in err[0]


def test_check_rejects_a_folder_without_manifest(tmp_path, capsys):
    assert main(["devices", "check", "rpi4", str(tmp_path)]) == 2
    assert "no manifest.json" in capsys.readouterr().err


def test_android_check_runs_only_what_mediapipe_tasks_can(tmp_path, capsys):
    """Phones are checked through MediaPipe Tasks (devices/phone.py), not emulated: a bundle it
    cannot run (token ids, no task) is skipped with the reason, and nothing checked is a failure."""
    bundle = _fake_bundle(tmp_path)
    assert main(["devices", "check", "android-arm64", str(bundle)]) == 1
    out = capsys.readouterr().out
    assert "SKIP" in out and "not a MediaPipe Tasks model" in out


def _fake_bundle(tmp_path: Path) -> Path:
    bundle = tmp_path / "m-tflite-int8"
    bundle.mkdir()
    (bundle / "model.tflite").write_bytes(b"x")
    (bundle / "manifest.json").write_text(json.dumps({
        "format": "tflite", "variant": "int8", "model_file": "model.tflite", "name": "m",
        "sha256": hashlib.sha256(b"x").hexdigest(),
        "inputs": [{"name": "x", "shape": [1, 12], "dtype": "int32", "quantization": None}],
        "outputs": [{"name": "y", "shape": [1, 3], "dtype": "float32", "quantization": None}]}))
    return bundle


def test_missing_qemu_and_apt_is_one_clear_line(tmp_path, monkeypatch, capsys):
    """No qemu in the cache or on PATH, and no apt-get/dpkg to fetch it: say what to install, exit 2."""
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("EDGEKIT_QEMU_DIR", raising=False)
    bundle = _fake_bundle(tmp_path)
    assert main(["devices", "check", "rpi4", str(bundle)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "qemu-aarch64" in err[0] and "install qemu-user" in err[0] and "apt-get" in err[0]


def test_old_qemu_on_path_is_not_used(tmp_path, monkeypatch):
    """bookworm's qemu-user 7.2 crashes inside the backends: a PATH qemu older than 8 is ignored."""
    fake = tmp_path / "qemu-aarch64"
    fake.write_text("#!/bin/sh\necho 'qemu-aarch64 version 7.2.0 (Debian 1:7.2+dfsg-7)'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("EDGEKIT_QEMU_DIR", raising=False)
    assert emulation.find_qemu("qemu-aarch64") is None
    fake.write_text("#!/bin/sh\necho 'qemu-aarch64 version 10.0.2 (Debian 1:10.0.2+ds-2)'\n")
    assert emulation.find_qemu("qemu-aarch64") == str(fake)


def test_cache_folder_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert emulation.cache_dir() == tmp_path / "edgekit" / "devices"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert emulation.cache_dir() == Path(os.path.expanduser("~")) / ".cache" / "edgekit" / "devices"


DEB822 = """\
Types: deb
# http://snapshot.example.org/archive/debian/20250520T000000Z
URIs: http://mirror.example.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /etc/apt/keyrings/mirror-example.gpg

Types: deb
URIs: http://mirror.example.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""

ONE_LINE = """\
# comment
deb http://security.example.org/debian-security bookworm-security main
deb [arch=amd64 signed-by=/nonexistent.gpg] http://ftp.example.net/debian/ bookworm main contrib
deb-src http://ftp.example.net/debian bookworm main
"""


def test_mirror_from_deb822_sources(tmp_path):
    signed_by = tmp_path / "mirror-example.gpg"
    signed_by.write_bytes(b"key")
    f = tmp_path / "debian.sources"
    f.write_text(DEB822.replace("/etc/apt/keyrings/mirror-example.gpg", str(signed_by)))
    uri, keyring = emulation.debian_mirror([f])
    assert uri == "http://mirror.example.org/debian"
    assert keyring == str(signed_by)  # the source's own Signed-By, not the default
    signed_by.unlink()  # a Signed-By file that is absent falls back to Debian's archive keyring
    assert emulation.debian_mirror([f])[1] == emulation.DEFAULT_KEYRING


def test_mirror_from_one_line_sources_list(tmp_path):
    f = tmp_path / "sources.list"
    f.write_text(ONE_LINE)
    uri, keyring = emulation.debian_mirror([f])
    assert uri == "http://ftp.example.net/debian"  # security entry and trailing slash skipped
    assert keyring == emulation.DEFAULT_KEYRING      # the named keyring does not exist here


def test_parse_sources_skips_disabled_entries():
    entries = emulation.parse_sources("Types: deb\nURIs: http://a/debian\nSuites: trixie\nEnabled: no\n", True)
    assert entries == []


def test_no_debian_mirror_is_a_user_error(tmp_path):
    f = tmp_path / "x.sources"
    f.write_text("Types: deb\nURIs: http://a/debian-security\nSuites: bookworm-security\nComponents: main\n")
    with pytest.raises(UserError, match="no Debian archive"):
        emulation.debian_mirror([f])


def test_random_inputs_follow_the_input_spec(tmp_path):
    import numpy as np

    bundle = _fake_bundle(tmp_path)
    (bundle / "assets").mkdir()
    (bundle / "assets" / "vocab.txt").write_text("\n".join(["", "[UNK]"] + [f"w{i}" for i in range(8)]) + "\n")
    manifest = json.loads((bundle / "manifest.json").read_text())
    x = check.random_inputs(bundle, manifest, 5)
    assert x.shape == (5, 12) and x.dtype == np.int32 and x.min() >= 0 and x.max() < 10
    manifest["inputs"][0].update(dtype="int8", quantization={"scale": [0.1], "zero_point": [0]}, shape=[1, 4])
    x = check.random_inputs(bundle, manifest, 3)
    assert x.dtype == np.float32 and x.shape == (3, 4)  # the runtime quantizes float features itself


def test_staged_runtime_holds_only_the_runtime_package(tmp_path):
    stage = check.stage_runtime(tmp_path / "stage")
    assert sorted(p.name for p in stage.iterdir()) == ["edgekit"]
    assert sorted(p.name for p in (stage / "edgekit").iterdir()) == ["__init__.py", "runtime"]
    assert (stage / "edgekit" / "runtime" / "profiles" / "rpi4.json").is_file()
    # the staged copy runs on its own: the device's `python -m edgekit.runtime` finds nothing else
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = "import edgekit.runtime.profiles as p, edgekit, sys; print(p.names()); import edgekit.train"
    proc = subprocess.run([sys.executable, "-S", "-c", code], cwd=stage, env=env, capture_output=True, text=True)
    assert "rpi4" in proc.stdout and "No module named 'edgekit.train'" in proc.stderr, proc.stderr


def test_deploy_unreachable_host_is_one_line(tmp_path, monkeypatch, capsys):
    import shutil
    import socket

    if not shutil.which("ssh") or not shutil.which("scp"):
        pytest.skip("OpenSSH client not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    monkeypatch.setenv("EDGEKIT_SSH_KNOWN_HOSTS", str(tmp_path / "known_hosts"))
    rc = main(["deploy", "rpi4", str(_fake_bundle(tmp_path)), "--ssh", "nobody@127.0.0.1", "--port", str(port)])
    errors = [l for l in capsys.readouterr().err.splitlines() if "error" in l]
    assert rc == 2 and len(errors) == 1 and "ssh to nobody@127.0.0.1" in errors[0]
