"""Device-side helper: runs a bundle with edgekit's `runtime` package on the device (emulated or real).

This file is copied next to a copy of `runtime/` and run by the device's Python, so it may import only
the standard library, numpy, `runtime` and one inference backend (never TensorFlow, never edgekit).

    python edgekit_device.py run    BUNDLE X.npz OUT.npz [--threads N]   -> JSON info on stdout
    python edgekit_device.py golden BUNDLE GOLDEN.npz [--threads N]      -> JSON comparison on stdout
    python edgekit_device.py bench  BUNDLE [--runs N] [--warmup N] [--threads N] -> JSON latency

The model is loaded with `runtime.load(...)` when the runtime package provides it; otherwise a
minimal runner here drives the backend (ai_edge_litert, tflite_runtime or onnxruntime) directly.
The comparison is `runtime.compare.compare`, the same code the host uses.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

# Default tolerances when a golden file's meta names none. A golden computed on the host from the
# SAME bundle should match closely: fp32 kernels differ between x86 and ARM only in summation order
# (~1e-6), integer kernels are meant to be bit-exact but may differ by an output step (1/256).
SAME_BUNDLE_TOLERANCE = {
    "fp32": {"max_abs_error": 1e-4, "min_agreement": 0.99},
    "fp16": {"max_abs_error": 1e-4, "min_agreement": 0.99},
    "dynamic": {"max_abs_error": 2e-2, "min_agreement": 0.99},
    "int8": {"max_abs_error": 2e-2, "min_agreement": 0.99},
    "int16x8": {"max_abs_error": 2e-2, "min_agreement": 0.99},
}
# Against a Keras reference (verify --save-golden) the variant's own quantization error dominates.
KERAS_TOLERANCE = {
    "fp32": {"max_abs_error": 1e-3, "min_agreement": 0.99},
    "fp16": {"max_abs_error": 1e-2, "min_agreement": 0.98},
    "dynamic": {"max_abs_error": 0.1, "min_agreement": 0.95},
    "int8": {"max_abs_error": 0.15, "min_agreement": 0.9},
    "int16x8": {"max_abs_error": 0.1, "min_agreement": 0.95},
}


def _fail(message: str, code: int = 2):
    print(json.dumps({"error": message}))
    sys.exit(code)


def load_manifest(bundle: Path) -> dict:
    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    model = bundle / manifest["model_file"]
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    if manifest.get("sha256") and digest != manifest["sha256"]:
        _fail(f"{model} sha256 {digest[:12]}... does not match the manifest's {manifest['sha256'][:12]}...")
    return manifest


class _TFLiteRunner:
    def __init__(self, path: Path, threads: int | None):
        try:
            from ai_edge_litert.interpreter import Interpreter
            self.backend = "ai_edge_litert"
        except ImportError:
            try:
                from tflite_runtime.interpreter import Interpreter
                self.backend = "tflite_runtime"
            except ImportError:
                _fail("no TFLite backend here: install ai-edge-litert (or tflite-runtime on armv7l)")
        self.version = _version(self.backend.replace("_", "-"))
        self.interp = Interpreter(model_path=str(path), num_threads=threads)
        self.interp.allocate_tensors()
        self.inp = self.interp.get_input_details()
        self.out = self.interp.get_output_details()

    def run(self, x: np.ndarray) -> np.ndarray:
        detail = self.inp[0]
        x = _quantize(x, detail["dtype"], detail.get("quantization", (0.0, 0)))
        if tuple(detail["shape"]) != x.shape:
            self.interp.resize_tensor_input(detail["index"], x.shape)
            self.interp.allocate_tensors()
        self.interp.set_tensor(detail["index"], x)
        self.interp.invoke()
        o = self.out[0]
        y = self.interp.get_tensor(o["index"])
        scale, zero = o.get("quantization", (0.0, 0))
        if np.issubdtype(y.dtype, np.integer) and scale:
            y = (y.astype(np.float32) - zero) * scale
        return np.asarray(y, dtype=np.float32)


class _OnnxRunner:
    def __init__(self, path: Path, threads: int | None):
        try:
            import onnxruntime as ort
        except ImportError:
            _fail("onnxruntime is not installed on this device (no wheel for this platform?)")
        self.backend, self.version = "onnxruntime", ort.__version__
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        self.inp = self.sess.get_inputs()[0]

    def run(self, x: np.ndarray) -> np.ndarray:
        dtype = {"tensor(float)": np.float32, "tensor(int32)": np.int32, "tensor(int64)": np.int64,
                 "tensor(int8)": np.int8, "tensor(uint8)": np.uint8}.get(self.inp.type, np.float32)
        y = self.sess.run(None, {self.inp.name: np.asarray(x).astype(dtype)})[0]
        return np.asarray(y, dtype=np.float32)


class _RuntimeRunner:
    """edgekit's runtime.load(...) when the package provides it."""

    def __init__(self, runtime, bundle: Path, manifest: dict, threads: int | None):
        self.model = runtime.load(str(bundle), threads=threads)
        self.name = manifest["inputs"][0]["name"]
        self.outputs = manifest.get("outputs") or [{}]
        runner = self.model.runner
        self.backend = getattr(self.model, "backend", None) or type(runner).__name__
        self.version = getattr(runner, "version", None)
        if self.version is None:
            self.version = _version({"ai_edge_litert": "ai-edge-litert", "litert": "ai-edge-litert",
                                     "tflite_runtime": "tflite-runtime"}.get(str(self.backend), str(self.backend)))

    def run(self, x: np.ndarray) -> np.ndarray:
        if hasattr(self.model, "predict_tensors"):
            return np.asarray(self.model.predict_tensors(x), dtype=np.float32)
        y = self.model.runner.run({self.name: x})
        if isinstance(y, dict):
            y = next(iter(y.values()))
        elif isinstance(y, (list, tuple)):
            y = y[0]
        y = np.asarray(y)
        quant = self.outputs[0].get("quantization") or {}
        if np.issubdtype(y.dtype, np.integer) and quant.get("scale"):
            y = (y.astype(np.float32) - quant["zero_point"][0]) * quant["scale"][0]
        return np.asarray(y, dtype=np.float32)


