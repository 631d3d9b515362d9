"""Preprocessing shared by training (host) and inference (device): numpy + stdlib only.

One module per kind of raw input: text (tokens), image (decode, resize, normalise), audio (WAV,
resampling, log-mel/MFCC frames). The model kinds (runtime/kinds.py `make_preprocessor`) turn the
`preprocessing` block of edgekit.json / a bundle manifest into a callable: list of raw inputs ->
batch of model inputs (np.ndarray).
  text:   list[str]                                   -> int32 [N, max_len]
  image:  list of uint8 HxWx3 arrays or image paths   -> float32 [N, H, W, 3]
  speech: list of float waveforms in [-1, 1] / int16 arrays / .wav paths -> float32 [N, T, F]
Bad inputs raise runtime.errors.InvalidInputError with a one-line message.
"""

from __future__ import annotations

from edgekit.runtime.preprocess.audio import utterance_probs

__all__ = ["utterance_probs"]
