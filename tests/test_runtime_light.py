"""The runtime stays light: `import runtime` loads no backend and no numpy, loading a bundle loads only
its backend, no module imports TensorFlow/Keras/ONNX/host packages, and every module imports in an
environment holding only the `runtime` extra."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from bundles import rt_bundles  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("tensorflow", "keras", "tf_keras", "onnx", "tf2onnx", "train", "export", "edgekit", "verify", "devices")


def _modules_after(code: str) -> set[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, env=env, cwd=str(ROOT), timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def _top(mods: set[str]) -> set[str]:
    return {m.split(".")[0] for m in mods}


def test_import_runtime_is_light():
    top = _top(_modules_after("import runtime"))
    assert not top & {"numpy", "ai_edge_litert", "onnxruntime", "tflite_runtime", *HEAVY}, top


def test_loading_a_tflite_bundle_loads_only_litert(rt_bundles):
    top = _top(_modules_after(f"import runtime\nm = runtime.load({str(rt_bundles / 'image-tflite-int8')!r})\n"
                              "m.predict_tensors(m.example_tensors(2))"))
    assert "ai_edge_litert" in top
    assert not top & {"onnxruntime", *HEAVY}, top & {"onnxruntime", *HEAVY}


def test_no_forbidden_imports_in_source():
    allowed = {"runtime/backends/tensorflow_lite.py": {"tensorflow"}}
    for path in sorted((ROOT / "runtime").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text(), rel)):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level
                     else [])
            for name in names:
                top = name.split(".")[0]
                if top in HEAVY and top not in allowed.get(rel, set()):
                    raise AssertionError(f"{rel}:{node.lineno} imports {name}")


def _runtime_modules() -> list[str]:
    mods = []
    for path in sorted((ROOT / "runtime").rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        if rel.name == "__main__":
            continue
        mods.append(".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts))
    return mods


@pytest.mark.slow
def test_every_module_imports_with_only_the_runtime_extra(tmp_path, rt_bundles):
    """A fresh venv (no system site-packages) with numpy + ai-edge-litert + onnxruntime only."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(env_dir)
    py = env_dir / "bin" / "python"
    pip = subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                          "numpy==2.4.6", "ai-edge-litert==2.3.0", "onnxruntime==1.32.0"],
                         capture_output=True, text=True, timeout=900)
    if pip.returncode != 0:
        pytest.skip(f"cannot install the runtime extra here: {pip.stderr.strip().splitlines()[-1:]}")
    code = ("import importlib, sys\n"
            f"mods = {_runtime_modules()!r}\n"
            "for m in mods: importlib.import_module(m)\n"
            "import runtime.backends as b\n"
            "assert b.available_backends() == ['litert', 'onnxruntime'], b.available_backends()\n"
            "print('ok', len(mods))")
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)}
    out = subprocess.run([str(py), "-c", code], capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=300)
    assert out.returncode == 0 and out.stdout.startswith("ok"), out.stderr[-3000:]
    # The device-side golden check runs there too (what `devices check` / `deploy` rely on).
    out = subprocess.run([str(py), "-m", "runtime", "golden", str(rt_bundles / "image-tflite-int8"),
                          str(rt_bundles / "model-image" / "golden.npz"), "--json"],
                         capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout)["passed"] is True
