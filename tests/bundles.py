"""Test bundles made without `export/`: tiny Keras models, briefly trained on learnable data so their
outputs are confident, converted to TFLite (fp32, full int8 with int8 io) and ONNX, and written as
bundles per docs/design.md (model file + manifest.json with sha256 and tensor metadata).

Run as a script in a child process (`python tests/bundles.py OUT`) so that the pytest process never
imports TensorFlow: `build_bundles(out)` in the test fixtures does that and caches the result.

Models (all classify into 3 classes; labels "a", "b", "c"):
- `dense`: float32 [N, 8] -> Dense(16) -> Dense(3, softmax); class = argmax of a fixed projection.
- `image`: float32 [N, 16, 16, 3] -> Conv(8) -> GAP -> Dense(3); class = brightest channel.
- `tokens`: int32 [N, 12] -> Embedding(20, 8) -> GAP -> Dense(3); class = most frequent token group.
- `pair`: two inputs, float32 `features` [N, 8] and `extra` [N, 4] -> Dense(16) -> two outputs, `cls`
  (3-class softmax; class = argmax of a fixed projection of both) and `value` (regression); TFLite fp32
  and int8 (`_build_pair`).

Each model also gets a Keras model directory (`model.keras` + `edgekit.json`) for the bench tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

LABELS = ["a", "b", "c"]
# name -> {bundle folder name -> (format, variant)}
VARIANTS = {
    "dense": [("tflite", "fp32"), ("tflite", "int8"), ("onnx", "fp32")],
    "image": [("tflite", "fp32"), ("tflite", "int8"), ("onnx", "fp32")],
    "tokens": [("tflite", "fp32"), ("onnx", "fp32")],
}
PAIR_VARIANTS = [("tflite", "fp32"), ("tflite", "int8")]  # (ONNX: the slowest conversion here)
VERSION = "7"  # bump to invalidate cached bundles when this file changes what it writes


def bundle_names() -> list[str]:
    """The one-output classifiers' bundles (each with a Keras golden file in its model-NAME folder)."""
    return [f"{name}-{fmt}-{variant}" for name, rows in VARIANTS.items() for fmt, variant in rows]


def build_bundles(out: Path, timeout: float = 900) -> Path:
    """Build every test bundle under `out` in a child process (TensorFlow stays out of pytest)."""
    out = Path(out)
    stamp = out / "BUILT"
    if stamp.is_file() and stamp.read_text() == VERSION:
        return out
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, __file__, str(out)], env=env, capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"building test bundles failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    stamp.write_text(VERSION)
    return out


def _fixture():
    import pytest

    @pytest.fixture(scope="session")
    def rt_bundles(request, tmp_path_factory) -> Path:
        """Folder of test bundles, built once and kept in pytest's cache between sessions."""
        cache = getattr(request.config, "cache", None)
        folder = cache.mkdir("edgekit-runtime-bundles") if cache else tmp_path_factory.mktemp("rt-bundles")
        return build_bundles(Path(folder))

    return rt_bundles


if __name__ != "__main__":
    rt_bundles = _fixture()


# --------------------------------------------------------------------------------- child process


def _data(name: str, n: int, rng):
    import numpy as np

    if name == "dense":
        x = rng.normal(size=(n, 8)).astype("float32")
        w = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, -1, 0], [0, 1, -1], [-1, 0, 1],
                      [0.5, 0.5, 0], [0, 0.5, 0.5]], dtype="float32")
        return x, np.argmax(x @ w, axis=1)
    if name == "image":
        y = rng.integers(0, 3, size=n)
        x = rng.uniform(-1, 0.2, size=(n, 16, 16, 3)).astype("float32")
        x[np.arange(n), :, :, y] += 0.8
        return x, y
    if name == "tokens":
        y = rng.integers(0, 3, size=n)
        x = rng.integers(1, 20, size=(n, 12))
        groups = np.array([1 + 6 * k + rng.integers(0, 6, size=(n, 12)) for k in range(3)])
        take = rng.uniform(size=(n, 12)) < 0.7
        x = np.where(take, groups[y, np.arange(n)], x)
        x[:, 9:] = 0  # padding
        return x.astype("int32"), y
    raise ValueError(name)


def _keras_model(name: str):
    import keras

    if name == "dense":
        inp = keras.Input((8,), name="features")
        h = keras.layers.Dense(16, activation="relu")(inp)
    elif name == "image":
        inp = keras.Input((16, 16, 3), name="image")
        h = keras.layers.Conv2D(8, 3, activation="relu", padding="same")(inp)
        h = keras.layers.Conv2D(8, 3, activation="relu", padding="same")(h)
        h = keras.layers.GlobalAveragePooling2D()(h)
    else:
        inp = keras.Input((12,), name="tokens", dtype="int32")
        h = keras.layers.Embedding(20, 8)(inp)
        h = keras.layers.GlobalAveragePooling1D()(h)
    out = keras.layers.Dense(3, activation="softmax", name="probs")(h)
    return keras.Model(inp, out)


