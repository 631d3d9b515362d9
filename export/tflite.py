"""TFLite (LiteRT) conversion of a Keras model, one recipe at a time, and reading .tflite files back.

Conversion paths (measured, see docs/conversion-facts.md):
- recurrent models (LSTM): rebuilt in tf-keras (export/lstm.py), converted from a concrete function
  with batch 1, so the converter emits the fused builtin UNIDIRECTIONAL_SEQUENCE_LSTM (no WHILE/Flex).
- everything else (CNNs): the Keras 3 model exported as a SavedModel with a batch-1 signature
  (keras.export.ExportArchive), converted with `from_saved_model` (variables frozen, batch norm folded).
  A Keras 3 concrete function is not used: it keeps READ_VARIABLE ops that fail at invoke.

API for per-layer debugging and selective quantization (used by verify):

    from edgekit.export import tflite
    model, metadata = train.io.load_model(model_dir)
    x = export.source.load_calibration(model_dir, 200)
    converter = tflite.build_converter(model, "int8", calibration=x)   # a configured TFLiteConverter
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=tflite.representative_dataset(x))
    debugger.run(); debugger.layer_statistics ...           # keys are op output tensor names
    tflite.layers_of_tensor(name, tflite.keras_layer_names(model))   # -> Keras layer of a node
    # keep some layers in float (by Keras layer name) in the full-int8 model:
    data = tflite.convert(model, "int8", calibration=x, keep_float_layers=["probs"])

`export.export_model(..., keep_float_layers=[...])` does the latter for the int8 bundles.
`convert` and `build_converter` import TensorFlow; `describe` and `run` need only ai_edge_litert.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import numpy as np

from edgekit.core import quiet_tensorflow
from edgekit.export import lstm
from edgekit.export.formats import FILE_NAMES
from edgekit.export.opcheck import layers_of

FILE_NAME = FILE_NAMES["tflite"]
QUANTIZED_VARIANTS = ("int8", "int16x8")


class ConverterRefused(Exception):
    """The converter declined the recipe for this model (an op without a kernel for it): SKIPPED."""


# Converter messages that mean "this recipe does not apply to these ops", as opposed to a bug.
_REFUSAL_MARKERS = ("not yet supported for op", "is not supported for 16x8", "not supported by 16x8",
                    # int16x8 (the older calibrating quantizer) on integer inputs such as token ids:
                    "Max and min for dynamic tensors should be recorded during calibration")


def keras_layer_names(model) -> set[str]:
    return set(keras_layer_classes(model))


def keras_layer_classes(model) -> dict[str, str]:
    """Every layer (nested models included) by name -> class name."""
    found: dict[str, str] = {}

    def walk(m):
        for layer in m.layers:
            found[layer.name] = type(layer).__name__
            if hasattr(layer, "layers"):
                walk(layer)

    walk(model)
    return found


def layers_of_tensor(name: str, layer_names: set[str]) -> list[str]:
    return layers_of([name], layer_names)


def representative_dataset(x):
    """A converter/debugger `representative_dataset`: one batch-1 sample per step. `x` is one array
    (one-input model) or a list of arrays, one per model input in the model's input order."""

    def generate():
        for i in range(lstm.count(x)):
            value = lstm.sample(x, i)
            yield value if isinstance(value, list) else [value]

    return generate


def model_inputs(model, x):
    """`x` as the model takes it: one array, or a list in model input order (from a list or a
    mapping of input name -> array)."""
    if isinstance(x, dict):
        return [x[spec.name] for spec in model.inputs] if len(model.inputs) > 1 else x[model.inputs[0].name]
    return list(x) if isinstance(x, (list, tuple)) else x


def io_names(model, metadata: dict | None) -> tuple[list[str], list[str]]:
    """Signature input and output names: edgekit.json's for the built-in kinds (`input.name`,
    `output.name`, or `inputs`/`outputs` lists), else the Keras model's own names."""
    metadata = metadata or {}
    inputs = [spec.name for spec in model.inputs]
    outputs = list(getattr(model, "output_names", None) or [f"output_{i}" for i in range(len(model.outputs))])
    if len(outputs) == 1:
        outputs = ["output"]
    listed_in = [entry.get("name") for entry in metadata.get("inputs") or []]
    listed_out = [entry.get("name") for entry in metadata.get("outputs") or []]
    if len(listed_in) == len(inputs) and all(listed_in):
        inputs = listed_in
    elif len(inputs) == 1 and (metadata.get("input") or {}).get("name"):
        inputs = [metadata["input"]["name"]]
    if len(listed_out) == len(outputs) and all(listed_out):
        outputs = listed_out
    elif len(outputs) == 1 and (metadata.get("output") or {}).get("name"):
        outputs = [metadata["output"]["name"]]
    return inputs, outputs


