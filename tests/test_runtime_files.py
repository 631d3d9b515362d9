"""Untrusted model files: every mutated, truncated, foreign or garbage file must give a clean one-line
EdgekitError (the sandbox probe runs each in a child process, so even a backend crash cannot kill
the test process)."""

from __future__ import annotations

import time

import numpy as np

from edgekit import runtime
from edgekit.runtime.errors import EdgekitError


def _mutations(tflite: bytes, onnx: bytes) -> list[tuple[str, str, bytes]]:
    rng = np.random.default_rng(0)
    out = [("empty", ".tflite", b""), ("empty", ".onnx", b""),
           ("onnx-renamed", ".tflite", onnx), ("tflite-renamed", ".onnx", tflite),
           ("garbage", ".tflite", rng.bytes(3000)), ("garbage", ".onnx", rng.bytes(3000)),
           ("text", ".onnx", b'{"not": "a model"}'),
           ("header-only", ".tflite", tflite[:8]), ("header+garbage", ".tflite", tflite[:8] + rng.bytes(2000))]
    for frac in (0.05, 0.2, 0.35, 0.5, 0.65, 0.8, 0.95):
        out.append((f"truncated@{frac}", ".tflite", tflite[:int(len(tflite) * frac)]))
        out.append((f"truncated@{frac}", ".onnx", onnx[:int(len(onnx) * frac)]))
    for k in range(6):
        for name, suffix, data in (("tflite", ".tflite", tflite), ("onnx", ".onnx", onnx)):
            buf = bytearray(data)
            for pos in rng.integers(0, len(buf), size=8):
                buf[pos] = int(rng.integers(0, 256))
            out.append((f"flipped-{name}-{k}", suffix, bytes(buf)))
    return out


def test_mutated_model_files_fail_cleanly(rt_bundles, tmp_path):
    tflite = (rt_bundles / "dense-tflite-fp32" / "model.tflite").read_bytes()
    onnx = (rt_bundles / "dense-onnx-fp32" / "model.onnx").read_bytes()
    start = time.perf_counter()
    outcomes = {}
    for i, (name, suffix, data) in enumerate(_mutations(tflite, onnx)):
        path = tmp_path / f"{i:02d}-{name}{suffix}"
        path.write_bytes(data)
        try:
            with runtime.load(path) as model:
                # A flipped byte may leave a loadable model (e.g. one weight changed): it must then
                # run, or fail cleanly, on a valid input.
                model.predict_tensors(np.zeros((1, 8), np.float32))
            outcomes[path.name] = "loaded"
        except EdgekitError as exc:
            assert "\n" not in str(exc) and str(exc), (path.name, str(exc))
            outcomes[path.name] = type(exc).__name__
    rejected = [k for k, v in outcomes.items() if v != "loaded"]
    assert all(outcomes[k] != "loaded" for k in outcomes if "flipped" not in k), outcomes
    assert len(rejected) >= len(outcomes) - 12
    print(f"{len(outcomes)} files in {time.perf_counter() - start:.1f} s; {len(rejected)} rejected")
