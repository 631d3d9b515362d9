"""The Keras side of verification (host only, imports TensorFlow): the reference model's outputs and
labelled data read with the train package's loaders + the model's own preprocessing."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.core import UserError
from edgekit.verify.evaluate import EvalData

REFERENCE_BATCH = 64


def load_reference(model_dir: str | Path, allow_unsafe: bool = False):
    """(keras_model, metadata) from a model directory (safe mode for .keras)."""
    from edgekit.train.io import load_model

    return load_model(model_dir, allow_unsafe=allow_unsafe)


def reference_outputs(model, x: np.ndarray) -> np.ndarray:
    probs = model.predict(x, batch_size=REFERENCE_BATCH, verbose=0)
    if isinstance(probs, (list, tuple, dict)):
        raise UserError("the model has several outputs; verify compares single-output classifiers")
    return np.asarray(probs, dtype=np.float32)


def load_labelled_data(path: str | Path, model_dir: str | Path, metadata: dict,
                       text_column: str | None = None, label_column: str | None = None) -> EvalData:
    """Every sample of a user's labelled data (CSV/TSV, class folders, WAV folder), read with the
    train package's loader for the task and turned into model inputs by the model's preprocessing."""
    from edgekit.runtime.preprocess import make_preprocessor
    from edgekit.train.data import load_raw

    path = Path(path)
    if not path.exists():
        raise UserError(f"data not found: {path}")
    task = metadata.get("task")
    raw, label_names = load_raw(task, path, text_column=text_column, label_column=label_column)
    if len(raw) == 0:
        raise UserError(f"no usable samples in {path}")
    labels = list(metadata.get("labels") or [])
    unknown = sorted({str(name) for name in label_names} - set(labels))
    if unknown:
        raise UserError(f"{path} has labels the model does not know: {', '.join(unknown[:5])} "
                        f"(model labels: {', '.join(labels)})")
    y = np.array([labels.index(str(name)) for name in label_names], dtype=np.int64)
    x = make_preprocessor(metadata["preprocessing"], model_dir)(list(raw))
    if task == "speech":
        return EvalData(x, None, y, str(path))
    return EvalData(x, y, None, str(path))