def _io_names(model, metadata: dict | None) -> tuple[str, str]:
    inputs, outputs = io_names(model, metadata)
    return inputs[0], outputs[0]


def _named_outputs(names: list[str], value) -> dict:
    values = list(value.values()) if isinstance(value, dict) else \
        list(value) if isinstance(value, (list, tuple)) else [value]
    return dict(zip(names, values))


_workdirs: list[str] = []
_saved_models: dict[int, Path] = {}
_twins: dict[int, tuple] = {}  # id(model) -> (model, tf-keras twin, concrete function, [checked])


def _scratch_dir() -> Path:
    path = tempfile.mkdtemp(prefix="edgekit-tflite-")
    if not _workdirs:
        atexit.register(lambda: [shutil.rmtree(p, ignore_errors=True) for p in _workdirs])
    _workdirs.append(path)
    return Path(path)


def conversion_path(model, variant: str = "") -> str:
    return "tf_keras_rebuild" if lstm.is_recurrent(model) else "keras_saved_model"


def _new_converter(model, metadata: dict | None, check_x=None):
    """A fresh float converter for `model` with batch 1 (see the module docstring for the paths)."""
    quiet_tensorflow()
    import tensorflow as tf

    input_names, output_names = io_names(model, metadata)
    signature = [tf.TensorSpec((1, *spec.shape[1:]), spec.dtype, name=name)
                 for spec, name in zip(model.inputs, input_names)]
    single = len(signature) == 1
    if lstm.is_recurrent(model):
        cached = _twins.get(id(model))
        if cached is None or cached[0] is not model:  # one rebuild and trace serves every variant
            twin = lstm.rebuild_in_tf_keras(model, batch_size=1)
            function = tf.function(lambda *xs: _named_outputs(
                output_names, twin(xs[0] if single else list(xs), training=False)))
            cached = _twins[id(model)] = (model, twin, function.get_concrete_function(*signature), [False])
        _, twin, concrete, checked = cached
        if not checked[0] and check_x is not None and lstm.count(check_x):
            lstm.check_rebuild(model, twin, _first(check_x, 4))
            checked[0] = True
        return tf.lite.TFLiteConverter.from_concrete_functions([concrete], twin)
    import keras

    saved = _saved_models.get(id(model))
    if saved is None:  # one SavedModel per model serves every variant (writing it costs seconds)
        saved = _scratch_dir() / "saved_model"
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serving_default", lambda *xs: _named_outputs(
            output_names, model(xs[0] if single else list(xs), training=False)),
            input_signature=signature)
        archive.write_out(str(saved), verbose=False)
        _saved_models[id(model)] = saved
    return tf.lite.TFLiteConverter.from_saved_model(str(saved), signature_keys=["serving_default"])


def _first(x, n: int):
    return [a[:n] for a in x] if isinstance(x, (list, tuple)) else x[:n]


