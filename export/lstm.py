"""Rebuild a Keras 3 recurrent model in tf-keras (Keras 2) so that it converts to builtin TFLite ops.

Why: the TFLite converter recognises only tf-keras' LSTM (a `tf.function` with the "api_implements"
signature it pattern-matches) and turns it into one builtin UNIDIRECTIONAL_SEQUENCE_LSTM op. A Keras 3
LSTM, GRU or SimpleRNN converts to a WHILE loop (whose full-int8 calibration segfaults), to Flex
ops (Keras' own `export(format="litert")`), or crashes the converter (measured:
docs/conversion-facts.md). TFLite has no GRU or SimpleRNN op, so those are rebuilt
with `unroll=True` over their fixed sequence length: one subgraph of builtin ops that quantizes to
full int8 (the weights are shared by every step, so the file does not grow with the length).

How: the Keras 3 functional graph is replayed node by node (`Functional._run_through_graph`) on
tf-keras inputs with a fixed batch size, each Keras 3 layer replaced by the tf-keras layer of the
same class built from its config (initializers, regularizers and Keras-3-only options dropped:
the weights are copied afterwards), stateless Keras 3 ops (`keras.ops.*` used in a functional
graph) wrapped in a tf-keras Lambda, nested models rebuilt recursively. Then the trained weights
are copied layer by layer (Keras 3 and tf-keras share weight layouts, LSTM gate order i, f, c, o
and GRU reset_after layout included) and the copy is proven numerically (`check_rebuild`).

Anything that cannot be rebuilt raises `UnsupportedForRebuild` with one line naming the layer.
"""

from __future__ import annotations

import inspect

import numpy as np

from edgekit.core import quiet_tensorflow

RECURRENT_LAYERS = ("LSTM", "GRU", "SimpleRNN", "RNN", "Bidirectional", "ConvLSTM1D", "ConvLSTM2D")
# Recurrent layers without a fused TFLite op: rebuilt unrolled over the sequence length.
UNROLLED_LAYERS = ("GRU", "SimpleRNN")
# Largest difference allowed between the Keras 3 model and its tf-keras twin: both run the same
# float32 math with the same weights; only kernel choice / summation order differs (~1e-7).
REBUILD_TOLERANCE = 1e-5
_RNN_OPTIONS_NOT_REBUILT = ("go_backwards", "return_state", "stateful")
_CONFIG_KEYS_DROPPED = ("seed", "quantization_config", "build_config", "use_cudnn")


class UnsupportedForRebuild(Exception):
    """The model has a layer (or topology) the tf-keras rebuild does not cover."""


def is_recurrent(model) -> bool:
    """True when any layer is recurrent: those models go through the tf-keras rebuild."""
    return any(type(layer).__name__ in RECURRENT_LAYERS for layer in _all_layers(model))


def _all_layers(model):
    for layer in getattr(model, "layers", []):
        yield layer
        if hasattr(layer, "layers"):  # nested models
            yield from _all_layers(layer)
        inner = getattr(layer, "forward_layer", None) or getattr(layer, "layer", None)
        if inner is not None and not hasattr(layer, "layers"):  # Bidirectional / TimeDistributed
            yield inner


def masking_problem(model) -> str | None:
    """One line naming the layer when the model feeds a mask into a recurrent layer, else None.

    The fused LSTM kernel and the unrolled GRU have no mask input: the converter either refuses the
    masked graph or keeps it as a WHILE loop. Padding without a mask (pre-padding: the zeros come
    first, so the last steps the classifier reads are real tokens) converts exactly."""
    for layer in _all_layers(model):
        kind = type(layer).__name__
        if kind == "Embedding" and layer.get_config().get("mask_zero"):
            return (f"layer {layer.name!r} (Embedding) has mask_zero=True: recurrent layers with a mask "
                    "have no builtin TFLite form; retrain with mask_zero=False and pad sequences at the "
                    "front (pre-padding), as `edgekit train text` does")
        if kind == "Masking":
            return (f"layer {layer.name!r} (Masking) masks time steps: recurrent layers with a mask have no "
                    "builtin TFLite form; remove it and pad sequences at the front (pre-padding)")
    return None


def _activation_name(value):
    if isinstance(value, str) or value is None:
        return value
    if isinstance(value, dict):  # serialized activation object
        return value.get("config", {}).get("name") or value.get("class_name")
    name = getattr(value, "__name__", None)
    if name is None:
        raise UnsupportedForRebuild(f"activation {value!r} has no name")
    return name