def _quantize(x: np.ndarray, dtype, quantization) -> np.ndarray:
    scale, zero = quantization if quantization else (0.0, 0)
    if np.issubdtype(dtype, np.integer) and np.issubdtype(x.dtype, np.floating) and scale:
        info = np.iinfo(dtype)
        x = np.clip(np.round(x / scale + zero), info.min, info.max)
    return np.asarray(x).astype(dtype)


def _version(dist: str) -> str | None:
    try:
        from importlib import metadata

        return metadata.version(dist)
    except Exception:
        return None


def open_runner(bundle: Path, threads: int | None):
    manifest = load_manifest(bundle)
    try:
        import runtime  # edgekit's runtime package, copied next to this file
    except ImportError:
        runtime = None
    if runtime is not None and hasattr(runtime, "load"):
        return manifest, _RuntimeRunner(runtime, bundle, manifest, threads), "runtime.load"
    path = bundle / manifest["model_file"]
    runner = _TFLiteRunner(path, threads) if manifest["format"] == "tflite" else _OnnxRunner(path, threads)
    return manifest, runner, "edgekit_device"


def run_all(runner, x: np.ndarray) -> np.ndarray:
    """One sample at a time: exported bundles have a fixed batch of 1."""
    return np.concatenate([runner.run(x[i:i + 1]) for i in range(len(x))], axis=0)


def tolerance_for(meta: dict, variant: str) -> dict:
    table = SAME_BUNDLE_TOLERANCE if meta.get("reference_source") == "host-bundle" else KERAS_TOLERANCE
    tol = dict(table.get(variant, table["int8"]))
    given = (meta.get("tolerance") or {}).get(variant)
    if isinstance(given, (int, float)):
        tol["max_abs_error"] = float(given)
    elif isinstance(given, dict):
        for key in ("max_abs_error", "max_abs", "atol"):
            if key in given:
                tol["max_abs_error"] = float(given[key])
        for key in ("min_agreement", "agreement"):
            if key in given:
                tol["min_agreement"] = float(given[key])
    return tol


def _info(manifest: dict, runner, engine: str, threads) -> dict:
    return {"bundle": f"{manifest.get('name')}-{manifest.get('format')}-{manifest.get('variant')}",
            "format": manifest.get("format"), "variant": manifest.get("variant"),
            "engine": engine, "backend": runner.backend, "backend_version": runner.version,
            "threads": threads, "machine": platform.machine(), "python": platform.python_version(),
            "numpy": np.__version__}


def cmd_run(args) -> int:
    manifest, runner, engine = open_runner(Path(args.bundle), args.threads)
    x = np.load(args.x)["x"]
    y = run_all(runner, x)
    np.savez(args.out, y=y)
    print(json.dumps(_info(manifest, runner, engine, args.threads)))
    return 0


def cmd_golden(args) -> int:
    from runtime.compare import compare

    manifest, runner, engine = open_runner(Path(args.bundle), args.threads)
    with np.load(args.golden, allow_pickle=False) as data:
        x, reference = data["x"], data["reference"]
        meta = json.loads(str(data["meta"])) if "meta" in data.files else {}
    if args.samples:
        x, reference = x[:args.samples], reference[:args.samples]
    y = run_all(runner, x).reshape(reference.shape)
    result = compare(reference, y).to_dict()
    tol = tolerance_for(meta, manifest.get("variant", "fp32"))
    passed = result["max_abs_error"] <= tol["max_abs_error"] and result["agreement"] >= tol["min_agreement"]
    result.update(_info(manifest, runner, engine, args.threads), passed=bool(passed), tolerance=tol,
                  reference_source=meta.get("reference_source", "keras"))
    print(json.dumps(result))
    return 0 if passed else 1


def cmd_bench(args) -> int:
    manifest, runner, engine = open_runner(Path(args.bundle), args.threads)
    spec = manifest["inputs"][0]
    shape = [1 if (d is None or d < 0) else d for d in spec["shape"]]
    dtype = np.dtype(spec["dtype"])
    x = np.zeros(shape, dtype=dtype) if np.issubdtype(dtype, np.integer) else \
        np.random.default_rng(0).standard_normal(shape).astype(dtype)
    for _ in range(args.warmup):
        runner.run(x)
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        runner.run(x)
        times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    result = _info(manifest, runner, engine, args.threads)
    result.update(runs=args.runs, median_ms=times[len(times) // 2],
                  p90_ms=times[min(len(times) - 1, int(len(times) * 0.9))], min_ms=times[0])
    print(json.dumps(result))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="edgekit_device")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run")
    p.add_argument("bundle"), p.add_argument("x"), p.add_argument("out")
    p.add_argument("--threads", type=int)
    p = sub.add_parser("golden")
    p.add_argument("bundle"), p.add_argument("golden")
    p.add_argument("--threads", type=int)
    p.add_argument("--samples", type=int)
    p.add_argument("--json", action="store_true", help="accepted for symmetry; output is always JSON")
    p = sub.add_parser("bench")
    p.add_argument("bundle")
    p.add_argument("--threads", type=int)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    return {"run": cmd_run, "golden": cmd_golden, "bench": cmd_bench}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