def build_converter(model, variant: str, calibration: np.ndarray | None = None,
                    int8_io: str = "float32", metadata: dict | None = None):
    """A `tf.lite.TFLiteConverter` configured for `variant` (fp32, fp16, dynamic, int8, int16x8).

    `model` is a Keras 3 model or a model directory. int8/int16x8 need `calibration` (model inputs,
    first axis = samples). `int8_io` (float32/int8/uint8) sets the int8 variant's float input/output
    type; integer model inputs (token ids) stay as they are."""
    quiet_tensorflow()
    import tensorflow as tf

    if isinstance(model, (str, Path)):
        from edgekit.train.io import load_model

        model, metadata = load_model(model)
    if calibration is not None:
        calibration = model_inputs(model, calibration)
    converter = _new_converter(model, metadata, calibration)
    if variant == "fp32":
        return converter
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "dynamic":
        pass  # Optimize.DEFAULT without a representative dataset = dynamic-range int8 weights
    elif variant in QUANTIZED_VARIANTS:
        if calibration is None or lstm.count(calibration) == 0:
            raise ValueError(f"{variant} needs calibration data")
        converter.representative_dataset = representative_dataset(calibration)
        if variant == "int8":
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            io_type = {"float32": tf.float32, "int8": tf.int8, "uint8": tf.uint8}[int8_io]
            if all(spec.dtype in ("float32", "float16", "float64") for spec in model.inputs):
                converter.inference_input_type = io_type  # (one type for all inputs; ids stay int32)
            converter.inference_output_type = io_type
        else:
            converter.target_spec.supported_ops = [
                tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    else:
        raise ValueError(f"unknown TFLite variant {variant!r}")
    return converter


def _convert(converter) -> bytes:
    try:
        return converter.convert()
    except Exception as exc:  # ConverterError and friends carry the reason in their message
        text = str(exc)
        for marker in _REFUSAL_MARKERS:
            if marker in text:
                line = next((l for l in text.splitlines() if marker in l), text.splitlines()[0])
                raise ConverterRefused(line.strip().split("error: ")[-1]) from None
        raise


def convert(model, variant: str, calibration: np.ndarray | None = None, int8_io: str = "float32",
            metadata: dict | None = None, keep_float_layers: list[str] | None = None) -> bytes:
    """The .tflite bytes of `model` under `variant`. `keep_float_layers` (Keras layer names) leaves
    those layers' ops in float inside the int8 model (the converter's denylisted nodes); other
    variants ignore it (int16x8 goes through the converter's older quantizer, which has no denylist)."""
    converter = build_converter(model, variant, calibration, int8_io, metadata)
    if not keep_float_layers or variant != "int8":
        return without_lstm_cell_clip(_convert(converter))
    return without_lstm_cell_clip(_convert_keeping_float(converter, model, int8_io, keep_float_layers))


def without_lstm_cell_clip(data: bytes) -> bytes:
    """Set cell_clip to 0 (off) on every fused LSTM op.

    The converter's Keras-LSTM fusion writes cell_clip=10, which Keras does not have: a trained LSTM
    whose cell state passes |10| (e.g. over many padding steps) then drifts from Keras by up to
    0.02 in probability on the text model, although its hidden state hides it (tanh saturates).
    Without the clip fp32 matches Keras to ~2e-7. Quantized kernels treat 0 as "no clip" too; their
    int16 cell state saturates at its calibrated range instead."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    lstm = schema.BuiltinOperator.UNIDIRECTIONAL_SEQUENCE_LSTM
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    changed = False
    for subgraph in model.subgraphs:
        for op in subgraph.operators:
            code = model.operatorCodes[op.opcodeIndex]
            if max(code.builtinCode, code.deprecatedBuiltinCode) == lstm and op.builtinOptions.cellClip:
                op.builtinOptions.cellClip = 0.0
                changed = True
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)) if changed else data


def _convert_keeping_float(converter, model, int8_io, keep_float_layers) -> bytes:
    """Calibrate only, then quantize with the named layers' ops denylisted (what
    QuantizationDebugger.get_nondebug_quantized_model does, with the I/O types under our control)."""
    import tensorflow as tf
    from tensorflow.lite.python import convert as tflite_convert  # private API: denylisted_nodes

    known = keras_layer_names(model)
    unknown = sorted(set(keep_float_layers) - known)
    if unknown:
        raise ValueError(f"keep_float_layers: no layer named {', '.join(unknown)}")
    converter._experimental_calibrate_only = True
    calibrated = _convert(converter)
    wanted = set(keep_float_layers)
    nodes = [name for record in describe(calibrated)["op_records"] for name in record["names"]
             if wanted.intersection(layers_of([name], known))]
    if not nodes:
        raise ValueError(f"keep_float_layers: no ops found for {', '.join(keep_float_layers)}")
    io_type = {"float32": tf.float32, "int8": tf.int8, "uint8": tf.uint8}[int8_io]
    float_input = model.inputs[0].dtype in ("float32", "float16", "float64")
    return tflite_convert.mlir_quantize(
        calibrated, fully_quantize=int8_io != "float32",
        input_data_type=io_type if float_input else tf.float32, output_data_type=io_type,
        denylisted_nodes=nodes)


# -- reading .tflite files (no TensorFlow) --------------------------------------------------------

def describe(model: str | Path | bytes) -> dict:
    """A .tflite file's (or its bytes') inputs/outputs (signature name, tensor name, shape, dtype,
    quantization), op records in graph order and the op histogram, read from the flatbuffer (works
    for models the runtime cannot load)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(model if isinstance(model, bytes) else Path(model).read_bytes(), 0)
    graph = model.Subgraphs(0)
    type_names = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}

    def tensor_name(index: int) -> str:
        return graph.Tensors(index).Name().decode("utf-8", "replace")

    signature_names: dict[int, str] = {}
    if model.SignatureDefsLength():
        signature = model.SignatureDefs(0)
        for i in range(signature.InputsLength()):
            signature_names[signature.Inputs(i).TensorIndex()] = signature.Inputs(i).Name().decode()
        for i in range(signature.OutputsLength()):
            signature_names[signature.Outputs(i).TensorIndex()] = signature.Outputs(i).Name().decode()

    def tensor_info(index: int) -> dict:
        tensor = graph.Tensors(index)
        quant = tensor.Quantization()
        quantization = None
        if quant is not None and quant.ScaleLength():
            quantization = {"scale": quant.ScaleAsNumpy().astype(float).tolist(),
                            "zero_point": quant.ZeroPointAsNumpy().astype(int).tolist()}
        return {"name": signature_names.get(index, tensor_name(index)), "tensor_name": tensor_name(index),
                "index": int(index), "shape": tensor.ShapeAsNumpy().astype(int).tolist(),
                "dtype": type_names[tensor.Type()], "quantization": quantization}

    records = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        name = op_names.get(builtin, str(builtin))
        custom = name == "CUSTOM"
        if custom:
            name = (code.CustomCode() or b"CUSTOM").decode("utf-8", "replace")
        outputs = [op.Outputs(j) for j in range(op.OutputsLength()) if op.Outputs(j) >= 0]
        records.append({"op": name, "custom": custom, "names": [tensor_name(t) for t in outputs],
                        "dtypes": [type_names[graph.Tensors(t).Type()] for t in outputs]})
    histogram: dict[str, int] = {}
    for record in records:
        histogram[record["op"]] = histogram.get(record["op"], 0) + 1
    return {"inputs": [tensor_info(graph.Inputs(i)) for i in range(graph.InputsLength())],
            "outputs": [tensor_info(graph.Outputs(i)) for i in range(graph.OutputsLength())],
            "op_records": records, "ops": dict(sorted(histogram.items()))}


