"""Golden files: model inputs + Keras outputs saved on the host, compared later without Keras.

Format (docs/design.md): npz with `x` (model inputs), `reference` (Keras probabilities), `y` (labels;
per frame for speech), `meta` (JSON string: task, labels, tolerance per variant, ...), plus
`utterance_y` for speech. numpy only: `--golden` and the device side never import TensorFlow.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.core import UserError, atomic_write_bytes, first_line

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


def save_golden(path: str | Path, golden: Golden) -> Path:
    meta = {"golden_format": GOLDEN_FORMAT, **golden.meta}
    arrays = {"x": golden.x, "reference": np.asarray(golden.reference, dtype=np.float32),
              "meta": np.asarray(json.dumps(meta, default=_plain))}
    if golden.y is not None:
        arrays["y"] = golden.y
    if golden.utterance_y is not None:
        arrays["utterance_y"] = golden.utterance_y
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def load_golden(path: str | Path) -> Golden:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"golden file not found: {path} (write one with `edgekit verify --save-golden`)")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in ("x", "reference", "meta") if k not in data.files]
            if missing:
                raise UserError(f"{path} is not a golden file: missing {', '.join(missing)}")
            golden = Golden(
                x=data["x"], reference=data["reference"],
                y=data["y"] if "y" in data.files else None,
                utterance_y=data["utterance_y"] if "utterance_y" in data.files else None,
                meta=json.loads(str(data["meta"])))
    except (OSError, ValueError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read golden file {path}: {first_line(exc)}") from None
    if len(golden.x) != len(golden.reference):
        raise UserError(f"{path}: {len(golden.x)} inputs but {len(golden.reference)} reference outputs")
    return golden


def _plain(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
