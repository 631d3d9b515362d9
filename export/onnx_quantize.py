"""The one ONNX quantizer: static QDQ int8 (onnxruntime), used by export (the onnx int8 recipe) and by
`verify --fix` (other calibration methods, nodes kept in float).

onnxruntime's `quant_pre_process` first (folds BatchNorm's Mul/Add into the Conv before it), then
`quantize_static` in QDQ format, per-channel int8 weights (7-bit, reduce_range), int8 activations,
calibrated by a CalibrationDataReader over representative data. `keep_float_layers` (Keras layer names)
excludes those layers' nodes from quantization.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.export.keras_layers import layers_of

# onnxruntime's CalibrationMethod for each recipe calibration method (export/recipes.py)
CALIBRATION_METHODS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}


def quantize_int8(fp32_path: str | Path, path: str | Path, calibration: np.ndarray,
                  layer_names: set[str] | None = None, keep_float_layers: list[str] | None = None, *,
                  keep_float_nodes: list[str] | None = None, calibration_method: str = "MinMax",
                  per_channel: bool = True) -> None:
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
                           keep_float_nodes or [], calibration_method, per_channel)


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
                       calibration_method: str, per_channel: bool = True) -> None:
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
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=per_channel,
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