def _write_bundle(folder: Path, fmt: str, variant: str, name: str, data: bytes) -> None:
    from bundle_writer import write_bundle

    write_bundle(folder, fmt, variant, data, {"task": "tensor", "name": name, "labels": LABELS,
                                              "preprocessing": None})


def _build(out: Path) -> None:
    import keras
    import numpy as np
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in VARIANTS.items():
        x, y = _data(name, 1200, rng)
        model = _keras_model(name)
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(x, y, epochs=30 if name != "image" else 12, batch_size=64, verbose=0)
        acc = float(np.mean(np.argmax(model.predict(x[:300], verbose=0), 1) == y[:300]))
        print(f"{name}: train accuracy {acc:.3f}", file=sys.stderr)
        model_dir = out / f"model-{name}"
        model_dir.mkdir(exist_ok=True)
        model.save(model_dir / "model.keras")
        shape = list(model.input.shape)
        dtype = "int32" if name == "tokens" else "float32"
        meta = {"edgekit_version": "0.1.0", "task": "tensor", "name": name, "labels": LABELS,
                "input": {"name": model.input.name, "shape": shape, "dtype": dtype},
                "output": {"name": "probs", "shape": [None, 3], "dtype": "float32"},
                "preprocessing": None}
        (model_dir / "edgekit.json").write_text(json.dumps(meta))
        np.savez(model_dir / "heldout.npz", x=x[:64], y=y[:64])
        golden_ref = model.predict(x[:32], verbose=0)
        np.savez(model_dir / "golden.npz", x=x[:32], reference=golden_ref, y=y[:32],
                 meta=json.dumps({"task": "tensor", "labels": LABELS}))

        for fmt, variant in rows:
            folder = out / f"{name}-{fmt}-{variant}"
            if fmt == "tflite":
                conv = tf.lite.TFLiteConverter.from_keras_model(model)
                if variant == "int8":
                    def representative(x=x):
                        for i in range(100):
                            yield [x[i:i + 1]]
                    conv.optimizations = [tf.lite.Optimize.DEFAULT]
                    conv.representative_dataset = representative
                    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
                    conv.inference_input_type = tf.int8
                    conv.inference_output_type = tf.int8
                _write_bundle(folder, fmt, variant, name, conv.convert())
            else:
                import tf2onnx

                spec = [tf.TensorSpec([None] + shape[1:], dtype, name="input")]
                fn = tf.function(lambda t, model=model: model(t, training=False))
                proto, _ = tf2onnx.convert.from_function(fn, input_signature=spec, opset=17)
                _write_bundle(folder, fmt, variant, name, proto.SerializeToString())


def _build_pair(out: Path, rng) -> None:
    """The two-input, two-output model: inputs and outputs by the Keras names in every bundle (the
    TFLite signature's names, with the flatbuffer's tensor names as `tensor_name`)."""
    import keras
    import numpy as np
    import tensorflow as tf

    n = 1200
    x = {"features": rng.normal(size=(n, 8)).astype("float32"), "extra": rng.normal(size=(n, 4)).astype("float32")}
    both = np.concatenate([x["features"], x["extra"]], axis=1)
    cls = np.argmax(both[:, :3] + both[:, 8:11], axis=1)
    value = (0.5 * x["features"][:, 3] + x["extra"][:, 3])[:, None].astype("float32")
    a, b = keras.Input((8,), name="features"), keras.Input((4,), name="extra")
    hidden = keras.layers.Dense(16, activation="relu")(keras.layers.Concatenate()([a, b]))
    model = keras.Model([a, b], {"cls": keras.layers.Dense(3, activation="softmax", name="cls")(hidden),
                                 "value": keras.layers.Dense(1, name="value")(hidden)})
    model.compile("adam", {"cls": "sparse_categorical_crossentropy", "value": "mse"})
    model.fit(x, {"cls": cls, "value": value}, epochs=30, batch_size=64, verbose=0)
    acc = float(np.mean(np.argmax(model.predict({k: v[:300] for k, v in x.items()}, verbose=0)["cls"], 1) == cls[:300]))
    print(f"pair: train accuracy {acc:.3f}", file=sys.stderr)
    for fmt, variant in PAIR_VARIANTS:
        conv = tf.lite.TFLiteConverter.from_keras_model(model)
        if variant == "int8":
            def representative():
                for i in range(100):
                    yield {k: v[i:i + 1] for k, v in x.items()}
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.representative_dataset = representative
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            conv.inference_input_type = tf.int8
            conv.inference_output_type = tf.int8
        _write_bundle(out / f"pair-{fmt}-{variant}", fmt, variant, "pair", conv.convert())


if __name__ == "__main__":
    _build(Path(sys.argv[1]))
    import numpy as np

    _build_pair(Path(sys.argv[1]), np.random.default_rng(1))
