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
    keras_layers.layers_of([name], keras_layers.keras_layer_names(model))   # -> Keras layer of a node
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
from edgekit.export import lstm, recipes
from edgekit.export.keras_layers import keras_layer_classes, keras_layer_names, layers_of  # noqa: F401
from edgekit.export.lstm import without_lstm_cell_clip
from edgekit.runtime import formats as device_formats
from edgekit.runtime.formats import tflite as tflite_graph

FORMAT = device_formats.get("tflite")
FILE_NAME = FORMAT.file_name
FUSED_LSTM = "UNIDIRECTIONAL_SEQUENCE_LSTM"
RECURRENT_LAYERS = ("LSTM", "GRU", "SimpleRNN", "Bidirectional")


ConverterRefused = recipes.RecipeRefused


# Converter messages that mean "this recipe does not apply to these ops", as opposed to a bug.
_REFUSAL_MARKERS = ("not yet supported for op", "is not supported for 16x8", "not supported by 16x8",
                    # int16x8 (the older calibrating quantizer) on integer inputs such as token ids:
                    "Max and min for dynamic tensors should be recorded during calibration")


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


def conversion_path(model, recipe=None) -> str:
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


def build_converter(model, variant, calibration: np.ndarray | None = None,
                    int8_io: str | None = None, metadata: dict | None = None):
    """A `tf.lite.TFLiteConverter` configured for a recipe (export/recipes.py; or its variant name).

    `model` is a Keras 3 model or a model directory. Calibrated recipes need `calibration` (model
    inputs, first axis = samples). The recipe's `io_type` (or `int8_io`) sets a full-int8 model's float
    input/output type; integer model inputs (token ids) stay as they are."""
    quiet_tensorflow()
    import tensorflow as tf

    recipe = recipes.get(variant) if isinstance(variant, str) else variant
    if int8_io is not None:
        recipe = recipe.with_io_type(int8_io)
    if isinstance(model, (str, Path)):
        from edgekit.train.io import load_model

        model, metadata = load_model(model)
    if calibration is not None:
        calibration = model_inputs(model, calibration)
    converter = _new_converter(model, metadata, calibration)
    if recipe.mode == "float" and recipe.weights == "float32":
        return converter
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if recipe.weights == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if recipe.granularity == "per_tensor":
        converter._experimental_disable_per_channel = True  # noqa: SLF001 - the converter's only switch
    if not recipe.calibrated:
        return converter  # Optimize.DEFAULT without a representative dataset = dynamic-range int8 weights
    if calibration is None or lstm.count(calibration) == 0:
        raise ValueError(f"{recipe.variant} needs calibration data")
    converter.representative_dataset = representative_dataset(calibration)
    if recipe.activations == "int8":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        io_type = {"float32": tf.float32, "int8": tf.int8, "uint8": tf.uint8}[recipe.io_type]
        if all(spec.dtype in ("float32", "float16", "float64") for spec in model.inputs):
            converter.inference_input_type = io_type  # (one type for all inputs; ids stay int32)
        converter.inference_output_type = io_type
    else:  # int16 activations
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
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


def convert(model, variant, calibration: np.ndarray | None = None, int8_io: str | None = None,
            metadata: dict | None = None, keep_float_layers: list[str] | None = None) -> bytes:
    """The .tflite bytes of `model` under a recipe (or its variant name). `keep_float_layers` (Keras
    layer names; default the recipe's `float_layers`) leaves those layers' ops in float inside a
    full-int8 model (the converter's denylisted nodes); int16 activations go through the converter's
    older quantizer, which has no denylist."""
    recipe = recipes.get(variant) if isinstance(variant, str) else variant
    if int8_io is not None:
        recipe = recipe.with_io_type(int8_io)
    keep = list(recipe.float_layers if keep_float_layers is None else keep_float_layers)
    converter = build_converter(model, recipe, calibration, None, metadata)
    if not keep or recipe.activations != "int8":
        return without_lstm_cell_clip(_convert(converter))
    return without_lstm_cell_clip(_convert_keeping_float(converter, model, recipe.io_type, keep))


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
    nodes = [name for op in tflite_graph.read_graph(calibrated).ops for name in op.names
             if wanted.intersection(layers_of([name], known))]
    if not nodes:
        raise ValueError(f"keep_float_layers: no ops found for {', '.join(keep_float_layers)}")
    io_type = {"float32": tf.float32, "int8": tf.int8, "uint8": tf.uint8}[int8_io]
    float_input = model.inputs[0].dtype in ("float32", "float16", "float64")
    return tflite_convert.mlir_quantize(
        calibrated, fully_quantize=int8_io != "float32",
        input_data_type=io_type if float_input else tf.float32, output_data_type=io_type,
        denylisted_nodes=nodes)


