"""Small trained model directories (design.md layout) for the export tests, built in-process.

Each kind is trained briefly on learnable synthetic data so its outputs are confident: a parity test
on a random-weight model (near-uniform softmax) would prove little. Until train/ lands, these stand in
for `trained_dir`; the lead can switch the export tests to the conftest fixtures on real data.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgekit.common import quiet_tensorflow

quiet_tensorflow()

TEXT = {"vocab_size": 300, "max_len": 24, "num_classes": 2}
SPEECH = {"num_frames": 30, "num_features": 13, "num_classes": 4}
IMAGE = {"size": 32, "num_classes": 3}


def _metadata(task: str, name: str, labels, input_spec, output_spec, preprocessing, architecture) -> dict:
    return {"edgekit_version": "0.1.0", "task": task, "name": name, "labels": labels,
            "input": input_spec, "output": output_spec, "preprocessing": preprocessing,
            "architecture": architecture,
            "data": {"source": "embedded", "synthetic": True},
            "metrics": {}, "seed": 0, "epochs": 0, "versions": {}, "created": "2025-01-01T00:00:00+00:00"}


def _write_model_dir(out: Path, model, metadata: dict, x_train: np.ndarray, x_test: np.ndarray,
                     y_test: np.ndarray, vocab: list[str] | None = None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "model.keras")
    (out / "edgekit.json").write_text(json.dumps(metadata, indent=2))
    np.savez(out / "calibration.npz", x=x_train[:300])
    np.savez(out / "heldout.npz", x=x_test, y=y_test)
    if vocab is not None:
        (out / "assets").mkdir(exist_ok=True)
        (out / "assets" / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return out


def make_text_dir(out: Path) -> Path:
    """Embedding -> LSTM -> Dense: 'spam' when any token id in 2..11 appears."""
    import keras

    from train.models import build_text_model

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    n, length, vocab = 800, TEXT["max_len"], TEXT["vocab_size"]
    x = rng.integers(12, vocab, size=(n, length)).astype("int32")
    y = rng.integers(0, 2, size=n)
    for i in np.flatnonzero(y):
        x[i, rng.integers(0, length, size=2)] = rng.integers(2, 12, size=2)
    lengths = rng.integers(length // 2, length + 1, size=n)
    x[np.arange(length)[None, :] >= lengths[:, None]] = 0  # right padding, as TextVectorization
    model = build_text_model(vocab, length, 2)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x[:600], y[:600], epochs=6, batch_size=32, verbose=0)
    metadata = _metadata("text", "text", ["ham", "spam"],
                         {"name": "tokens", "shape": [None, length], "dtype": "int32"},
                         {"name": "probs", "shape": [None, 2], "dtype": "float32"},
                         {"type": "text", "max_len": length, "vocab_file": "assets/vocab.txt",
                          "standardize": "lower_and_strip_punctuation", "split": "whitespace",
                          "pad_id": 0, "oov_id": 1}, {"vocab_size": vocab, "units": 32})
    words = ["", "[UNK]"] + [f"w{i}" for i in range(2, vocab)]
    return _write_model_dir(out, model, metadata, x[:600], x[600:], y[600:], vocab=words)


def make_speech_dir(out: Path) -> Path:
    """Frames -> LSTM(return_sequences) -> per-frame Dense: class = which of 4 feature bands is loud."""
    import keras

    from train.models import build_speech_model

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(1)
    n, frames, features, classes = 600, SPEECH["num_frames"], SPEECH["num_features"], SPEECH["num_classes"]
    y = rng.integers(0, classes, size=(n, frames))
    x = rng.normal(0, 0.5, size=(n, frames, features)).astype("float32")
    for c in range(classes):
        x[..., 3 * c:3 * c + 3] += 2.0 * (y == c)[..., None]
    model = build_speech_model(frames, features, classes, units=32)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    model.fit(x[:450], y[:450], epochs=6, batch_size=32, verbose=0)
    metadata = _metadata("speech", "speech", [f"band{c}" for c in range(classes)],
                         {"name": "frames", "shape": [None, frames, features], "dtype": "float32"},
                         {"name": "probs", "shape": [None, frames, classes], "dtype": "float32"},
                         {"type": "speech", "num_frames": frames}, {"units": 32})
    return _write_model_dir(out, model, metadata, x[:450], x[450:], y[450:])


def make_image_dir(out: Path) -> Path:
    """keras.applications MobileNetV2 (alpha 0.35, random init) + GAP + Dropout + Dense softmax:
    class = the dominant colour channel."""
    import keras

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(2)
    n, size, classes = 400, IMAGE["size"], IMAGE["num_classes"]
    y = rng.integers(0, classes, size=n)
    x = rng.uniform(-1, 0.2, size=(n, size, size, 3)).astype("float32")
    x[np.arange(n), :, :, y] += 0.8
    inputs = keras.Input((size, size, 3), name="image")
    backbone = keras.applications.MobileNetV2(input_shape=(size, size, 3), alpha=0.35,
                                              include_top=False, weights=None)
    for layer in backbone.layers:  # see conversion-facts: default momentum 0.999 lags in short runs
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.5
    h = keras.layers.GlobalAveragePooling2D(name="pool")(backbone(inputs))
    h = keras.layers.Dropout(0.2, name="dropout")(h)
    probs = keras.layers.Dense(classes, activation="softmax", name="probs")(h)
    model = keras.Model(inputs, probs, name="image_classifier")
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(x[:300], y[:300], epochs=8, batch_size=32, verbose=0)
    metadata = _metadata("image", "image", ["red", "green", "blue"],
                         {"name": "image", "shape": [None, size, size, 3], "dtype": "float32"},
                         {"name": "probs", "shape": [None, classes], "dtype": "float32"},
                         {"type": "image", "height": size, "width": size, "channels": 3,
                          "resize": "bilinear", "antialias": False, "mode": "tf", "channel_order": "RGB",
                          "mean": [127.5] * 3, "std": [127.5] * 3},
                         {"backbone": "mobilenet_v2", "alpha": 0.35})
    return _write_model_dir(out, model, metadata, x[:300], x[300:], y[300:])


MAKERS = {"text": make_text_dir, "speech": make_speech_dir, "image": make_image_dir}


@pytest.fixture(scope="session")
def export_model_dir(tmp_path_factory):
    """A factory: export_model_dir("text") builds (once per session) a small trained model directory."""
    cache: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in cache:
            cache[kind] = MAKERS[kind](tmp_path_factory.mktemp(f"export-model-{kind}") / kind)
        return cache[kind]

    return get
