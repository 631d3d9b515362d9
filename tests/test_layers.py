"""The architecture holds: read from every module's AST (imports inside functions included),
- no import cycle between modules;
- imports only go down the layers: a component imports components of lower layers, and a component
  of its own layer only where PEERS declares it;
- the runtime (the device side) imports no host-side library;
and each rule catches what it is for (the self-test cases at the end).

Components, bottom to top (docs/design.md): inside the runtime, its modules and subpackages in the
order of RUNTIME_LAYERS; above it the host packages, core < train < export < devices < verify < the
`edgekit` package itself (CLI, pipeline, bench). devices sits below verify because `verify --device`
recommends a bundle per device profile.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = "edgekit.runtime"
# The runtime's components (its modules and subpackages), bottom to top; one tuple per layer.
RUNTIME_LAYERS = [
    ("errors", "units", "compare", "timing", "synthetic"),
    ("", "child", "samples", "formats", "preprocess"),     # "": the package's own __init__
    ("profiles",),
    ("settings",),
    ("backends",),
    ("bundle", "heads"),
    ("kinds", "gates"),
    ("golden", "sandbox", "commandline"),
    ("model", "listen"),
    ("serve",),
    ("cli",),
    ("__main__",),
]
# Packages whose modules are layered among themselves (bottom to top), inside their package's layer.
SUB_LAYERS = {
    f"{RUNTIME}.serve": ["options", "inputs", "reply", "metrics", "pool", "reload", "auth", "catalog", "tensors",
                         "tfserving", "oip", "app", "httpd", "server", ""],   # "": the package's __init__
}
HOST_LAYERS = ["edgekit.core", "edgekit.train", "edgekit.export", "edgekit.devices", "edgekit.verify", "edgekit"]
# Imports between components of one layer that are allowed (importer, imported).
PEERS = {
    (f"{RUNTIME}.model", f"{RUNTIME}.listen"),   # EdgeModel.listen(): the streaming word detector
}
# Third-party libraries the device side must never import, and the modules allowed one of them:
# the TensorFlow backend (the last-resort TFLite interpreter, chosen only where nothing lighter
# exists), the TFLite graph reader (TensorFlow's copy of the flatbuffer schema where ai-edge-litert is
# absent), the ONNX graph reader (host-side use: a device never reads an ONNX graph).
HOST_ONLY = {"tensorflow", "keras", "tf_keras", "tf2onnx", "onnx", "matplotlib"}
RUNTIME_EXCEPTIONS = {f"{RUNTIME}.backends.tensorflow_lite": {"tensorflow"},
                      f"{RUNTIME}.formats.tflite": {"tensorflow"}, f"{RUNTIME}.formats.onnx": {"onnx"}}
OLD_TOP_LEVEL = ("train", "export", "runtime", "verify", "devices", "core")


def _package_dirs() -> dict[str, Path]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return {name: ROOT / folder for name, folder in config["package-dir"].items()}


def _modules() -> dict[str, Path]:
    """Every module of the distribution: dotted name -> file."""
    found = {}
    for package, folder in _package_dirs().items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            found[".".join([package, *[p for p in rel.parts if p != "__init__"]])] = path
    return found


def _imports(module: str, path: Path, known: set[str]) -> list[tuple[int, str]]:
    """(line, imported name): `from P import m` names the module P.m when there is one, else P."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = ".".join(base[:len(base) - node.level + 1] + ([node.module] if node.module else [])) \
                if node.level else node.module or ""
            for alias in node.names:
                full = f"{target}.{alias.name}"
                out.append((node.lineno, full if full in known else target))
    return out


def import_graph(modules: dict[str, Path]) -> dict[str, list[tuple[int, str]]]:
    known = set(modules)
    return {m: list(dict.fromkeys(_imports(m, p, known))) for m, p in modules.items()}


def component(module: str) -> tuple[float, str]:
    """(layer, component name) of a module of the distribution; a module of a SUB_LAYERS package sits
    in its own sub-layer, between its package's layer and the next."""
    for package, order in SUB_LAYERS.items():
        if module == package or module.startswith(package + "."):
            level, _ = _top_component(package)
            part = module[len(package) + 1:].split(".")[0] if module != package else ""
            assert part in order, f"{module}: add {part!r} to SUB_LAYERS[{package!r}]"
            return level + (order.index(part) + 1) / (len(order) + 1), f"{package}.{part}" if part else package
    return _top_component(module)


def _top_component(module: str) -> tuple[int, str]:
    if module == RUNTIME or module.startswith(RUNTIME + "."):
        part = module[len(RUNTIME) + 1:].split(".")[0] if module != RUNTIME else ""
        for i, layer in enumerate(RUNTIME_LAYERS):
            if part in layer:
                return i, f"{RUNTIME}.{part}" if part else RUNTIME
        raise AssertionError(f"{module}: add its component {part!r} to RUNTIME_LAYERS")
    for i, layer in sorted(enumerate(HOST_LAYERS), key=lambda item: -len(item[1])):
        if module == layer or module.startswith(layer + "."):
            return len(RUNTIME_LAYERS) + i, layer
    raise AssertionError(f"{module} is in no layer")


