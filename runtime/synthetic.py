"""Synthetic model inputs: the one generator behind benchmarks, the sandbox probe and device checks
that have no real data. Values are ones any model of the spec accepts:
- float features (and float inputs the runtime quantizes itself): standard normal, clipped to +-3,
  the range of standardized features;
- integer token ids: ids in [2, vocab_size) pre-padded with 0 like training's sequences (random
  lengths), or only 0/1 (padding / out-of-vocabulary) when the vocabulary size is unknown.
"""

from __future__ import annotations

import numpy as np


def _spec(item) -> tuple[str, tuple, np.dtype, bool]:
    """(name, shape, dtype, quantized) from a runner's TensorInfo or a manifest's input entry."""
    if isinstance(item, dict):
        quantized = bool((item.get("quantization") or {}).get("scale"))
        return str(item["name"]), tuple(item["shape"]), np.dtype(item["dtype"]), quantized
    return item.name, tuple(item.shape), np.dtype(item.dtype), bool(item.quantized)


def synthetic_inputs(inputs, batch: int = 1, seed: int = 0, vocab_size: int | None = None,
                     raw: bool = False) -> dict[str, np.ndarray]:
    """One array per input (name -> array of `batch` rows); dynamic dimensions become 1. `raw`: for a
    runner's own feed, where an integer-quantized input takes integers of its dtype (any is valid),
    not the float features that EdgeModel quantizes itself."""
    rng = np.random.default_rng(seed)
    feed = {}
    for item in inputs:
        name, shape, dtype, quantized = _spec(item)
        shape = (batch,) + tuple(int(d) if d and d > 0 else 1 for d in shape[1:])
        if quantized and raw:
            info = np.iinfo(dtype)
            feed[name] = rng.integers(info.min, int(info.max) + 1, size=shape).astype(dtype)
        elif quantized or dtype.kind == "f":
            feed[name] = np.clip(rng.standard_normal(shape), -3, 3).astype(np.float32 if quantized else dtype)
        elif dtype.kind in "iu" and vocab_size and vocab_size > 2:
            ids = rng.integers(2, vocab_size, size=shape)
            if ids.ndim == 2:  # pre-padded like training's sequences
                lengths = rng.integers(1, shape[1] + 1, size=shape[0])
                ids[np.arange(shape[1])[None, ::-1] >= lengths[:, None]] = 0
            feed[name] = ids.astype(dtype)
        elif dtype.kind in "iu":
            feed[name] = rng.integers(0, 2, size=shape).astype(dtype)
        else:  # bool or another type a classifier rarely takes: zeros are always valid
            feed[name] = np.zeros(shape, dtype)
    return feed
