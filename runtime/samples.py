"""Sample files: model inputs (and their labels) in an .npz, the one reader (numpy only).

Every stage reads them with `read`: calibration data (`export --calibration`, a model directory's
calibration.npz), verification data (`verify --data FILE.npz`, heldout.npz), `predict` on tensors.

Layout: `x` for a one-input model, or one array per input name (`NAME`, or `x.NAME` as golden files
write them), all with the same number of samples; labels beside them: `y` (the classification head's,
per frame for per-frame models), `utterance_y` (per-frame models: one label per utterance), and
`y_NAME` (the labels or targets of output head NAME). Never pickled objects.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit.runtime.errors import InvalidInputError, first_line

X_PREFIX = "x."
LABEL_KEYS = ("y", "utterance_y")
LABEL_PREFIX = "y_"


def is_label(key: str) -> bool:
    return key in LABEL_KEYS or (key.startswith(LABEL_PREFIX) and key != "utterance_y")


def batch_size(x) -> int:
    """Samples in a batch: one array, or a mapping input name -> array (all the same length)."""
    if isinstance(x, dict):
        sizes = {len(a) for a in x.values()}
        if len(sizes) != 1:
            raise InvalidInputError(f"inputs have different numbers of samples: "
                                    f"{', '.join(f'{k} {len(v)}' for k, v in x.items())}")
        return sizes.pop()
    return len(x)


def take(x, start: int, stop: int | None = None):
    """Samples start:stop of a batch (one array, or a mapping name -> array)."""
    if isinstance(x, dict):
        return {name: a[start:stop] for name, a in x.items()}
    return x[start:stop]


def pick(x, index: np.ndarray):
    """The samples at `index` of a batch."""
    if isinstance(x, dict):
        return {name: a[index] for name, a in x.items()}
    return x[index]


@dataclass
class Samples:
    x: np.ndarray | dict               # one array, or input name -> array
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    source: str = ""

    def __len__(self) -> int:
        return batch_size(self.x)

    @property
    def y(self) -> np.ndarray | None:
        return self.labels.get("y")

    @property
    def utterance_y(self) -> np.ndarray | None:
        return self.labels.get("utterance_y")

    def head(self, n: int | None) -> Samples:
        if n is None or n >= len(self):
            return self
        return Samples(take(self.x, 0, n), {k: v[:n] for k, v in self.labels.items()}, self.source)

    def subset(self, index: np.ndarray) -> Samples:
        return Samples(pick(self.x, index), {k: v[index] for k, v in self.labels.items()}, self.source)


def read(path: str | Path, input_names: list[str] | None = None, what: str = "samples",
         batched: bool = True) -> Samples:
    """The samples in `path`. With `input_names` (the model's inputs, in order), the inputs are checked
    against them and returned as one array for a one-input model, else a dict in that order; without,
    as the file holds them. batched=False: the arrays may be one sample without its batch axis (what
    `predict` reads), so their lengths are not compared. InvalidInputError (one line) for a missing,
    unreadable or mismatched file."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"{what} file not found: {path}")
    if not zipfile.is_zipfile(path):
        raise InvalidInputError(f"{what} {path} is not an .npz archive of arrays")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files if k != "meta"}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise InvalidInputError(f"cannot read {what} {path}: {first_line(exc)}") from None
    labels = {k: v for k, v in arrays.items() if is_label(k)}
    inputs = {k[len(X_PREFIX):] if k.startswith(X_PREFIX) else k: v for k, v in arrays.items()
              if not is_label(k) and k != "reference"}
    if not inputs:
        raise InvalidInputError(f"{what} {path} holds no input arrays: give `x` for a one-input model, or one "
                                "array per input name")
    x = _inputs(inputs, input_names, path, what)
    if not batched:
        return Samples(x, labels, str(path))
    count = batch_size(x) if not isinstance(x, dict) else _count(x, path, what)
    for key, value in labels.items():
        if len(value) != count:
            raise InvalidInputError(f"{path}: {len(value)} labels in {key!r} but {count} samples")
    return Samples(x, labels, str(path))


def _count(x: dict, path: Path, what: str) -> int:
    try:
        return batch_size(x)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{what} {path}: {exc}") from None


def _inputs(inputs: dict, names: list[str] | None, path: Path, what: str):
    if not names:
        return inputs["x"] if "x" in inputs and len(inputs) == 1 else inputs
    if len(names) == 1:
        for key in ("x", names[0]):
            if key in inputs:
                return inputs[key]
        if len(inputs) == 1:  # one array under another name: the one input
            return next(iter(inputs.values()))
        raise InvalidInputError(f"{what} {path} has no 'x' array (or one named {names[0]!r}); it holds "
                                f"{', '.join(sorted(inputs))}")
    if "x" in inputs and len(inputs) == 1:
        raise InvalidInputError(f"{what} {path} has one array `x` but the model takes {len(names)} inputs "
                                f"({', '.join(names)}): give one array per input name")
    missing = [n for n in names if n not in inputs]
    if missing:
        raise InvalidInputError(f"{what} {path} lacks input(s) {', '.join(missing)}: the model takes "
                                f"{', '.join(names)} (one array per input name)")
    return {n: inputs[n] for n in names}


def write(path: str | Path, x, labels: dict | None = None) -> None:
    """Write samples in the layout `read` reads (not atomic: for a folder being built)."""
    arrays = {"x": x} if not isinstance(x, dict) else dict(x)
    np.savez(path, **arrays, **(labels or {}))