def _clean_config(config: dict, kind: str, layer_name: str, nested: bool = False) -> dict:
    """A Keras 3 layer config made acceptable to the tf-keras layer of the same class."""
    cleaned = {}
    for key, value in config.items():
        if key in _CONFIG_KEYS_DROPPED or key.endswith(("_initializer", "_regularizer", "_constraint")):
            continue  # weights are copied after the rebuild; these only matter for training
        if key == "dtype" and isinstance(value, dict):
            value = value.get("config", {}).get("name", "float32")
        elif key in ("activation", "recurrent_activation"):
            value = _activation_name(value)
        elif key in ("layer", "backward_layer") and isinstance(value, dict):  # Bidirectional, wrappers
            inner_kind = value["class_name"]
            value = {"class_name": inner_kind,
                     "config": _clean_config(value["config"], inner_kind, layer_name, nested=True)}
        cleaned[key] = value
    if kind in RECURRENT_LAYERS:
        for option in _RNN_OPTIONS_NOT_REBUILT:
            # (a Bidirectional's backward layer runs go_backwards=True by design)
            if cleaned.get(option) and not (nested and option == "go_backwards"):
                raise UnsupportedForRebuild(f"layer {layer_name!r} ({kind}) uses {option}=True, which the "
                                            "tf-keras rebuild does not cover")
        if "unroll" in cleaned:
            # LSTM: keep the loop so the converter fuses it; GRU/SimpleRNN: unroll (no fused op exists).
            cleaned["unroll"] = kind in UNROLLED_LAYERS
    return cleaned