def export_variant(recipe, model, metadata: dict, request: dict, calibration, staging: Path,
                   cache: dict) -> Path:
    """The format interface (export/formats.py): write `recipe` of `model` into `staging`, return the file."""
    data = convert(model, recipe.variant, calibration=calibration, int8_io=request["int8_io"], metadata=metadata,
                   keep_float_layers=list(recipe.float_layers))
    path = staging / FILE_NAME
    path.write_bytes(data)
    return path


def run(path: str | Path, x):
    """Float outputs of a .tflite model on `x` (one sample at a time: the model has batch 1),
    quantizing inputs and dequantizing outputs where its I/O is integer. `x`: one array, a list of
    arrays in the model's input order, or a mapping of signature input name -> array. Returns one
    array, or a list of arrays in the model's output order when it has several outputs."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_content=Path(path).read_bytes(), num_threads=1,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    if isinstance(x, dict):
        by_index = {d["index"]: name for name, d in
                    interpreter.get_signature_runner().get_input_details().items()}
        arrays = [np.asarray(x[by_index[d["index"]]]) for d in inputs]
    else:
        arrays = [np.asarray(a) for a in x] if isinstance(x, (list, tuple)) else [np.asarray(x)]
    if len(arrays) != len(inputs):
        raise ValueError(f"the model takes {len(inputs)} inputs, got {len(arrays)}")
    results: list[list[np.ndarray]] = [[] for _ in outputs]
    for i in range(len(arrays[0])):
        # The fused LSTM keeps its hidden/cell state in variable tensors that persist across invokes:
        # without a reset, each sample would start from the previous sample's final state.
        interpreter.reset_all_variables()
        for inp, array in zip(inputs, arrays):
            value = array[i:i + 1]
            scale, zero = inp["quantization"]
            if np.issubdtype(inp["dtype"], np.integer) and scale and not np.issubdtype(value.dtype, np.integer):
                info = np.iinfo(inp["dtype"])
                value = np.clip(np.round(value / scale + zero), info.min, info.max)
            interpreter.set_tensor(inp["index"], value.astype(inp["dtype"]))
        interpreter.invoke()
        for out, collected in zip(outputs, results):
            y = interpreter.get_tensor(out["index"])
            scale, zero = out["quantization"]
            if scale:
                y = (y.astype(np.float32) - zero) * scale
            collected.append(y[0].astype(np.float32))
    stacked = [np.stack(r) for r in results]
    return stacked[0] if len(stacked) == 1 else stacked
