"""ONNX conversion of a Keras model (tf2onnx) and int8 static quantization (onnxruntime, QDQ).

- fp32: `tf2onnx.convert.from_function` on the Keras 3 model's call with a dynamic batch dimension;
  calls Keras compiles with XLA (grouped convolutions) are inlined first (`_convert_inlining_xla_calls`);
  LSTMs become one ONNX `LSTM` op. Graph input/output are named after edgekit.json (`tokens`, `probs`).
- int8: export/onnx_quantize.py `quantize_int8` (onnxruntime's pre-processing, then static QDQ
  quantization calibrated on the same representative data as TFLite).
Every file passes `onnx.checker.check_model(full_check=True)` before it is accepted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.core import quiet_tensorflow
from edgekit.export import onnx_quantize, recipes
from edgekit.export.keras_layers import keras_layer_names
from edgekit.export.onnx_quantize import quantize_int8
from edgekit.runtime import formats as device_formats

FORMAT = device_formats.get("onnx")
FILE_NAME = FORMAT.file_name
MIN_OPSET = 17



def convert_fp32(model, path: str | Path, opset: int = MIN_OPSET, metadata: dict | None = None) -> None:
    """Write the float ONNX graph of Keras 3 `model` to `path` (batch dimension dynamic)."""
    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset} is below the minimum {MIN_OPSET}")
    quiet_tensorflow()
    import onnx
    import tensorflow as tf
    import tf2onnx

    from edgekit.export.tflite import io_names

    input_names, output_names = io_names(model, metadata)
    signature = [tf.TensorSpec((None, *spec.shape[1:]), spec.dtype, name=name)
                 for spec, name in zip(model.inputs, input_names)]
    single = len(signature) == 1
    function = tf.function(lambda *xs: model(xs[0] if single else list(xs), training=False))
    concrete = function.get_concrete_function(*signature)
    handlers = {"Erfc": (_erfc_as_erf, [])}
    if _xla_functions(concrete):
        proto = _convert_inlining_xla_calls(concrete, opset, handlers)
    else:
        proto, _ = tf2onnx.convert.from_function(function, input_signature=signature, opset=opset,
                                                 custom_op_handlers=handlers)
    _freeze_captured_tensors(proto, concrete)
    _rename_graph_io(proto, input_names, output_names)
    onnx.save(proto, str(path))


# Keras 3's TF backend runs some ops in a nested `tf.function(jit_compile=True)` (grouped and depthwise-
# by-groups convolutions, e.g. ConvNeXt's 7x7): the call is marked `_XlaMustCompile` and its function
# `_noinline`, so grappler keeps it a StatefulPartitionedCall, an op tf2onnx cannot convert.
_XLA_ATTRS = ("_XlaMustCompile", "_noinline")


def _xla_functions(concrete) -> list[str]:
    """Names of the functions in `concrete`'s library that are marked for XLA / not to be inlined."""
    library = concrete.graph.as_graph_def().library
    return [f.signature.name for f in library.function if any(a in f.attr for a in _XLA_ATTRS)]


def _convert_inlining_xla_calls(concrete, opset: int, handlers: dict):
    """tf2onnx's from_function with one step added: after freezing, drop the XLA / no-inline marks so
    that grappler's function inliner (tf2onnx's tf_optimize) inlines those calls; the grouped
    convolution inside becomes an ONNX Conv with `group`. The math is unchanged (XLA was only how TF
    would have run it)."""
    import tensorflow as tf
    import tf2onnx
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    frozen = convert_variables_to_constants_v2(concrete, lower_control_flow=False, aggressive_inlining=True)
    graph_def = frozen.graph.as_graph_def(add_shapes=True)
    for function in graph_def.library.function:
        for attr in _XLA_ATTRS:
            function.attr.pop(attr, None)
    for node in [*graph_def.node, *(n for f in graph_def.library.function for n in f.node_def)]:
        for attr in _XLA_ATTRS:
            node.attr.pop(attr, None)
    inputs = [t.name for t in concrete.inputs if t.dtype != tf.resource]
    outputs = [t.name for t in concrete.outputs if t.dtype != tf.resource]
    proto, _ = tf2onnx.convert.from_graph_def(graph_def, input_names=inputs, output_names=outputs,
                                              opset=opset, custom_op_handlers=handlers)
    return proto


def _freeze_captured_tensors(proto, concrete) -> None:
    """Constant tensors a layer captured (not variables: e.g. Keras 3 Normalization's mean and
    variance in EfficientNet) come out of tf2onnx as extra graph inputs; make them initializers."""
    from onnx import numpy_helper

    values = {internal.name: external.numpy()
              for external, internal in zip(concrete.captured_inputs, concrete.graph.internal_captures)
              if external.dtype.name != "resource"}
    for value in list(proto.graph.input):
        if value.name in values:
            proto.graph.input.remove(value)
            proto.graph.initializer.append(numpy_helper.from_array(values[value.name], value.name))
    used = {name for node in proto.graph.node for name in node.input}
    for initializer in list(proto.graph.initializer):
        if initializer.name in values and initializer.name not in used:
            proto.graph.initializer.remove(initializer)


