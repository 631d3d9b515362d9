"""The inputs of an export: the model (a model directory or a user's own Keras file), its metadata,
calibration data and check samples.

Light on purpose (numpy only): the parent process validates a model with it before any child
process imports TensorFlow.

A Keras file, or a model directory with `--calibration`/`--name`, is exported through a model view
(`model_view`): a temporary folder shaped like a model directory (the model file linked in, an
edgekit.json, the calibration samples, assets/), so the worker, the bundles and verify read one
layout whatever the user gave.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from edgekit.core import UserError, atomic_write_json
from edgekit.runtime.kinds import KINDS, ImageKind, TextKind, batch_size, take
from edgekit.train.io import METADATA, file_metadata, is_model_file, keras_input_shapes, model_file, read_metadata

CALIBRATION_FILE = "calibration.npz"
HELDOUT_FILE = "heldout.npz"
MIN_CALIBRATION_SAMPLES = 100
CALIBRATION_SEED = 0
LABEL_ARRAYS = ("y", "utterance_y")   # labels beside the inputs in a samples .npz (verify --data)


def check_model_dir(model_dir: str | Path, allow_unsafe: bool = False) -> dict:
    """Metadata of a usable model directory (or Keras file), or UserError naming what is missing."""
    metadata = read_metadata(model_dir)
    model_file(model_dir, allow_unsafe)
    for key in ("name", "task"):
        if not isinstance(metadata.get(key), str) or not metadata[key]:
            raise UserError(f"{Path(model_dir) / METADATA} has no {key!r}")
    return metadata


def read_samples(path: str | Path, what: str = "samples"):
    """Model inputs from an .npz: `x` for a one-input model, else one array per input name
    (labels `y`/`utterance_y` left out). Returns an array or a dict name -> array."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files if k not in LABEL_ARRAYS}
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {what} {path}: {exc}") from None
    if not arrays:
        raise UserError(f"{what} {path} holds no input arrays: give `x` for a one-input model, or one "
                        "array per input name")
    if "x" in arrays:
        return arrays["x"]
    try:
        batch_size(arrays)
    except Exception as exc:
        raise UserError(f"{what} {path}: {exc}") from None
    return arrays


def check_samples_fit(samples, input_names: list[str], path: Path, what: str) -> None:
    """The arrays of a samples file name the model's inputs (when the model's inputs are known)."""
    if not input_names:
        return
    if isinstance(samples, dict):
        missing = [n for n in input_names if n not in samples]
        if missing:
            raise UserError(f"{what} {path} lacks input(s) {', '.join(missing)}: the model takes "
                            f"{', '.join(input_names)} (one array per input name)")
    elif len(input_names) > 1:
        raise UserError(f"{what} {path} has one array `x` but the model takes {len(input_names)} inputs "
                        f"({', '.join(input_names)}): give one array per input name")


def calibration_count(model_dir: str | Path) -> int:
    """How many calibration samples the model directory holds (UserError when none)."""
    path = Path(model_dir) / CALIBRATION_FILE
    if not path.is_file():
        raise UserError(f"{path.name} not found: calibrated variants (int8, int16x8) need representative "
                        "inputs: pass --calibration FILE.npz, re-run `edgekit train`, or export only "
                        "fp32,fp16,dynamic")
    count = batch_size(read_samples(path, "calibration data"))
    if count == 0:
        raise UserError(f"{path} has no samples")
    return count


def load_calibration(model_dir: str | Path, samples: int = 200):
    """`samples` representative inputs drawn (seeded, without replacement) from calibration.npz
    (an array, or a dict input name -> array); all of them when the file holds fewer."""
    x = read_samples(Path(model_dir) / CALIBRATION_FILE, "calibration data")
    count = batch_size(x)
    if count > samples:
        pick = np.sort(np.random.default_rng(CALIBRATION_SEED).choice(count, samples, replace=False))
        x = {k: a[pick] for k, a in x.items()} if isinstance(x, dict) else x[pick]
    return x


def load_check_samples(model_dir: str | Path, count: int = 8):
    """A few inputs for the after-conversion parity check: held-out data, else calibration data."""
    for name in (HELDOUT_FILE, CALIBRATION_FILE):
        path = Path(model_dir) / name
        if path.is_file():
            return take(read_samples(path, "data"), 0, count)
    return None


# --- a model view: one layout for a Keras file or a model directory with overrides -------------------


def read_labels(path: str) -> list[str]:
    """--labels FILE: class names, one per line (index = output index)."""
    lines = [line.strip() for line in _read_text(path, "--labels").splitlines() if line.strip()]
    if not lines:
        raise UserError(f"--labels {path} has no labels (one per line)")
    return lines


