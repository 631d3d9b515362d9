"""Golden files, host side: the writer (it needs core's atomic write). The one reader, the format and
the `Golden` dataclass live in the runtime (edgekit/runtime/golden.py), so a device reads golden files
with the same code; `load_golden` is that reader.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from edgekit.core import atomic_write_bytes
from edgekit.runtime.golden import GOLDEN_FORMAT, Golden
from edgekit.runtime.golden import read as load_golden

__all__ = ["GOLDEN_FORMAT", "Golden", "load_golden", "save_golden"]


def save_golden(path: str | Path, golden: Golden) -> Path:
    """Write `golden` as a compressed npz, atomically."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **golden.arrays())
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)
