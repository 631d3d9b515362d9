"""Bundles for the device tests, made without `export/` (run as a child process: pytest never imports
TensorFlow). `python tests/device_bundles.py OUT` writes, per docs/design.md (model file +
manifest.json with sha256):

- `text`:   int32 token ids [1, 12] -> Embedding(20, 8) -> LSTM(8) -> Dense(3, softmax), built with
            tf_keras and converted from a concrete function of fixed batch 1, which gives TFLite's fused
            UNIDIRECTIONAL_SEQUENCE_LSTM op (Keras 3 LSTMs do not fuse; conversion-facts.md).
- `speech`: float features [1, 10, 4] -> LSTM(8) -> Dense(3, softmax), same route.
- `image`:  float [1, 16, 16, 3] -> Conv(8) -> GAP -> Dense(3, softmax), Keras 3.
Each as tflite fp32 and full-integer int8 (float io); the image model also as ONNX fp32 and int8
(onnxruntime static QDQ quantization). The models are briefly trained on learnable data, so their
outputs are confident (random weights give near-uniform outputs that any variant matches).

This file holds no tests; the device tests import `build` from it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

LABELS = ["a", "b", "c"]
VERSION = "4"
BUNDLES = ["text-tflite-fp32", "text-tflite-int8", "speech-tflite-fp32", "speech-tflite-int8",
           "image-tflite-fp32", "image-tflite-int8", "image-onnx-fp32", "image-onnx-int8"]


def build(out: Path, timeout: float = 1200) -> Path:
    """Build the bundles under `out` in a child process, once (a stamp file marks completion)."""
    out = Path(out)
    stamp = out / "BUILT"
    if stamp.is_file() and stamp.read_text() == VERSION:
        return out
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="", TF_ENABLE_ONEDNN_OPTS="0")
    proc = subprocess.run([sys.executable, __file__, str(out)], env=env, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"building device test bundles failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    stamp.write_text(VERSION)
    return out


# ---------------------------------------------------------------------------- child process only

def _data(kind: str, n: int, rng):
    import numpy as np

    if kind == "text":  # class = which third of the vocabulary is most frequent
        x = rng.integers(2, 20, size=(n, 12))
        y = np.argmax(np.stack([((x >= 2 + 6 * c) & (x < 8 + 6 * c)).sum(1) for c in range(3)], 1), 1)
        return x.astype("int32"), y
    if kind == "speech":  # class = the feature with the largest mean over time
        x = rng.standard_normal((n, 10, 4)).astype("float32")
        y = np.argmax(x.mean(1)[:, :3], 1)
        return x, y
    x = rng.uniform(-1, 1, size=(n, 16, 16, 3)).astype("float32")  # class = brightest channel
    y = np.argmax(x.mean((1, 2)), 1)
    return x, y


def _tflite_from_tf_keras(kind: str, x, y, variants):
    import numpy as np
    import tensorflow as tf
    import tf_keras

    tf_keras.utils.set_random_seed(0)
    if kind == "text":
        inp = tf_keras.Input((12,), dtype="int32")
        h = tf_keras.layers.Embedding(20, 8)(inp)
    else:
        inp = tf_keras.Input((10, 4))
        h = inp
    h = tf_keras.layers.LSTM(8)(h)
    model = tf_keras.Model(inp, tf_keras.layers.Dense(3, activation="softmax")(h))
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=30, batch_size=32, verbose=0)
    spec = tf.TensorSpec((1,) + tuple(x.shape[1:]), tf.int32 if kind == "text" else tf.float32)
    fn = tf.function(lambda t: model(t)).get_concrete_function(spec)
    out = {}
    for variant in variants:
        conv = tf.lite.TFLiteConverter.from_concrete_functions([fn], model)
        if variant == "int8":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.representative_dataset = lambda: ([x[i:i + 1]] for i in range(100))
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        out[variant] = conv.convert()
    return out, model.predict(x[:4], verbose=0), np


def _image_models(x, y, out: Path):
    import keras
    import numpy as np
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 3))
    h = keras.layers.Conv2D(8, 3, activation="relu", padding="same")(inp)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(h))
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=15, batch_size=32, verbose=0)
    files = {}
    for variant in ("fp32", "int8"):
        conv = tf.lite.TFLiteConverter.from_keras_model(model)
        if variant == "int8":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.representative_dataset = lambda: ([x[i:i + 1]] for i in range(100))
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        files[("tflite", variant)] = conv.convert()
    import tf2onnx

    fn = tf.function(lambda t: model(t))
    proto, _ = tf2onnx.convert.from_function(fn, input_signature=[tf.TensorSpec((1, 16, 16, 3), tf.float32,
                                                                                name="image")], opset=17)
    fp32 = out / "_image_fp32.onnx"
    fp32.write_bytes(proto.SerializeToString())
    files[("onnx", "fp32")] = fp32.read_bytes()
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"image": x[i:i + 1]} for i in range(100)])

        def get_next(self):
            return next(self.items, None)

    int8 = out / "_image_int8.onnx"
    quantize_static(str(fp32), str(int8), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    files[("onnx", "int8")] = int8.read_bytes()
    fp32.unlink()
    int8.unlink()
    return files, np


def _write_bundle(out: Path, name: str, fmt: str, variant: str, data: bytes, task: str) -> None:
    from bundle_writer import write_bundle

    write_bundle(out / f"{name}-{fmt}-{variant}", fmt, variant, data,
                 {"task": task, "name": name, "labels": LABELS, "preprocessing": None},
                 {"calibration_samples": 100, "io_dtype": "float32"})


def _model_dir(out: Path, name: str, task: str, x, y) -> None:
    """A stand-in model directory beside the bundles: edgekit.json + heldout.npz (export's layout)."""
    import numpy as np

    folder = out / f"model-{name}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "edgekit.json").write_text(json.dumps({"name": name, "task": task, "labels": LABELS}))
    np.savez(folder / "heldout.npz", x=x, y=y)


def _main(out: Path) -> None:
    import numpy as np

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for kind, task in (("text", "text"), ("speech", "speech")):
        x, y = _data(kind, 600, rng)
        files, _, _ = _tflite_from_tf_keras(kind, x, y, ("fp32", "int8"))
        for variant, data in files.items():
            _write_bundle(out, kind, "tflite", variant, data, task)
        _model_dir(out, kind, task, x[-64:], y[-64:])
    x, y = _data("image", 600, rng)
    files, _ = _image_models(x, y, out)
    for (fmt, variant), data in files.items():
        _write_bundle(out, "image", fmt, variant, data, "image")
    _model_dir(out, "image", "image", x[-64:], y[-64:])


if __name__ == "__main__":
    _main(Path(sys.argv[1]))
