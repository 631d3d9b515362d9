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
from edgekit.runtime import samples
from edgekit.runtime.errors import EdgekitError
from edgekit.runtime.kinds import KINDS
from edgekit.train.io import METADATA, file_metadata, is_model_file, keras_input_shapes, model_file, read_metadata

CALIBRATION_FILE = "calibration.npz"
HELDOUT_FILE = "heldout.npz"
MIN_CALIBRATION_SAMPLES = 100
CALIBRATION_SEED = 0


def check_model_dir(model_dir: str | Path, allow_unsafe: bool = False) -> dict:
    """Metadata of a usable model directory (or Keras file), or UserError naming what is missing."""
    metadata = read_metadata(model_dir)
    model_file(model_dir, allow_unsafe)
    for key in ("name", "task"):
        if not isinstance(metadata.get(key), str) or not metadata[key]:
            raise UserError(f"{Path(model_dir) / METADATA} has no {key!r}")
    return metadata


def read_samples(path: str | Path, what: str = "samples", input_names: list[str] | None = None):
    """Model inputs from an .npz (runtime/samples.py, the one reader): an array for a one-input model,
    else a dict name -> array; checked against `input_names` when they are known."""
    try:
        return samples.read(path, input_names or None, what).x
    except EdgekitError as exc:
        raise UserError(str(exc)) from None


def calibration_count(model_dir: str | Path) -> int:
    """How many calibration samples the model directory holds (UserError when none)."""
    path = Path(model_dir) / CALIBRATION_FILE
    if not path.is_file():
        raise UserError(f"{path.name} not found: calibrated variants (int8, int16x8) need representative "
                        "inputs: pass --calibration FILE.npz, re-run `edgekit train`, or export only "
                        "fp32,fp16,dynamic")
    count = samples.batch_size(read_samples(path, "calibration data"))
    if count == 0:
        raise UserError(f"{path} has no samples")
    return count


def load_calibration(model_dir: str | Path, wanted: int = 200):
    """`wanted` representative inputs drawn (seeded, without replacement) from calibration.npz
    (an array, or a dict input name -> array); all of them when the file holds fewer."""
    x = read_samples(Path(model_dir) / CALIBRATION_FILE, "calibration data")
    count = samples.batch_size(x)
    if count > wanted:
        x = samples.pick(x, np.sort(np.random.default_rng(CALIBRATION_SEED).choice(count, wanted, replace=False)))
    return x


def load_check_samples(model_dir: str | Path, count: int = 8):
    """A few inputs for the after-conversion parity check: held-out data, else calibration data."""
    for name in (HELDOUT_FILE, CALIBRATION_FILE):
        path = Path(model_dir) / name
        if path.is_file():
            return samples.take(read_samples(path, "data"), 0, count)
    return None


# --- a model view: one layout for a Keras file or a model directory with overrides -------------------


def read_labels(path: str) -> list[str]:
    """--labels FILE: class names, one per line (index = output index)."""
    lines = [line.strip() for line in _read_text(path, "--labels").splitlines() if line.strip()]
    if not lines:
        raise UserError(f"--labels {path} has no labels (one per line)")
    return lines


def kind_metadata(model_path: Path, task: str, **options) -> tuple[dict, dict[str, Path]]:
    """(metadata fields, assets to copy) for an outside model given `--task KIND` options: the kind's
    own `outside_preprocessing` (runtime/kinds.py)."""
    kind = KINDS.get(task)
    if kind is None or not kind.outside_models:
        allowed = ", ".join(name for name, k in KINDS.items() if k.outside_models)
        raise UserError(f"--task {task}: an outside model can be tagged {allowed}")
    try:
        preprocessing, assets = kind.outside_preprocessing(keras_input_shapes(model_path),
                                                           {k: v for k, v in options.items() if v})
    except EdgekitError as exc:
        raise UserError(str(exc)) from None
    for path in assets.values():
        _read_text(str(path), "--vocab")
    return {"task": task, "preprocessing": preprocessing}, assets


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
        read_samples(path, "calibration file", list(keras_input_shapes(source)) if source.suffix == ".keras" else None)
        os.symlink(path.resolve(), folder / CALIBRATION_FILE)
    atomic_write_json(folder / METADATA, metadata)
    return folder
