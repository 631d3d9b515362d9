"""One place per concept, checked over the AST: nothing outside a format's own modules and its
registries compares a value against a format's name, and nothing outside the model kinds, the output
heads and training compares against a task's name (they ask the registries instead), with a case
showing each rule catches a comparison."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import test_layers

from edgekit.export import formats as host_formats
from edgekit.runtime import formats
from edgekit.runtime.kinds import KINDS

FORMAT_NAMES = set(formats.FORMATS)
TASK_NAMES = set(KINDS)
# Where each name may be compared: a format's own modules (its device half, host half, its debugger
# and quantizer, its backends' runners) and the registries; the kinds, heads and training for tasks.
FORMAT_PLACES = ("edgekit.runtime.formats", "edgekit.runtime.backends", "edgekit.export.formats",
                 *(m for name in FORMAT_NAMES for m in (f"edgekit.export.{name}", f"edgekit.export.{name}_")))
TASK_PLACES = ("edgekit.runtime.kinds", "edgekit.runtime.heads", "edgekit.train")


def _allowed(module: str, places) -> bool:
    return any(module == p or module.startswith(p if p.endswith("_") else p + ".") for p in places)


def _strings(node) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [s for item in node.elts for s in _strings(item)]
    return []


def name_comparisons(source: str, names: set[str]) -> list[tuple[int, str]]:
    """(line, name) of every comparison (==, !=, in, not in) of something with one of `names`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare) and any(isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn))
                                                 for op in node.ops):
            for operand in (node.left, *node.comparators):
                found += [(node.lineno, s) for s in _strings(operand) if s in names]
    return found


def problems(modules: dict[str, Path]) -> list[str]:
    out = []
    for module, path in sorted(modules.items()):
        source = path.read_text(encoding="utf-8")
        for what, names, places in (("format", FORMAT_NAMES, FORMAT_PLACES), ("task", TASK_NAMES, TASK_PLACES)):
            if not _allowed(module, places):
                out += [f"{path}:{line}: compares with the {what} name {name!r}: ask the registry instead"
                        for line, name in name_comparisons(source, names)]
    return out


def test_registries_agree():
    assert set(host_formats.HOST_MODULES) == FORMAT_NAMES


def test_no_module_outside_the_registries_compares_format_or_task_names():
    found = problems(test_layers._modules())
    assert not found, "\n".join(found)


@pytest.mark.parametrize("module, source, caught", [
    ("edgekit.verify.x", 'def f(entry):\n    return entry.get("format") == "tflite"\n', True),
    ("edgekit.devices.x", 'def f(fmt):\n    return fmt in ("onnx", "other")\n', True),
    ("edgekit.runtime.serve.x", 'def f(kind):\n    return kind != "speech"\n', True),
    ("edgekit.export.tflite", 'def f(fmt):\n    return fmt == "tflite"\n', False),   # its own module
    ("edgekit.runtime.kinds", 'def f(task):\n    return task == "image"\n', False),  # the kinds
    ("edgekit.verify.x", 'LABEL = "image"\nTABLE = {"tflite": 1}\n', False),            # not comparisons
])
def test_the_rule_catches_comparisons_outside_their_place(tmp_path, module, source, caught):
    path = tmp_path / "m.py"
    path.write_text(source)
    assert bool(problems({module: path})) == caught
