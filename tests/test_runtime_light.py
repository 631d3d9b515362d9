"""The runtime stays light: `import edgekit.runtime` loads no backend and no numpy, and loading a bundle
loads only its backend (no TensorFlow, Keras, ONNX tooling or host packages). Which modules the runtime
may import at all is checked in test_layers.py; that it installs and runs alone, in test_packaging.py."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("tensorflow", "keras", "tf_keras", "onnx", "tf2onnx", "matplotlib", "PIL")
HOST = ("edgekit.core", "edgekit.train", "edgekit.export", "edgekit.verify", "edgekit.devices", "edgekit.cli")


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def _top(mods: set[str]) -> set[str]:
    return {m.split(".")[0] for m in mods}


def _host(mods: set[str]) -> set[str]:
    return {m for m in mods if m.startswith(HOST)}


def test_import_runtime_is_light():
    mods = _modules_after("from edgekit import runtime")
    assert not _top(mods) & {"numpy", "ai_edge_litert", "onnxruntime", "tflite_runtime", *HEAVY}, _top(mods)
    assert not _host(mods), _host(mods)


def test_loading_a_tflite_bundle_loads_only_litert(rt_bundles):
    mods = _modules_after(f"from edgekit import runtime\nm = runtime.load({str(rt_bundles / 'image-tflite-int8')!r})\n"
                          "m.predict_tensors(m.example_tensors(2))")
    assert "ai_edge_litert" in _top(mods)
    assert not _top(mods) & {"onnxruntime", *HEAVY}, _top(mods) & {"onnxruntime", *HEAVY}
    assert not _host(mods), _host(mods)
