"""The architecture holds: every module's imports (read from its AST) go down the layers, never up or
sideways, and the runtime imports no host-side library.

Layers, bottom to top (docs/design.md):
  edgekit.runtime  <  edgekit.core  <  edgekit.train  <  edgekit.export  <  edgekit.devices
  <  edgekit.verify  <  the `edgekit` package itself (CLI, pipeline, bench)
devices sits below verify because `verify --device` recommends a bundle per device profile.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["edgekit.runtime", "edgekit.core", "edgekit.train", "edgekit.export", "edgekit.devices",
          "edgekit.verify", "edgekit"]
# Third-party libraries the device side must never import (the TensorFlow backend is the one
# exception: it is the last-resort TFLite interpreter, chosen only where nothing lighter exists).
HOST_ONLY = {"tensorflow", "keras", "tf_keras", "tf2onnx", "onnx", "matplotlib"}
RUNTIME_EXCEPTIONS = {"edgekit.runtime.backends.tensorflow_lite": {"tensorflow"}}


def _package_dirs() -> dict[str, Path]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return {name: ROOT / folder for name, folder in config["package-dir"].items()}


def _modules() -> dict[str, Path]:
    """Every module of the distribution: dotted name -> file."""
    found = {}
    for package, folder in _package_dirs().items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([package, *parts])
            found[name] = path
    return found


def _layer(module: str) -> int:
    """Index in LAYERS of the most specific layer that holds `module`."""
    best = None
    for i, layer in enumerate(LAYERS):
        if module == layer or module.startswith(layer + "."):
            if best is None or len(layer) > len(LAYERS[best]):
                best = i
    assert best is not None, module
    return best


def _imports(module: str, path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_package = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against this module's package
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "edgekit":  # `from edgekit import runtime` imports the subpackage;
                # `from edgekit import __version__` reads the root package, which everything may
                out += [(node.lineno, f"edgekit.{a.name}" if not a.name.startswith("__") else "edgekit")
                        for a in node.names]
            else:
                out.append((node.lineno, target))
    return out


def test_every_package_is_listed_for_the_wheel():
    """A subpackage folder missing from pyproject's explicit list would be left out of the wheel."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    on_disk = {name.rsplit(".", 1)[0] if path.name != "__init__.py" else name
               for name, path in _modules().items()}
    assert on_disk <= listed, sorted(on_disk - listed)


def test_imports_only_go_down_the_layers():
    modules = _modules()
    assert len(modules) > 40
    problems = []
    for module, path in sorted(modules.items()):
        mine = _layer(module)
        for line, target in _imports(module, path):
            top = target.split(".")[0]
            where = f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{line}"
            if top in ("train", "export", "runtime", "verify", "devices", "core"):
                problems.append(f"{where} imports the old top-level package {target!r}")
            elif top == "edgekit" and target != "edgekit":
                theirs = _layer(target)
                if theirs > mine:
                    problems.append(f"{where}: {module} imports {target}, a higher layer")
                elif theirs == mine and not (target == LAYERS[mine] or target.startswith(LAYERS[mine] + ".")):
                    problems.append(f"{where}: {module} imports {target} sideways")
            elif mine == 0 and top in HOST_ONLY - RUNTIME_EXCEPTIONS.get(module, set()):
                problems.append(f"{where}: the runtime imports host-only library {top!r}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("source, message", [
    ("from edgekit.train import data\n", "higher layer"),
    ("import export.tflite\n", "old top-level"),
    ("import tensorflow\n", "host-only"),
])
def test_the_layer_check_catches_violations(tmp_path, monkeypatch, source, message):
    bad = tmp_path / "bad.py"
    bad.write_text(source)
    real = _modules()
    monkeypatch.setattr(__import__(__name__), "_modules", lambda: {**real, "edgekit.runtime.bad": bad})
    with pytest.raises(AssertionError, match=message):
        test_imports_only_go_down_the_layers()
