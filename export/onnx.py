"""ONNX conversion of a Keras model (tf2onnx) and int8 static quantization (onnxruntime, QDQ).

- fp32: `tf2onnx.convert.from_function` on the Keras 3 model's call with a dynamic batch dimension;
  calls Keras compiles with XLA (grouped convolutions) are inlined first (`_convert_inlining_xla_calls`);
  LSTMs become one ONNX `LSTM` op. Graph input/output are named after edgekit.json (`tokens`, `probs`).
- int8: onnxruntime's `quant_pre_process` (folds BatchNorm's Mul/Add into the Conv before it), then
  `quantize_static` in QDQ format, per-channel int8 weights (7-bit, reduce_range), int8 activations,
  calibrated by a CalibrationDataReader over the same representative data as TFLite.
  `keep_float_layers` (Keras layer names) excludes those layers' nodes from quantization.
Every file passes `onnx.checker.check_model(full_check=True)` before it is accepted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.core import quiet_tensorflow
from edgekit.export.formats import FILE_NAMES
from edgekit.export.opcheck import layers_of

FILE_NAME = FILE_NAMES["onnx"]
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
    import numpy as np
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


def quantize_int8(fp32_path: str | Path, path: str | Path, calibration: np.ndarray,
                  layer_names: set[str] | None = None, keep_float_layers: list[str] | None = None, *,
                  keep_float_nodes: list[str] | None = None, calibration_method: str = "MinMax") -> None:
    """Static QDQ int8 quantization of the float ONNX file at `fp32_path` into `path` (after
    onnxruntime's pre-processing; `keep_float_layers` is matched on the pre-processed graph's nodes).
    The one place edgekit quantizes ONNX: verify's fix search (verify/fix.py) calls it too, with
    `keep_float_nodes` (ONNX node names, or the tensors they produce, left in float) and another
    `calibration_method` (onnxruntime's CalibrationMethod name: MinMax, Percentile, Entropy)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        _prepare_for_quantization(fp32_path, prepared)
        _quantize_prepared(prepared, path, calibration, layer_names, keep_float_layers,
                           keep_float_nodes or [], calibration_method)


def _prepare_for_quantization(fp32_path: str | Path, path: str | Path) -> None:
    """onnxruntime's own pre-quantization step (its basic graph optimizations and ONNX shape inference)
    applied to the float graph. Why it matters: Keras 3's BatchNormalization after a depthwise conv comes
    out of tf2onnx as a per-channel Mul + Add that tf2onnx does not fold into the Conv; quantized per
    tensor between Conv and Mul, the channels BatchNorm scales up lose all their precision. Folded here
    into the Conv, the per-channel weight scales absorb them (as TFLite does): EfficientNetB0's int8
    agreement with Keras went from 53% to 95% (TFLite int8: 92%). ONNX shape inference runs; the
    symbolic one is skipped (it needs sympy, and tf2onnx's graphs carry their shapes)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(fp32_path), str(path), skip_symbolic_shape=True)


def _quantize_prepared(fp32_path: Path, path: str | Path, calibration, layer_names: set[str] | None,
                       keep_float_layers: list[str] | None, keep_float_nodes: list[str],
                       calibration_method: str) -> None:
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    proto = onnx.load(str(fp32_path))
    initializers = {i.name for i in proto.graph.initializer}
    graph_inputs = [v for v in proto.graph.input if v.name not in initializers]
    exclude: list[str] = []
    if keep_float_layers:
        wanted = set(keep_float_layers)
        exclude = [node.name for node in proto.graph.node
                   if wanted.intersection(layers_of([node.name, *node.output], layer_names or wanted))]
        if not exclude:
            raise ValueError(f"keep_float_layers: no ONNX nodes found for {', '.join(keep_float_layers)}")
    if keep_float_nodes:
        wanted = set(keep_float_nodes)
        exclude += [node.name for node in proto.graph.node
                    if node.name not in exclude and wanted.intersection([node.name, *node.output])]
    arrays = _input_arrays(calibration, [v.name for v in graph_inputs])
    arrays = [a.astype(_value_dtype(v)) for a, v in zip(arrays, graph_inputs)]

    class Calibration(CalibrationDataReader):
        """Representative samples, one batch-1 feed per step."""

        def __init__(self):
            self._feeds = iter([{v.name: a[i:i + 1] for v, a in zip(graph_inputs, arrays)}
                                for i in range(len(arrays[0]))])

        def get_next(self):
            return next(self._feeds, None)

    # reduce_range (7-bit weights): onnxruntime's x86 int8 kernels multiply with VPMADDUBSW, whose 16-bit
    # pair sums saturate with full-range weights; on the CIFAR MobileNetV2 that took agreement with the
    # fp32 graph from 0.885 to 0.66 on x86, while ARM's kernels gave other numbers (0.09-0.31 apart):
    # with 7-bit weights the same file computes the same thing on both.
    quantize_static(str(fp32_path), str(path), Calibration(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True,
                    reduce_range=True, nodes_to_exclude=exclude,
                    calibrate_method=getattr(CalibrationMethod, calibration_method))


def _input_arrays(x, names: list[str]) -> list[np.ndarray]:
    """`x` (one array, a list in input order, or a mapping name -> array) as a list in `names` order."""
    if isinstance(x, dict):
        if len(names) == 1 and names[0] not in x and len(x) == 1:
            return [np.asarray(next(iter(x.values())))]
        return [np.asarray(x[name]) for name in names]
    arrays = [np.asarray(a) for a in x] if isinstance(x, (list, tuple)) else [np.asarray(x)]
    if len(arrays) != len(names):
        raise ValueError(f"the model takes {len(names)} inputs, got {len(arrays)}")
    return arrays


def _value_dtype(value) -> np.dtype:
    from onnx.helper import tensor_dtype_to_np_dtype

    return tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)


def export_variant(recipe, model, metadata: dict, request: dict, calibration, staging: Path,
                   cache: dict) -> Path:
    """The format interface (export/formats.py): write `recipe` of `model` into `staging`, return the file.
    The fp32 graph is converted once per worker (`cache`) and quantized from there."""
    import shutil

    if "fp32" not in cache:
        fp32 = staging.parent / "_fp32.onnx"
        convert_fp32(model, fp32, opset=request["opset"], metadata=metadata)
        check(fp32)
        cache["fp32"] = fp32
    path, variant = staging / FILE_NAME, recipe.variant
    if variant == "fp32":
        shutil.copyfile(cache["fp32"], path)
    elif variant == "int8":
        from edgekit.export.tflite import keras_layer_names

        quantize_int8(cache["fp32"], path, calibration, keras_layer_names(model), list(recipe.float_layers))
    else:
        raise ValueError(f"no ONNX recipe for {variant}")
    check(path)
    return path


def conversion_path(model, variant: str) -> str:
    return "tf2onnx" if variant == "fp32" else "tf2onnx+onnxruntime.quantize_static"


def check(path: str | Path) -> None:
    """onnx's full model check (graph, types and shape inference); raises on a bad file."""
    import onnx

    onnx.checker.check_model(str(path), full_check=True)


def describe(path: str | Path) -> dict:
    """Inputs/outputs (name, shape with null for dynamic dims, dtype), op records and histogram."""
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    proto = onnx.load(str(path))

    def value_info(value) -> dict:
        tensor = value.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
        return {"name": value.name, "shape": shape,
                "dtype": str(np.dtype(tensor_dtype_to_np_dtype(tensor.elem_type))), "quantization": None}

    initializers = {i.name for i in proto.graph.initializer}
    records = []
    for node in proto.graph.node:
        op = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
        records.append({"op": op, "custom": False, "names": [node.name, *node.output]})
    histogram: dict[str, int] = {}
    for record in records:
        histogram[record["op"]] = histogram.get(record["op"], 0) + 1
    return {"inputs": [value_info(v) for v in proto.graph.input if v.name not in initializers],
            "outputs": [value_info(v) for v in proto.graph.output],
            "op_records": records, "ops": dict(sorted(histogram.items())),
            "opset": max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=None)}


def run(path: str | Path, x):
    """Float outputs on `x` (one array, a list in input order, or a mapping input name -> array):
    one array, or a list in output order when the model has several outputs."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    feeds = dict(zip(names, _input_arrays(x, names)))
    outputs = [np.asarray(y, dtype=np.float32) for y in session.run(None, feeds)]
    return outputs[0] if len(outputs) == 1 else outputs