def _accepted_keys(cls) -> set[str] | None:
    parameters = inspect.signature(cls.__init__).parameters
    return {name for name, p in parameters.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


class _Rebuilder:
    """Maps each Keras 3 operation of a graph to its tf-keras twin, remembering the pairs."""

    def __init__(self, batch_size: int):
        quiet_tensorflow()
        import tf_keras

        self.tf_keras = tf_keras
        self.batch_size = batch_size
        self.pairs: list[tuple[object, object]] = []
        self._twins: dict[int, object] = {}

    def model(self, model):
        """The tf-keras twin of a Keras 3 functional (or Sequential) model."""
        graph = getattr(model, "_functional", None) or model  # Sequential wraps a Functional
        if not hasattr(graph, "_run_through_graph") or not hasattr(graph, "inputs"):
            raise UnsupportedForRebuild(f"model {model.name!r} ({type(model).__name__}) is subclassed: only "
                                        "functional and Sequential models can be rebuilt")
        inputs = [self.tf_keras.Input(batch_size=self.batch_size, shape=tuple(spec.shape[1:]),
                                      dtype=str(spec.dtype), name=spec.name) for spec in graph.inputs]
        structured = inputs[0] if len(inputs) == 1 else inputs
        outputs = graph._run_through_graph(structured, operation_fn=self.twin)
        return self.tf_keras.Model(structured, outputs, name=model.name)

    def twin(self, operation):
        key = id(operation)
        if key not in self._twins:
            self._twins[key] = self._make_twin(operation)
        return self._twins[key]

    def _make_twin(self, operation):
        import keras

        kind = type(operation).__name__
        if isinstance(operation, keras.Model):
            twin = self.model(operation)
            self.pairs.append((operation, twin))
            return twin
        if not isinstance(operation, keras.layers.Layer):  # a keras.ops call inside the graph
            return self._op_twin(operation)
        cls = getattr(self.tf_keras.layers, kind, None)
        if cls is None:
            raise UnsupportedForRebuild(f"layer {operation.name!r} ({kind}) has no tf-keras twin to rebuild "
                                        "the recurrent model with")
        config = _clean_config(operation.get_config(), kind, operation.name)
        accepted = _accepted_keys(cls) | {"name", "trainable", "dtype"}
        if "layer" in config and "layer" in accepted:  # wrappers deserialize their inner layer
            config["layer"] = self.tf_keras.layers.deserialize(config["layer"])
            if config.get("backward_layer"):
                config["backward_layer"] = self.tf_keras.layers.deserialize(config["backward_layer"])
        try:
            clone = cls(**{k: v for k, v in config.items() if k in accepted})
        except (TypeError, ValueError) as exc:
            raise UnsupportedForRebuild(f"layer {operation.name!r} ({kind}): tf-keras refuses its config: "
                                        f"{str(exc).splitlines()[0]}") from None
        self.pairs.append((operation, clone))
        return clone

    def _op_twin(self, operation):
        """A stateless Keras 3 op (e.g. `keras.ops.add` in a functional graph) as a tf-keras Lambda:
        with the TensorFlow backend it runs the same TF ops on the tf-keras tensors."""
        if getattr(operation, "weights", None):
            raise UnsupportedForRebuild(f"operation {operation.name!r} has weights but is not a layer")
        lambda_layer = self.tf_keras.layers.Lambda

        def call(*args, **kwargs):
            import tensorflow as tf

            flat = tf.nest.flatten((args, kwargs))
            positions = [i for i, v in enumerate(flat)
                         if tf.is_tensor(v) and self.tf_keras.backend.is_keras_tensor(v)]

            def apply(tensors):
                tensors = tensors if isinstance(tensors, list) else [tensors]
                filled = list(flat)
                for i, tensor in zip(positions, tensors):
                    filled[i] = tensor
                a, k = tf.nest.pack_sequence_as((args, kwargs), filled)
                return operation(*a, **k)

            tensors = [flat[i] for i in positions]
            return lambda_layer(apply, name=operation.name)(tensors if len(tensors) > 1 else tensors[0])

        return call


def rebuild_in_tf_keras(model, batch_size: int = 1):
    """Return a tf-keras model with the same graph and weights as the Keras 3 `model`, batch fixed to
    `batch_size` (the converter needs static shapes to fuse LSTMs and to unroll GRUs)."""
    problem = masking_problem(model)
    if problem:
        raise UnsupportedForRebuild(problem)
    for layer in _all_layers(model):
        kind = type(layer).__name__
        if kind == "Bidirectional":
            kind = type(layer.forward_layer).__name__
        elif not getattr(layer, "_inbound_nodes", None):
            continue  # a wrapped layer (checked through its wrapper)
        if kind in UNROLLED_LAYERS and _time_steps(layer) is None:
            raise UnsupportedForRebuild(f"layer {layer.name!r} ({kind}) has no fixed sequence length: "
                                        "GRU/SimpleRNN are unrolled over it; give the Input a fixed length")
    rebuilder = _Rebuilder(batch_size)
    try:
        twin = rebuilder.model(model)
    except UnsupportedForRebuild:
        raise
    except Exception as exc:  # tf-keras refused the replayed graph: name the first line of why
        raise UnsupportedForRebuild(f"tf-keras rebuild failed: {str(exc).strip().splitlines()[0]}") from None
    for original, clone in rebuilder.pairs:
        if hasattr(original, "layers") and hasattr(clone, "layers"):
            continue  # nested models: their layers are pairs of their own
        weights = original.get_weights()
        expected = [tuple(w.shape) for w in clone.get_weights()]
        if [tuple(w.shape) for w in weights] != expected:
            raise UnsupportedForRebuild(f"layer {original.name!r}: weight shapes {[w.shape for w in weights]} "
                                        f"do not match the tf-keras layer's {expected}")
        clone.set_weights(weights)
    return twin


def _time_steps(layer) -> int | None:
    try:
        shape = layer.input.shape if not isinstance(layer.input, list) else layer.input[0].shape
    except (AttributeError, ValueError):
        return None
    return shape[1] if len(shape) >= 2 else None


def sample(x, i: int):
    """Sample `i` with a batch axis of 1, for one array or a list of arrays (one per input)."""
    if isinstance(x, (list, tuple)):
        return [np.asarray(a)[i:i + 1] for a in x]
    return np.asarray(x)[i:i + 1]


def count(x) -> int:
    return len(x[0]) if isinstance(x, (list, tuple)) else len(x)


def check_rebuild(model, twin, samples) -> float:
    """Run both models on `samples` one at a time (the twin has batch 1); return the max abs difference
    and raise UnsupportedForRebuild when it is over REBUILD_TOLERANCE."""
    worst = 0.0
    for i in range(count(samples)):
        batch = sample(samples, i)
        expected = [np.asarray(o) for o in _as_list(model(batch, training=False))]
        got = [np.asarray(o) for o in _as_list(twin(batch, training=False))]
        worst = max([worst] + [float(np.max(np.abs(e - g))) for e, g in zip(expected, got)])
    if worst > REBUILD_TOLERANCE:
        raise UnsupportedForRebuild(f"tf-keras rebuild differs from the Keras model by {worst:.2e} "
                                    f"(> {REBUILD_TOLERANCE:g})")
    return worst


def _as_list(value):
    if isinstance(value, dict):
        return list(value.values())
    return list(value) if isinstance(value, (list, tuple)) else [value]


def without_lstm_cell_clip(data: bytes) -> bytes:
    """Set cell_clip to 0 (off) on every fused LSTM op.

    The converter's Keras-LSTM fusion writes cell_clip=10, which Keras does not have: a trained LSTM
    whose cell state passes |10| (e.g. over many padding steps) then drifts from Keras by up to
    0.02 in probability on the text model, although its hidden state hides it (tanh saturates).
    Without the clip fp32 matches Keras to ~2e-7. Quantized kernels treat 0 as "no clip" too; their
    int16 cell state saturates at its calibrated range instead."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    fused = schema.BuiltinOperator.UNIDIRECTIONAL_SEQUENCE_LSTM
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    changed = False
    for subgraph in model.subgraphs:
        for op in subgraph.operators:
            code = model.operatorCodes[op.opcodeIndex]
            if max(code.builtinCode, code.deprecatedBuiltinCode) == fused and op.builtinOptions.cellClip:
                op.builtinOptions.cellClip = 0.0
                changed = True
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)) if changed else data