def kind_metadata(model_path: Path, task: str, *, preprocess: str | None = None, vocab: str | None = None,
                  max_len: int | None = None) -> tuple[dict, dict[str, Path]]:
    """(metadata fields, assets to copy) for an outside model given `--task image|text|tensor` options."""
    shapes = keras_input_shapes(model_path)
    if task not in KINDS or task == "speech":
        raise UserError(f"--task {task}: an outside model can be tagged image, text or tensor")
    fields: dict = {"task": task, "preprocessing": None}
    assets: dict[str, Path] = {}
    if task == "image":
        if len(shapes) != 1:
            raise UserError(f"--task image needs a one-input .keras model, {model_path.name} has "
                            f"{len(shapes) or 'unknown'} inputs")
        shape = next(iter(shapes.values()))
        if len(shape) != 4 or shape[-1] != 3 or not shape[1] or not shape[2]:
            raise UserError(f"--task image needs an input of shape (batch, height, width, 3), "
                            f"{model_path.name} takes {tuple(shape)}")
        try:
            fields["preprocessing"] = ImageKind.params_for(preprocess or "scale:1/1", shape[1], shape[2])
        except Exception as exc:
            raise UserError(str(exc)) from None
    elif task == "text":
        if not vocab:
            raise UserError("--task text needs --vocab vocab.txt (one token per line: padding, [UNK], "
                            "then the tokens, as keras.layers.TextVectorization.get_vocabulary() lists them)")
        shape = next(iter(shapes.values()), None) if len(shapes) == 1 else None
        length = max_len or (shape[1] if shape and len(shape) == 2 else None)
        if not length:
            raise UserError("--task text needs --max-len N (the model's token sequence length)")
        _read_text(vocab, "--vocab")
        assets["vocab.txt"] = Path(vocab)
        fields["preprocessing"] = TextKind.params_for(length)
    elif preprocess or vocab or max_len:
        raise UserError("--preprocess applies with --task image; --vocab and --max-len with --task text")
    return fields, assets


def _read_text(path: str, flag: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {flag} file {path}: {getattr(exc, 'strerror', None) or exc}") from None


def needs_view(model: Path, options: dict) -> bool:
    return is_model_file(model) or any(options.values())


def model_view(model: str | Path, folder: Path, *, allow_unsafe: bool = False, calibration: str | None = None,
               name: str | None = None, task: str | None = None, preprocess: str | None = None,
               labels: str | None = None, vocab: str | None = None, max_len: int | None = None,
               metadata: dict | None = None, assets: Path | None = None) -> Path:
    """A model-directory-shaped folder `folder` for `model` (a Keras file, or a model directory whose
    calibration, name or kind the options replace). `metadata`/`assets`: a Keras file's edgekit.json
    and assets/ as an export stored them in a bundle (verify). Returns `folder`."""
    model = Path(model)
    source = model_file(model, allow_unsafe)
    folder.mkdir(parents=True)
    if is_model_file(model):
        metadata = dict(metadata) if metadata else file_metadata(model, name)
        if assets is not None and assets.is_dir():
            os.symlink(assets.resolve(), folder / "assets")
    else:
        metadata = read_metadata(model)
        for entry in model.iterdir():
            if entry.name not in (METADATA, CALIBRATION_FILE if calibration else ""):
                os.symlink(entry.resolve(), folder / entry.name)
        if name:
            metadata["name"] = name
    if is_model_file(model):
        os.symlink(source.resolve(), folder / ("model.keras" if source.suffix == ".keras" else source.name))
    if task:
        fields, assets = kind_metadata(source, task, preprocess=preprocess, vocab=vocab, max_len=max_len)
        metadata.update(fields)
        if assets:
            if (folder / "assets").is_symlink():  # a model directory's assets: replaced, not written into
                (folder / "assets").unlink()
            (folder / "assets").mkdir(exist_ok=True)
            for target, path in assets.items():
                shutil.copyfile(path, folder / "assets" / target)
    elif preprocess or vocab or max_len:
        raise UserError("--preprocess needs --task image; --vocab and --max-len need --task text")
    if labels:
        metadata["labels"] = read_labels(labels)
    if calibration:
        path = Path(calibration)
        samples = read_samples(path, "calibration file")
        if source.suffix == ".keras":
            check_samples_fit(samples, list(keras_input_shapes(source)), path, "calibration file")
        os.symlink(path.resolve(), folder / CALIBRATION_FILE)
    atomic_write_json(folder / METADATA, metadata)
    return folder
