"""The Keras side of verification (host only, imports TensorFlow): the reference model's outputs and
labelled data read with the train package's loaders + the model's own preprocessing, or model
inputs from an .npz (`x`, or one array per input name, plus optional labels `y`)."""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edgekit.core import UserError, sha256_file
from edgekit.runtime import samples
from edgekit.runtime.errors import EdgekitError
from edgekit.runtime.kinds import flat_outputs
from edgekit.verify.evaluate import EvalData

REFERENCE_BATCH = 64


def load_reference(model_dir: str | Path, allow_unsafe: bool = False):
    """(keras_model, metadata) from a model directory (safe mode for .keras)."""
    from edgekit.train.io import load_model

    return load_model(model_dir, allow_unsafe=allow_unsafe)


@contextlib.contextmanager
def reference_dir(model: str | Path, bundles: list[Path], data: str | Path | None,
                  allow_unsafe: bool = False) -> Iterator[Path]:
    """A model directory for `model`: itself, or for a Keras file a temporary model view
    (export/source.py) holding the metadata its bundles were exported with (name, kind, labels,
    preprocessing; found by the file's sha256) and `data` as its samples."""
    from edgekit.export import source
    from edgekit.train.io import is_model_file, model_file

    model = Path(model)
    if not is_model_file(model):
        yield model
        return
    if data is None:
        raise UserError(f"{model.name} is a Keras file without held-out data: pass --data FILE.npz "
                        "(`x` or one array per input name, plus optional labels `y`)")
    digest = sha256_file(model_file(model, allow_unsafe))
    metadata, assets = None, None
    for bundle in bundles:
        try:
            manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        origin = manifest.get("source") or {}
        if origin.get("model_sha256") == digest and isinstance(origin.get("metadata"), dict):
            metadata, assets = origin["metadata"], bundle / "assets"
            break
    with tempfile.TemporaryDirectory(prefix="edgekit-model-") as scratch:
        calibration = str(data) if Path(data).suffix.lower() == ".npz" else None
        yield source.model_view(model, Path(scratch) / model.stem, allow_unsafe=allow_unsafe,
                                calibration=calibration, metadata=metadata, assets=assets)


def output_names(model) -> list[str]:
    return list(getattr(model, "output_names", None) or [f"output_{i}" for i in range(len(model.outputs))])


def reference_outputs(model, x) -> np.ndarray:
    """Keras outputs on `x` (an array, or a dict input name -> array) as one float32 array: several
    outputs flattened per sample and concatenated in name order, as the runtime compares them."""
    probs = model.predict(x, batch_size=REFERENCE_BATCH, verbose=0)
    if isinstance(probs, (list, tuple)):
        probs = dict(zip(output_names(model), probs))
    if isinstance(probs, dict):
        return flat_outputs(probs)
    return np.asarray(probs, dtype=np.float32)


def load_npz_data(path: Path, model) -> EvalData:
    """Model inputs and optional labels (`y`; `utterance_y` for per-frame models) from an .npz."""
    try:
        found = samples.read(path, [spec.name for spec in model.inputs], "data")
    except EdgekitError as exc:
        raise UserError(str(exc)) from None
    y = found.y
    if y is not None and len(model.outputs) > 1:
        raise UserError(f"{path}: labels `y` score a one-output classifier; this model has "
                        f"{len(model.outputs)} outputs ({', '.join(output_names(model))}): drop `y` "
                        "to check parity only")
    if y is not None:
        _check_label_shape(path, np.shape(y), tuple(model.outputs[0].shape))
    return EvalData.of(found)


def _check_label_shape(path: Path, labels: tuple, output: tuple) -> None:
    """One class label per decision: `y` is the output's shape without its class axis (per-step
    outputs [N, T, C] need [N, T] labels)."""
    want = output[1:-1]
    got = labels[1:]
    if len(got) != len(want) or any(w is not None and g != w for g, w in zip(got, want)):
        shape = ", ".join(["N", *("?" if w is None else str(w) for w in want)])
        raise UserError(f"{path}: labels `y` have shape {labels}, but the model decides one class per "
                        f"output position: give `y` the shape ({shape}) (its output is "
                        f"({', '.join('N' if d is None else str(d) for d in output)})), or drop `y` to check "
                        "parity only")


def load_labelled_data(path: str | Path, model_dir: str | Path, metadata: dict,
                       text_column: str | None = None, label_column: str | None = None,
                       model=None) -> EvalData:
    """Every sample of a user's labelled data (CSV/TSV, class folders, WAV folder), read with the
    train package's loader for the task and turned into model inputs by the model's preprocessing;
    or model inputs from an .npz (with `model`, to check them against its inputs)."""
    from edgekit.runtime.kinds import kind_of, make_preprocessor
    from edgekit.train.data import load_raw

    path = Path(path)
    if not path.exists():
        raise UserError(f"data not found: {path}")
    if path.suffix.lower() == ".npz":
        if model is None:
            raise UserError(f"{path}: reading model inputs from an .npz needs the Keras model")
        return load_npz_data(path, model)
    task = metadata.get("task")
    if not metadata.get("preprocessing"):
        raise UserError(f"the {task} model takes tensors: give --data as an .npz of model inputs "
                        "(`x` or one array per input name, plus optional labels `y`)")
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
    if kind_of(task).per_frame:
        return EvalData(x, None, y, str(path))
    return EvalData(x, y, None, str(path))
