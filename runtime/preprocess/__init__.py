"""Preprocessing shared by training (host) and inference (device): numpy + stdlib only.

`make_preprocessor(params, assets_dir)` turns the `preprocessing` block of edgekit.json / a bundle
manifest into a callable: list of raw inputs -> batch of model inputs (np.ndarray).
  text:   list[str]                                   -> int32 [N, max_len]
  image:  list of uint8 HxWx3 arrays or image paths   -> float32 [N, H, W, 3]
  speech: list of float waveforms in [-1, 1] / int16 arrays / .wav paths -> float32 [N, T, F]
Bad inputs raise runtime.errors.InvalidInputError with a one-line message.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgekit.runtime.errors import InvalidInputError
from edgekit.runtime.preprocess.audio import utterance_probs

__all__ = ["make_preprocessor", "utterance_probs"]


def make_preprocessor(params: dict, assets_dir: str | Path | None = None) -> Callable[[list], np.ndarray]:
    """assets_dir: the model directory or bundle folder (holding assets/vocab.txt), or its assets/.
    Dispatches on params["type"] through the model-kind registry (runtime/kinds.py)."""
    from edgekit.runtime.kinds import KINDS, ModelKind

    if not isinstance(params, dict) or "type" not in params:
        raise InvalidInputError("preprocessing parameters are missing their 'type'")
    kind = KINDS.get(params["type"])
    preprocessor = kind.preprocessor(params, assets_dir) if kind is not None else None
    if preprocessor is None:
        with_preprocessing = [name for name, k in KINDS.items()
                             if type(k).preprocessor is not ModelKind.preprocessor]
        raise InvalidInputError(f"unknown preprocessing type {params['type']!r}; expected "
                                f"{', '.join(with_preprocessing)}")
    return preprocessor
