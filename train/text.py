"""Text classifier: TextVectorization vocabulary -> Embedding -> LSTM (or --arch gru, bilstm,
transformer) -> Dense softmax.

No masking (the TFLite fused-LSTM conversion cannot take masks): sequences are padded at the
front ("pre"), so the LSTM's last steps are real tokens, and long texts keep their first max_len
tokens. The numpy tokenizer in runtime/preprocess/text.py reproduces the ids exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.core import UserError, atomic_write_text, log
from edgekit.runtime.preprocess.text import PADDING, TRUNCATING, pad_ids
from edgekit.train import TrainResult, accuracy, pick_calibration, pick_heldout
from edgekit.train.data import Dataset, load_text
from edgekit.train.models import TEXT_ARCHS, build_text_model, compile_classifier

DEFAULTS = {"max_len": 64, "max_tokens": 10000, "embedding_dim": 32, "units": 32,
            "epochs": 6, "batch_size": 32, "learning_rate": 3e-3}
QUICK = {"epochs": 3}


def check_options(options: dict) -> None:
    for key in ("input_size", "fine_tune_epochs", "features"):
        if key in options:
            raise UserError(f"--{key.replace('_', '-')} does not apply to the text task")
    if options.get("arch", "lstm") not in TEXT_ARCHS:
        raise UserError(f"--arch must be one of {', '.join(TEXT_ARCHS)} for the text task, "
                        f"got {options['arch']!r}")


def load(data, seed: int, options: dict) -> Dataset:
    if data is None:
        from edgekit.train import synthetic

        return synthetic.text(seed)
    return load_text(data, seed, options.get("text_column"), options.get("label_column"),
                     options.get("max_samples"))


def make_vectorizer(train_texts: list[str], max_tokens: int):
    import keras

    vectorizer = keras.layers.TextVectorization(
        max_tokens=max_tokens, standardize="lower_and_strip_punctuation", split="whitespace",
        output_mode="int", ragged=True)
    vectorizer.adapt(np.array(train_texts, dtype=object), batch_size=1024)
    return vectorizer


def vectorize(vectorizer, texts: list[str], max_len: int) -> np.ndarray:
    """Token ids from TensorFlow's TextVectorization, padded as the runtime pads them."""
    ragged = vectorizer(np.array(texts, dtype=object))
    return pad_ids(ragged.to_list(), max_len, PADDING, TRUNCATING)


def fit(dataset: Dataset, workdir: Path, epochs: int | None, seed: int, quick: bool,
        options: dict) -> TrainResult:
    settings = dict(DEFAULTS, **(QUICK if quick else {}))
    epochs = epochs or settings["epochs"]
    batch_size = options.get("batch_size", settings["batch_size"])
    (train_texts, y_train), (val_texts, y_val), (test_texts, y_test) = (
        dataset.splits[s] for s in ("train", "val", "test"))

    vectorizer = make_vectorizer(train_texts, settings["max_tokens"])
    vocab = vectorizer.get_vocabulary()
    if any("\n" in token for token in vocab):  # cannot happen after whitespace split; guard the file
        raise UserError("a vocabulary token holds a newline; cannot write assets/vocab.txt")
    (workdir / "assets").mkdir()
    atomic_write_text(workdir / "assets" / "vocab.txt", "\n".join(vocab) + "\n")
    log(f"vocabulary: {len(vocab)} tokens (ids 0 = padding, 1 = [UNK]) from "
        f"{len(train_texts)} training texts")

    max_len = settings["max_len"]
    x_train, x_val, x_test = (vectorize(vectorizer, t, max_len)
                              for t in (train_texts, val_texts, test_texts))
    arch = options.get("arch", "lstm")
    architecture = {"kind": f"text_{arch}", "arch": arch, "vocab_size": len(vocab), "max_len": max_len,
                    "num_classes": len(dataset.labels), "embedding_dim": settings["embedding_dim"],
                    "units": settings["units"]}
    model = build_text_model(**{k: v for k, v in architecture.items() if k != "kind"})
    compile_classifier(model, settings["learning_rate"], x_train[:2], y_train[:2])
    model.fit(x_train, y_train, validation_data=(x_val, y_val), epochs=epochs,
              batch_size=batch_size, verbose=2, shuffle=True)

    test_probs = model.predict(x_test, batch_size=256, verbose=0)
    metrics = {"train_accuracy": accuracy(model.predict(x_train, batch_size=256, verbose=0), y_train),
               "val_accuracy": accuracy(model.predict(x_val, batch_size=256, verbose=0), y_val),
               "test_accuracy": accuracy(test_probs, y_test)}
    held = pick_heldout(len(y_test), seed)
    preprocessing = {"type": "text", "max_len": max_len, "vocab_file": "assets/vocab.txt",
                     "standardize": "lower_and_strip_punctuation", "split": "whitespace",
                     "pad_id": 0, "oov_id": 1, "padding": PADDING, "truncating": TRUNCATING}
    return TrainResult(
        model=model, labels=dataset.labels, preprocessing=preprocessing, architecture=architecture,
        input_spec={"name": "tokens", "shape": [None, max_len], "dtype": "int32"},
        output_spec={"name": "probs", "shape": [None, len(dataset.labels)], "dtype": "float32"},
        metrics=metrics, epochs=epochs,
        heldout={"x": x_test[held], "y": y_test[held]},
        calibration=x_train[pick_calibration(len(y_train), seed)])
