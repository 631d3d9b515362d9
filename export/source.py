"""The inputs of an export: the model directory's metadata, calibration data and check samples.

Light on purpose (numpy only): the parent process validates a model directory with it before any
child process imports TensorFlow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.core import UserError
from edgekit.train.io import model_file, read_metadata

CALIBRATION_FILE = "calibration.npz"
HELDOUT_FILE = "heldout.npz"
MIN_CALIBRATION_SAMPLES = 100
CALIBRATION_SEED = 0


def check_model_dir(model_dir: str | Path, allow_unsafe: bool = False) -> dict:
    """Metadata of a usable model directory, or UserError naming what is missing."""
    metadata = read_metadata(model_dir)
    model_file(model_dir, allow_unsafe)
    for key in ("name", "task"):
        if not isinstance(metadata.get(key), str) or not metadata[key]:
            raise UserError(f"{Path(model_dir) / 'edgekit.json'} has no {key!r}")
    return metadata


def _npz_x(path: Path, what: str) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as data:
            if "x" not in data.files:
                raise UserError(f"{what} {path} has no 'x' array")
            return data["x"]
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {what} {path}: {exc}") from None


def calibration_count(model_dir: str | Path) -> int:
    """How many calibration samples the model directory holds (UserError when none)."""
    path = Path(model_dir) / CALIBRATION_FILE
    if not path.is_file():
        raise UserError(f"{path} not found: calibrated variants (int8, int16x8) need representative "
                        "training data; re-run `edgekit train` or export only fp32,fp16,dynamic")
    with np.load(path, allow_pickle=False) as data:
        if "x" not in data.files or len(data["x"]) == 0:
            raise UserError(f"{path} has no samples in 'x'")
        return len(data["x"])


def load_calibration(model_dir: str | Path, samples: int = 200) -> np.ndarray:
    """`samples` representative inputs drawn (seeded, without replacement) from calibration.npz `x`;
    all of them when the file holds fewer."""
    x = _npz_x(Path(model_dir) / CALIBRATION_FILE, "calibration data")
    if len(x) > samples:
        x = x[np.sort(np.random.default_rng(CALIBRATION_SEED).choice(len(x), samples, replace=False))]
    return x


def load_check_samples(model_dir: str | Path, count: int = 8) -> np.ndarray | None:
    """A few inputs for the after-conversion parity check: held-out data, else calibration data."""
    for name in (HELDOUT_FILE, CALIBRATION_FILE):
        path = Path(model_dir) / name
        if path.is_file():
            return _npz_x(path, "data")[:count]
    return None