def cycles(graph: dict[str, list[tuple[int, str]]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each as a list of modules."""
    edges = {m: sorted({t for _, t in imports if t in graph and t != m}) for m, imports in graph.items()}
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def layer_problems(graph: dict[str, list[tuple[int, str]]], where=lambda m, line: f"{m}:{line}") -> list[str]:
    problems = []
    for module, imports in sorted(graph.items()):
        mine, my_component = component(module)
        for line, target in imports:
            top = target.split(".")[0]
            if top in OLD_TOP_LEVEL:
                problems.append(f"{where(module, line)} imports the old top-level package {target!r}")
            elif top == "edgekit" and target != "edgekit":
                theirs, their_component = component(target)
                if theirs > mine:
                    problems.append(f"{where(module, line)}: {module} imports {target}, a higher layer")
                elif theirs == mine and their_component != my_component \
                        and (my_component, their_component) not in PEERS:
                    problems.append(f"{where(module, line)}: {module} imports {target}, an undeclared peer "
                                    f"({my_component} -> {their_component}; declare it in PEERS or move a layer)")
            elif my_component.startswith(RUNTIME) and top in HOST_ONLY - RUNTIME_EXCEPTIONS.get(module, set()):
                problems.append(f"{where(module, line)}: the runtime imports host-only library {top!r}")
    return problems


def _where(modules):
    return lambda module, line: f"{modules[module].relative_to(ROOT)}:{line}"


def test_every_package_is_listed_for_the_wheel():
    """A subpackage folder missing from pyproject's explicit list would be left out of the wheel."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    on_disk = {name.rsplit(".", 1)[0] if path.name != "__init__.py" else name for name, path in _modules().items()}
    assert on_disk <= listed, sorted(on_disk - listed)


def test_no_import_cycles():
    modules = _modules()
    assert len(modules) > 60
    found = cycles(import_graph(modules))
    assert not found, "import cycles (imports inside functions count):\n" + "\n".join(" <-> ".join(c) for c in found)


def test_imports_only_go_down_the_layers():
    modules = _modules()
    problems = layer_problems(import_graph(modules), _where(modules))
    assert not problems, "\n".join(problems)


# --- the rules catch what they are for --------------------------------------------------------------------

def _fake(tmp_path, sources: dict[str, str]) -> dict[str, list[tuple[int, str]]]:
    paths = {}
    for module, source in sources.items():
        path = tmp_path / (module.replace(".", "_") + ".py")
        path.write_text(source)
        paths[module] = path
    return import_graph(paths)


def test_a_cycle_is_found_even_through_an_import_inside_a_function(tmp_path):
    graph = _fake(tmp_path, {
        f"{RUNTIME}.kinds": "from edgekit.runtime import heads\n",
        f"{RUNTIME}.heads": "def f():\n    from edgekit.runtime.kinds import KINDS\n",
        f"{RUNTIME}.errors": "",
    })
    assert cycles(graph) == [[f"{RUNTIME}.heads", f"{RUNTIME}.kinds"]]


@pytest.mark.parametrize("module, source, message", [
    ("edgekit.export.x", "from edgekit.verify import core\n", "a higher layer"),
    (f"{RUNTIME}.preprocess.text", "def f():\n    from edgekit.runtime.kinds import KINDS\n", "a higher layer"),
    (f"{RUNTIME}.bundle", "from edgekit.runtime.heads import HEADS\n", "an undeclared peer"),
    (f"{RUNTIME}.kinds", "import edgekit.runtime.gates\n", "an undeclared peer"),
    (f"{RUNTIME}.serve.inputs", "from edgekit.runtime.serve.app import App\n", "a higher layer"),   # SUB_LAYERS
    ("edgekit.export.x", "import export.tflite\n", "old top-level"),
    (f"{RUNTIME}.bundle", "import tensorflow\n", "host-only"),
])
def test_the_layer_rules_catch_violations(tmp_path, module, source, message):
    problems = layer_problems(_fake(tmp_path, {module: source}))
    assert len(problems) == 1 and message in problems[0], problems


def test_declared_peers_and_lower_layers_pass(tmp_path):
    graph = _fake(tmp_path, {f"{RUNTIME}.model": "from edgekit.runtime.listen import listen\n"
                                                "from edgekit.runtime import kinds, errors\n",
                             "edgekit.verify.x": "from edgekit.devices import estimate\nimport numpy\n"})
    assert layer_problems(graph) == []