def _erfc_as_erf(ctx, node, name, args):
    """tf2onnx has no handler for TF's Erfc, which the exact GELU (Keras' "gelu" activation) uses:
    erfc(x) = 1 - erf(x) in standard ONNX ops (absolute error ~1e-7)."""
    from tf2onnx import utils

    x, output = node.input[0], node.output[0]
    shape, dtype = ctx.get_shape(output), ctx.get_dtype(output)
    ctx.remove_node(node.name)
    erf = ctx.make_node("Erf", [x], shapes=[shape], dtypes=[dtype])
    one = ctx.make_const(utils.make_name("one"), np.array(1, dtype=utils.map_onnx_to_numpy_type(dtype)))
    ctx.make_node("Sub", [one.output[0], erf.output[0]], outputs=[output], name=node.name,
                  shapes=[shape], dtypes=[dtype])


def _rename_graph_io(proto, input_names: list[str], output_names: list[str]) -> None:
    """tf2onnx names tensors after TF (`x:0`, `Identity:0`); the bundle contract uses edgekit.json's."""
    renames = {}
    for value, new in zip(proto.graph.input, input_names):
        renames[value.name] = new
    for value, new in zip(proto.graph.output, output_names):
        renames[value.name] = new
    for value in list(proto.graph.input) + list(proto.graph.output):
        value.name = renames.get(value.name, value.name)
    for node in proto.graph.node:
        for i, name in enumerate(node.input):
            if name in renames:
                node.input[i] = renames[name]
        for i, name in enumerate(node.output):
            if name in renames:
                node.output[i] = renames[name]


# -- the host-half interface (export/formats.py) ----------------------------------------------------

def unsupported(recipe: recipes.Recipe) -> str | None:
    """Why edgekit does not write this recipe as ONNX (measured: docs/conversion-facts.md)."""
    if recipe.weights == "float16":
        return ("onnxruntime's CPU provider runs most fp16 ops by casting back to float32: no speed or "
                "accuracy reason to ship it; use onnx fp32")
    if recipe.mode == "dynamic":
        return ("onnxruntime quantize_dynamic ran CNNs 10x slower than fp32 (ConvInteger kernels); use onnx "
                "int8 (static QDQ)")
    if recipe.activations == "int16":
        return "edgekit has no 16-bit-activation ONNX recipe; use tflite int16x8 or onnx int8"
    return None


def refusal(recipe: recipes.Recipe, layer_classes: set[str]) -> str | None:
    return None


def recipe_name(recipe: recipes.Recipe) -> str:
    """Static integer recipes are written as QuantizeLinear/DequantizeLinear pairs: `qdq_...`."""
    return recipe.name.replace("static_", "qdq_", 1) if recipe.mode == "static" else recipe.name


def export_settings(recipe: recipes.Recipe, settings: dict) -> dict:
    """QDQ models keep float inputs and outputs (the recipe's integer I/O type does not apply)."""
    return {**settings, "io_dtype": "float32"}


def op_problems(op_records: list[dict], layer_classes: dict[str, str]) -> list[tuple[str, list[str], str]]:
    return []   # every ONNX op tf2onnx and onnxruntime's quantizer write runs in onnxruntime


def write_metadata(model_path: Path, metadata: dict, input_spec: dict, label: str) -> dict | None:
    return None  # no phone-app metadata for ONNX


def export_variant(recipe, model, metadata: dict, request: dict, calibration, staging: Path,
                   cache: dict) -> Path:
    """Write `recipe` of `model` into `staging` and return the file. The fp32 graph is converted once
    per worker (`cache`) and quantized from there."""
    import shutil

    if "fp32" not in cache:
        fp32 = staging.parent / "_fp32.onnx"
        convert_fp32(model, fp32, opset=request["opset"], metadata=metadata)
        check(fp32)
        cache["fp32"] = fp32
    path = staging / FILE_NAME
    if recipe.mode == "float":
        shutil.copyfile(cache["fp32"], path)
    else:
        quantize_int8(cache["fp32"], path, calibration, keras_layer_names(model), list(recipe.float_layers),
                      calibration_method=onnx_quantize.CALIBRATION_METHODS[recipe.calibration_method],
                      per_channel=recipe.granularity == "per_channel")
    check(path)
    return path


def conversion_path(model, recipe) -> str:
    return "tf2onnx" if recipe.mode == "float" else "tf2onnx+onnxruntime.quantize_static"


def check(path: str | Path) -> None:
    """onnx's full model check (graph, types and shape inference); raises on a bad file."""
    import onnx

    onnx.checker.check_model(str(path), full_check=True)


def layer_errors(entry: dict, bundles: list[dict], model_dir: Path, x, samples: int, factory: str) -> dict:
    """Per-tensor error of a QDQ bundle against the fp32 ONNX bundle beside it (qdq_loss_debug)."""
    from edgekit.export import onnx_debug

    return onnx_debug.layer_errors(entry, bundles, x, samples)


def fix_candidates(entry: dict, context):
    from edgekit.export import onnx_debug

    return onnx_debug.FixCandidates(entry, context)
