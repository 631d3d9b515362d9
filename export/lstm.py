"""Rebuild a Keras 3 recurrent model in tf-keras (Keras 2) so the TFLite converter fuses its LSTM.

Why: the TFLite converter recognises only tf-keras' LSTM (a `tf.function` with the
"api_implements" signature it pattern-matches) and turns it into one builtin
UNIDIRECTIONAL_SEQUENCE_LSTM op. A Keras 3 LSTM converts to a WHILE loop, to Flex ops, or crashes
the converter (docs: /work/shared/notes/conversion-facts.md). The LiteRT int8 LSTM kernels need the
fused op, so for edge use we rebuild the same architecture in tf-keras, copy the trained weights
layer by layer (Keras 3 LSTM kernel / recurrent_kernel / bias use tf-keras' layout and i, f, c, o
gate order) and prove the copy numerically before converting.

Supported: linear stacks of InputLayer, Embedding, LSTM, Dense, Dropout (the text and speech
builders in train/models.py). Anything else raises `UnsupportedForRebuild` naming the layer.
"""

from __future__ import annotations

import numpy as np

from edgekit.core import quiet_tensorflow

RECURRENT_LAYERS = ("LSTM", "GRU", "SimpleRNN", "RNN", "Bidirectional", "ConvLSTM1D", "ConvLSTM2D")
# Largest difference allowed between the Keras 3 model and its tf-keras twin: both run the same
# float32 math with the same weights; only kernel choice / summation order differs (~1e-7).
REBUILD_TOLERANCE = 1e-5


class UnsupportedForRebuild(Exception):
    """The model has a layer (or topology) the tf-keras rebuild does not cover."""


def is_recurrent(model) -> bool:
    """True when any layer is recurrent: those models go through the tf-keras rebuild."""
    return any(type(layer).__name__ in RECURRENT_LAYERS for layer in _all_layers(model))


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):  # nested models
            yield from _all_layers(layer)


def _linear_layers(model) -> list:
    """The layers of a single-input single-output chain, in order, or UnsupportedForRebuild."""
    layers = list(model.layers)
    for previous, layer in zip(layers, layers[1:]):
        inbound = layer._inbound_nodes
        if len(inbound) != 1 or len(inbound[0].parent_nodes) != 1 \
                or inbound[0].parent_nodes[0].operation is not previous:
            raise UnsupportedForRebuild(f"layer {layer.name!r} is not fed by {previous.name!r} alone; "
                                        "the tf-keras rebuild handles linear stacks only")
    return layers


def _activation_name(value) -> str:
    if isinstance(value, str):
        return value
    name = getattr(value, "__name__", None)
    if name is None:
        raise UnsupportedForRebuild(f"activation {value!r} has no name")
    return name


def rebuild_in_tf_keras(model, batch_size: int = 1):
    """Return a tf-keras model with the same layers and weights as the Keras 3 `model`, with the
    batch dimension fixed to `batch_size` (the converter needs static shapes to fuse the LSTM)."""
    quiet_tensorflow()
    import tf_keras

    layers = _linear_layers(model)
    if type(layers[0]).__name__ != "InputLayer":
        raise UnsupportedForRebuild("model does not start with an InputLayer")
    spec = model.inputs[0]
    x = inputs = tf_keras.Input(batch_size=batch_size, shape=tuple(spec.shape[1:]),
                                dtype=str(spec.dtype), name=layers[0].name)
    copies = []
    for layer in layers[1:]:
        kind = type(layer).__name__
        config = layer.get_config()
        if kind == "Embedding":
            clone = tf_keras.layers.Embedding(config["input_dim"], config["output_dim"],
                                              mask_zero=config.get("mask_zero", False), name=layer.name)
        elif kind == "LSTM":
            if config.get("go_backwards") or config.get("return_state") or config.get("stateful"):
                raise UnsupportedForRebuild(f"LSTM {layer.name!r}: go_backwards/return_state/stateful "
                                            "are not rebuilt")
            clone = tf_keras.layers.LSTM(
                config["units"], activation=_activation_name(config["activation"]),
                recurrent_activation=_activation_name(config["recurrent_activation"]),
                use_bias=config["use_bias"], unit_forget_bias=config.get("unit_forget_bias", True),
                return_sequences=config["return_sequences"], unroll=False, name=layer.name)
        elif kind == "Dense":
            clone = tf_keras.layers.Dense(config["units"], activation=_activation_name(config["activation"]),
                                          use_bias=config["use_bias"], name=layer.name)
        elif kind == "Dropout":
            clone = tf_keras.layers.Dropout(config["rate"], name=layer.name)  # identity at inference
        else:
            raise UnsupportedForRebuild(f"layer {layer.name!r} ({kind}) is not covered by the tf-keras "
                                        "rebuild (Embedding, LSTM, Dense, Dropout are)")
        x = clone(x)
        copies.append((layer, clone))
    twin = tf_keras.Model(inputs, x, name=model.name)
    for original, clone in copies:
        weights = original.get_weights()
        expected = [tuple(w.shape) for w in clone.get_weights()]
        if [tuple(w.shape) for w in weights] != expected:
            raise UnsupportedForRebuild(f"layer {original.name!r}: weight shapes {[w.shape for w in weights]} "
                                        f"do not match the tf-keras layer's {expected}")
        clone.set_weights(weights)
    return twin


def check_rebuild(model, twin, samples: np.ndarray) -> float:
    """Run both models on `samples` one at a time (the twin has batch 1); return the max abs difference
    and raise UnsupportedForRebuild when it is over REBUILD_TOLERANCE."""
    worst = 0.0
    for sample in samples:
        batch = sample[None]
        expected = np.asarray(model(batch, training=False))
        got = np.asarray(twin(batch, training=False))
        worst = max(worst, float(np.max(np.abs(expected - got))))
    if worst > REBUILD_TOLERANCE:
        raise UnsupportedForRebuild(f"tf-keras rebuild differs from the Keras model by {worst:.2e} "
                                    f"(> {REBUILD_TOLERANCE:g})")
    return worst
