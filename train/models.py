"""Keras builders of the three model kinds. Export rebuilds the same graphs, so keep them plain."""

from __future__ import annotations

from edgekit.common import quiet_tensorflow

quiet_tensorflow()
import keras  # noqa: E402


def build_text_model(vocab_size: int, max_len: int, num_classes: int,
                     embedding_dim: int = 32, units: int = 32) -> keras.Model:
    """Embedding -> LSTM -> Dense softmax over int32 token ids [N, max_len] (id 0 = padding)."""
    tokens = keras.Input(shape=(max_len,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(vocab_size, embedding_dim, name="embedding")(tokens)
    x = keras.layers.LSTM(units, name="lstm")(x)
    probs = keras.layers.Dense(num_classes, activation="softmax", name="probs")(x)
    return keras.Model(tokens, probs, name="text_classifier")


def build_speech_model(num_frames: int, num_features: int, num_classes: int,
                       units: int = 64) -> keras.Model:
    """Feature frames [N, T, F] -> LSTM(return_sequences) -> per-frame Dense softmax [N, T, C]."""
    frames = keras.Input(shape=(num_frames, num_features), dtype="float32", name="frames")
    x = keras.layers.LSTM(units, return_sequences=True, name="lstm")(frames)
    probs = keras.layers.Dense(num_classes, activation="softmax", name="probs")(x)
    return keras.Model(frames, probs, name="speech_frame_classifier")
