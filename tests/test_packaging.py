"""What users install is what works: the wheel holds only the `edgekit` import root, and a fresh
environment with nothing but `keras-edgekit[runtime]` (installed from that wheel) runs the device side."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(ROOT)],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.fail(f"building the wheel failed: {proc.stderr.strip()[-2000:]}")
    (path,) = out.glob("keras_edgekit-*.whl")
    return path


@pytest.mark.slow
def test_the_wheel_holds_only_the_edgekit_root(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    roots = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert roots == {"edgekit"}, roots
    for needed in ("edgekit/runtime/__main__.py", "edgekit/runtime/profiles/rpi4.json", "edgekit/core/__init__.py",
                   "edgekit/train/text.py", "edgekit/export/worker.py", "edgekit/verify/gates.py",
                   "edgekit/devices/check.py", "edgekit/cli.py"):
        assert needed in names, needed
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "Name: keras-edgekit" in text and "License-Expression: Apache-2.0" in text
    entry_points = zipfile.ZipFile(wheel).read(metadata.replace("METADATA", "entry_points.txt")).decode()
    assert "edgekit = edgekit.cli:main" in entry_points


@pytest.mark.slow
def test_the_runtime_extra_alone_runs_a_text_bundle(wheel, exported_dir, tmp_path):
    """A fresh venv (no system site-packages) with `keras-edgekit[runtime]` from the wheel: the device
    side predicts on a real text bundle, the old top-level `runtime` is gone, and no TensorFlow came."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(env_dir)
    py = env_dir / "bin" / "python"
    pip = subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                          f"keras-edgekit[runtime] @ {wheel.as_uri()}"], capture_output=True, text=True, timeout=900)
    if pip.returncode != 0:
        pytest.skip(f"cannot install the runtime extra here: {pip.stderr.strip().splitlines()[-1:]}")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}
    bundle = exported_dir("text") / "text-tflite-int8"
    out = subprocess.run([str(py), "-m", "edgekit.runtime", "predict", str(bundle),
                          "WINNER!! Claim your free prize now, call 09061701461", "see you at lunch?", "--json"],
                         capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    labels = [p["label"] for p in json.loads(out.stdout)["predictions"]]
    assert labels == ["spam", "ham"], labels
    check = subprocess.run([str(py), "-c", "import importlib.util as u, sys; "
                            "print([m for m in ('runtime', 'train', 'tensorflow', 'keras') if u.find_spec(m)])"],
                           capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=60)
    assert check.stdout.strip() == "[]", check.stdout + check.stderr