# -- the host-half interface (export/formats.py) ----------------------------------------------------

def unsupported(recipe: recipes.Recipe) -> str | None:
    if recipe.calibrated and recipe.calibration_method != "minmax":
        return "the TFLite converter calibrates by min/max only"
    return None


def refusal(recipe: recipes.Recipe, layer_classes: set[str]) -> str | None:
    """The converter has no 16x8 kernel for the fused LSTM (GRU/SimpleRNN are unrolled into ordinary
    builtin ops, which have 16x8 kernels)."""
    refused = sorted(layer_classes.intersection({"LSTM", "Bidirectional"}))
    if recipe.activations == "int16" and refused:
        return (f"{recipe.variant} does not apply to {', '.join(refused)} models: the TFLite converter has "
                "no 16x8 kernel for the fused LSTM ('Quantization to 16x8-bit not yet supported for op: "
                "UNIDIRECTIONAL_SEQUENCE_LSTM')")
    return None


def recipe_name(recipe: recipes.Recipe) -> str:
    return recipe.name


def export_settings(recipe: recipes.Recipe, settings: dict) -> dict:
    """The export options that shaped a .tflite file: a full-int8 model's I/O type (token ids stay int32)."""
    return {**settings, "opset": None, "io_dtype": recipe.io_type if recipe.full_integer else "float32"}


def op_problems(op_records: list[dict], layer_classes: dict[str, str]) -> list[tuple[str, list[str], str]]:
    """(op, tensor names, why) for every op outside what edge runtimes run: Flex (SELECT_TF_OPS) and
    custom ops; for recurrent models a WHILE loop (an LSTM not fused into UNIDIRECTIONAL_SEQUENCE_LSTM,
    which the LiteRT int8 LSTM kernels need, or a GRU/SimpleRNN not unrolled; the converter's full-int8
    calibration of such loops crashes) and fewer fused LSTM ops than LSTM layers."""
    recurrent = [n for n, cls in layer_classes.items() if cls in RECURRENT_LAYERS]
    found = []
    for record in op_records:
        op, names = record["op"], record.get("names", [])
        if op.startswith("Flex"):
            found.append((op, names, "is a TensorFlow (Flex / SELECT_TF_OPS) op: edge runtimes do not ship it"))
        elif record.get("custom"):
            found.append((op, names, "is a custom op, outside the TFLite builtin set"))
        elif op == "WHILE" and recurrent:
            found.append((op, names, f"is an unfused recurrent loop: an LSTM must become {FUSED_LSTM} (the "
                                     "LiteRT int8 LSTM kernels) and a GRU/SimpleRNN be unrolled; full-int8 "
                                     "calibration of such loops crashes the converter"))
    lstms = [n for n in recurrent if layer_classes[n] == "LSTM"]
    fused = sum(1 for r in op_records if r["op"] == FUSED_LSTM)
    if lstms and fused < len(lstms):
        found.append(("", [], f"LSTM layer(s) {', '.join(lstms)} were not fused into {FUSED_LSTM} ({fused} found)"))
    return found


def write_metadata(model_path: Path, metadata: dict, input_spec: dict, label: str) -> dict:
    """MediaPipe Tasks' Model Metadata (export/metadata.py), written into the file before it is hashed."""
    from edgekit.export import metadata as mediapipe_metadata

    return mediapipe_metadata.write(model_path, metadata, input_spec, label)


def export_variant(recipe, model, metadata: dict, request: dict, calibration, staging: Path,
                   cache: dict) -> Path:
    """Write `recipe` of `model` into `staging` and return the file."""
    data = convert(model, recipe, calibration=calibration, metadata=metadata)
    path = staging / FILE_NAME
    path.write_bytes(data)
    return path


def layer_errors(entry: dict, bundles: list[dict], model_dir: Path, x, samples: int, factory: str) -> dict:
    """Per-tensor int8 error of a full-int8 bundle (QuantizationDebugger in a child process)."""
    from edgekit.export import tflite_debug

    return tflite_debug.layer_errors(model_dir, entry.get("variant") or "int8", factory, samples)


def fix_candidates(entry: dict, context):
    from edgekit.export import tflite_debug

    return tflite_debug.FixCandidates(entry, context)
