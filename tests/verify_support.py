"""Tiny trained model directories and bundles for the verify tests (no tests here).

They follow docs/design.md (model.keras + edgekit.json + heldout.npz + calibration.npz; bundles with
manifest.json) so verify is tested on a real trained model and real TFLite files without waiting for
the full train/export packages. `build_converter` is the converter factory that verify's per-layer
debugger calls in its child process (`tests.verify_support:build_converter` on sys.path).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from edgekit.core import quiet_tensorflow, sha256_file

LABELS = ["a", "b", "c"]
FEATURES = 8


def blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three well-separated Gaussian clusters: a small MLP learns them to ~99% with confident outputs."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(LABELS), size=n)
    centres = np.random.default_rng(123).normal(0, 2.5, size=(len(LABELS), FEATURES))
    x = centres[y] + rng.normal(0, 1.0, size=(n, FEATURES))
    return x.astype(np.float32), y.astype(np.int64)


def make_model_dir(out: Path, seed: int = 0, epochs: int = 30) -> Path:
    quiet_tensorflow()
    import keras

    keras.utils.set_random_seed(seed)
    x_train, y_train = blobs(600, seed + 1)
    inputs = keras.Input(shape=(FEATURES,), name="features")
    hidden = keras.layers.Dense(16, activation="relu", name="hidden")(inputs)
    probs = keras.layers.Dense(len(LABELS), activation="softmax", name="probs")(hidden)
    model = keras.Model(inputs, probs)
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=epochs, batch_size=64, verbose=0)
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "model.keras")
    x_test, y_test = blobs(200, seed + 2)
    np.savez(out / "heldout.npz", x=x_test, y=y_test)
    np.savez(out / "calibration.npz", x=x_train[:120])
    metadata = {
        "edgekit_version": "0.1.0", "task": "image", "name": "blobs", "labels": LABELS,
        "input": {"name": "features", "shape": [None, FEATURES], "dtype": "float32"},
        "output": {"name": "probs", "shape": [None, len(LABELS)], "dtype": "float32"},
        "preprocessing": {"type": "tensor"}, "seed": seed, "epochs": epochs,
    }
    (out / "edgekit.json").write_text(json.dumps(metadata))
    return out


def build_converter(model_dir, variant: str, calibration):
    """A configured TFLiteConverter for one variant of a model directory (float32 input/output)."""
    quiet_tensorflow()
    import keras
    import tensorflow as tf

    model = keras.saving.load_model(Path(model_dir) / "model.keras", compile=False, safe_mode=True)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    calibration = np.asarray(calibration, dtype=np.float32)
    if variant == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif variant in ("int8", "int16x8"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([row[None]] for row in calibration)
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8 if variant == "int8" else
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    return converter


def write_bundle(out: Path, model_dir: Path, variant: str, model_bytes: bytes | None = None) -> Path:
    """Convert (or take `model_bytes`) and write a bundle folder per design.md."""
    metadata = json.loads((model_dir / "edgekit.json").read_text())
    if model_bytes is None:
        calibration = np.load(model_dir / "calibration.npz")["x"]
        model_bytes = build_converter(model_dir, variant, calibration).convert()
    from bundle_writer import write_bundle

    bundle = write_bundle(out / f"{metadata['name']}-tflite-{variant}", "tflite", variant, model_bytes, metadata,
                          {"calibration_samples": 120})
    return bundle


class LiteRTModel:
    """Stand-in for runtime.EdgeModel while the runtime package is not in the tree: same
    `predict_tensors` contract (float probabilities for a batch of model inputs)."""

    def __init__(self, bundle):
        from ai_edge_litert.interpreter import Interpreter

        manifest = json.loads((Path(bundle) / "manifest.json").read_text())
        path = Path(bundle) / manifest["model_file"]
        if sha256_file(path) != manifest["sha256"]:
            raise ValueError(f"{path}: sha256 does not match the manifest")
        self.interpreter = Interpreter(model_path=str(path), num_threads=1)
        self.interpreter.allocate_tensors()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def predict_tensors(self, x):
        inp = self.interpreter.get_input_details()[0]
        out = self.interpreter.get_output_details()[0]
        rows = []
        for row in np.asarray(x):
            self.interpreter.set_tensor(inp["index"], row[None].astype(inp["dtype"]))
            self.interpreter.invoke()
            rows.append(self.interpreter.get_tensor(out["index"])[0].copy())
        return np.stack(rows)


def bundle_loader():
    """edgekit.runtime.load when the runtime package has landed, else the LiteRT stand-in."""
    try:
        from edgekit import runtime

        return runtime.load
    except (ImportError, AttributeError):
        return LiteRTModel


def support_pythonpath() -> str:
    """PYTHONPATH that lets a child process import this module as `verify_support`."""
    here = str(Path(__file__).resolve().parent)
    return os.pathsep.join([here, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])


def build_all(out: Path) -> None:
    """model/ + bundles/ (fp32, fp16, dynamic, int8) + other/ (a differently-trained model) +
    drifted/ (other's fp32 bundle, relabelled as a bundle of model/)."""
    model_dir = make_model_dir(out / "model", seed=0)
    for variant in ("fp32", "fp16", "dynamic", "int8"):
        write_bundle(out / "bundles", model_dir, variant)
    other = make_model_dir(out / "other", seed=1, epochs=5)
    write_bundle(out / "drifted", other, "fp32")


if __name__ == "__main__":  # run in a child process by the tests: TensorFlow stays out of pytest
    import sys

    build_all(Path(sys.argv[1]))
