"""ONNX conversion of a Keras model (tf2onnx) and int8 static quantization (onnxruntime, QDQ).

- fp32: `tf2onnx.convert.from_function` on the Keras 3 model's call with a dynamic batch dimension;
  LSTMs become one ONNX `LSTM` op. Graph input/output are named after edgekit.json (`tokens`, `probs`).
- int8: `onnxruntime.quantization.quantize_static` in QDQ format, per-channel int8 weights, int8
  activations, calibrated by a CalibrationDataReader over the same representative data as TFLite.
  `keep_float_layers` (Keras layer names) excludes those layers' nodes from quantization.
Every file passes `onnx.checker.check_model(full_check=True)` before it is accepted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.core import quiet_tensorflow
from edgekit.export.opcheck import layers_of

FILE_NAME = "model.onnx"
MIN_OPSET = 17


def convert_fp32(model, path: str | Path, opset: int = MIN_OPSET, metadata: dict | None = None) -> None:
    """Write the float ONNX graph of Keras 3 `model` to `path` (batch dimension dynamic)."""
    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset} is below the minimum {MIN_OPSET}")
    quiet_tensorflow()
    import onnx
    import tensorflow as tf
    import tf2onnx

    input_name = (metadata or {}).get("input", {}).get("name") or model.inputs[0].name
    output_name = (metadata or {}).get("output", {}).get("name") or "output"
    spec = model.inputs[0]
    signature = [tf.TensorSpec((None, *spec.shape[1:]), spec.dtype, name=input_name)]
    function = tf.function(lambda x: model(x, training=False))
    proto, _ = tf2onnx.convert.from_function(function, input_signature=signature, opset=opset)
    _rename_graph_io(proto, [input_name], [output_name])
    onnx.save(proto, str(path))


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
                  layer_names: set[str] | None = None, keep_float_layers: list[str] | None = None) -> None:
    """Static QDQ int8 quantization of the float ONNX file at `fp32_path` into `path`."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    proto = onnx.load(str(fp32_path))
    input_name = proto.graph.input[0].name
    exclude: list[str] = []
    if keep_float_layers:
        wanted = set(keep_float_layers)
        exclude = [node.name for node in proto.graph.node
                   if wanted.intersection(layers_of([node.name, *node.output], layer_names or wanted))]
        if not exclude:
            raise ValueError(f"keep_float_layers: no ONNX nodes found for {', '.join(keep_float_layers)}")

    class Calibration(CalibrationDataReader):
        """Representative samples, one batch-1 feed per step."""

        def __init__(self, x: np.ndarray):
            self._feeds = iter([{input_name: sample[None]} for sample in x])

        def get_next(self):
            return next(self._feeds, None)

    reader = Calibration(calibration.astype(_input_dtype(proto)))
    quantize_static(str(fp32_path), str(path), reader, quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True,
                    nodes_to_exclude=exclude)


def _input_dtype(proto) -> np.dtype:
    from onnx.helper import tensor_dtype_to_np_dtype

    return tensor_dtype_to_np_dtype(proto.graph.input[0].type.tensor_type.elem_type)


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


def run(path: str | Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed_name = session.get_inputs()[0].name
    return np.asarray(session.run(None, {feed_name: x})[0], dtype=np.float32)
