"""Golden files: model inputs + reference outputs, written on the host (verify/golden.py) and read
here, by `edgekit verify --golden`, `edgekit devices check` and `python -m edgekit.runtime golden`.

Format (docs/design.md): npz with `x` (model inputs; `x.NAME` per input for a several-input model),
`reference` (reference outputs; several outputs flattened and concatenated in name order), `y`
(labels; per frame for speech), `meta` (JSON string: task, labels, tolerance per variant, ...), plus
`utterance_y` for speech. numpy only, never pickled objects.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.runtime import samples
from edgekit.runtime.errors import InvalidInputError, first_line
from edgekit.runtime.samples import X_PREFIX, batch_size, take

GOLDEN_FORMAT = 1


@dataclass
class Golden:
    x: np.ndarray
    reference: np.ndarray
    y: np.ndarray | None
    utterance_y: np.ndarray | None
    meta: dict

    @property
    def task(self) -> str:
        return self.meta.get("task", "")

    def head(self, n: int | None) -> Golden:
        """The first n samples (all when n is None)."""
        if n is None or n >= batch_size(self.x):
            return self
        cut = lambda a: None if a is None else a[:n]  # noqa: E731
        return Golden(take(self.x, 0, n), self.reference[:n], cut(self.y), cut(self.utterance_y), self.meta)

    def arrays(self) -> dict[str, np.ndarray]:
        """The npz members (meta as a JSON string), as the writer stores them; a several-input
        model's inputs as `x.NAME`, one array per input."""
        inputs = {f"{X_PREFIX}{name}": a for name, a in self.x.items()} if isinstance(self.x, dict) \
            else {"x": self.x}
        arrays = {**inputs, "reference": np.asarray(self.reference, dtype=np.float32),
                  "meta": np.asarray(json.dumps({"golden_format": GOLDEN_FORMAT, **self.meta}, default=_plain))}
        if self.y is not None:
            arrays["y"] = self.y
        if self.utterance_y is not None:
            arrays["utterance_y"] = self.utterance_y
        return arrays


def read(path: str | Path) -> Golden:
    """The golden file at `path`; InvalidInputError (one line) when it is missing or not a golden file.
    Its inputs and labels are read by the one samples reader (runtime/samples.py)."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"golden file not found: {path} (write one with `edgekit verify --save-golden`)")
    if not zipfile.is_zipfile(path):
        raise InvalidInputError(f"{path} is not a golden file (not an npz archive)")
    try:
        with np.load(path, allow_pickle=False) as data:
            if "reference" not in data.files:
                raise InvalidInputError(f"{path} is not a golden file: missing reference")
            reference = data["reference"]
            meta = json.loads(str(data["meta"])) if "meta" in data.files else {}
    except (OSError, ValueError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        if isinstance(exc, InvalidInputError):
            raise
        raise InvalidInputError(f"cannot read golden file {path}: {first_line(exc)}") from None
    try:
        found = samples.read(path, what="golden file")
    except InvalidInputError as exc:
        raise InvalidInputError(f"{path} is not a golden file: {exc}") from None
    if batch_size(found.x) != len(reference):
        raise InvalidInputError(f"{path}: {batch_size(found.x)} inputs but {len(reference)} reference outputs")
    return Golden(x=found.x, reference=reference, y=found.y, utterance_y=found.utterance_y,
                  meta=meta if isinstance(meta, dict) else {})


def _plain(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
