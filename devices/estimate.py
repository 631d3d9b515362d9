"""`edgekit devices estimate NAME BUNDLE`: an ESTIMATE of a bundle's latency and memory on a device that
is not at hand, from the work its graph does and a cost model calibrated on published measurements.

1. Count the work (`count_work`): for every op of the TFLite flatbuffer (read with ai-edge-litert's
   interpreter, no TensorFlow) or the ONNX graph (onnx package, shapes by onnx shape inference): its
   class (conv, depthwise, dense, lstm, elementwise, pooling, movement, quantize), the data type it
   computes in (fp32, fp16, dynamic, int8, int16x8), its MACs and the bytes it moves (weights +
   activations read and written). Plus the tensor arena (peak of the live activation tensors, walking
   the ops in order) and the weights.
2. Price it (`estimate`): per op, time = MACs / (class GMAC/s x dtype speed-up) + bytes / (GB/s) +
   per-op overhead, each rate per core and scaled to N threads by Amdahl's law. The numbers live in the
   device profile's `cost_model` (runtime/profiles/*.json), each with its source.
3. Calibrate (`python -m edgekit.devices.estimate --calibrate`): fit the fp32 rates to XNNPACK's
   published Raspberry Pi latencies of four MobileNets (built here with random weights, converted to
   TFLite fp32 and counted with step 1; the counts are stored in REFERENCE_WORK so that tests need
   no conversion), and report the error on figures the fit did not see. docs/estimates.md explains it.

Every result is labelled an estimate ("estimate": true, and the word in every printed line).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit.core import UserError, first_line
from edgekit.runtime import profiles
from edgekit.runtime.bundle import read_manifest

CLASSES = ("conv", "depthwise", "dense", "lstm", "elementwise", "pooling", "movement", "quantize")
COMPUTE_CLASSES = ("conv", "depthwise", "dense", "lstm")
DTYPES = ("fp32", "fp16", "dynamic", "int8", "int16x8")

# TFLite builtin op -> class. Ops not named here are elementwise (ADD, MUL, LOGISTIC, HARD_SWISH, ...).
TFLITE_CLASSES = {
    "CONV_2D": "conv", "CONV_3D": "conv", "TRANSPOSE_CONV": "conv",
    "DEPTHWISE_CONV_2D": "depthwise",
    "FULLY_CONNECTED": "dense", "BATCH_MATMUL": "dense",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "lstm", "LSTM": "lstm", "BIDIRECTIONAL_SEQUENCE_LSTM": "lstm",
    "UNIDIRECTIONAL_SEQUENCE_RNN": "lstm", "BIDIRECTIONAL_SEQUENCE_RNN": "lstm", "RNN": "lstm",
    "AVERAGE_POOL_2D": "pooling", "MAX_POOL_2D": "pooling", "L2_POOL_2D": "pooling", "MEAN": "pooling",
    "SUM": "pooling", "REDUCE_MAX": "pooling", "REDUCE_MIN": "pooling", "REDUCE_PROD": "pooling",
    "CONCATENATION": "movement", "PACK": "movement", "UNPACK": "movement", "SPLIT": "movement",
    "SPLIT_V": "movement", "SLICE": "movement", "STRIDED_SLICE": "movement", "TRANSPOSE": "movement",
    "PAD": "movement", "PADV2": "movement", "MIRROR_PAD": "movement", "GATHER": "movement",
    "GATHER_ND": "movement", "REVERSE_V2": "movement", "TILE": "movement", "BROADCAST_TO": "movement",
    "RESIZE_BILINEAR": "movement", "RESIZE_NEAREST_NEIGHBOR": "movement",
    "QUANTIZE": "quantize", "DEQUANTIZE": "quantize",
    "RESHAPE": "movement", "SQUEEZE": "movement", "EXPAND_DIMS": "movement",
}
# Ops that only relabel a buffer (no bytes move; runtimes alias their output to their input).
ZERO_COPY = {"RESHAPE", "SQUEEZE", "EXPAND_DIMS", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity",
             "Shape", "Constant"}
FUSED_AFTER_CONV = {"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "Tanh", "Mul", "Add", "Sub", "Div",
                    "BatchNormalization"}
# Ops the counter cannot see into: their subgraphs are not counted (said in the basis).
CONTROL_FLOW = {"WHILE", "IF", "CALL_ONCE", "Loop", "If", "Scan"}

ONNX_CLASSES = {
    "Conv": "conv", "ConvTranspose": "conv", "QLinearConv": "conv", "ConvInteger": "conv",
    "MatMul": "dense", "Gemm": "dense", "MatMulInteger": "dense", "QLinearMatMul": "dense",
    "LSTM": "lstm", "GRU": "lstm", "RNN": "lstm",
    "AveragePool": "pooling", "MaxPool": "pooling", "GlobalAveragePool": "pooling",
    "GlobalMaxPool": "pooling", "ReduceMean": "pooling", "ReduceSum": "pooling", "ReduceMax": "pooling",
    "Concat": "movement", "Split": "movement", "Slice": "movement", "Transpose": "movement", "Pad": "movement",
    "Gather": "movement", "Tile": "movement", "Expand": "movement", "Resize": "movement",
    "QuantizeLinear": "quantize", "DequantizeLinear": "quantize", "DynamicQuantizeLinear": "quantize",
    "Reshape": "movement", "Squeeze": "movement", "Unsqueeze": "movement", "Flatten": "movement",
    "Identity": "movement",
}
ONNX_WEIGHT_INPUT = {"Conv": 1, "ConvTranspose": 1, "ConvInteger": 1, "QLinearConv": 3, "Gemm": 1,
                     "MatMul": 1, "MatMulInteger": 1, "QLinearMatMul": 3}


@dataclass
class OpWork:
    op: str
    op_class: str
    dtype: str
    macs: int = 0
    weight_bytes: int = 0          # weights read per run (in the dtype the kernel reads)
    activation_bytes: int = 0      # activations read + written

    @property
    def bytes(self) -> int:
        return self.weight_bytes + self.activation_bytes


@dataclass
class GraphWork:
    """The work of one model file: ops in execution order, memory, and what the counter could not see."""
    format: str
    path: str
    file_size_bytes: int
    ops: list[OpWork] = field(default_factory=list)
    arena_bytes: int = 0           # peak bytes of live activation tensors (lower bound of the runtime's arena)
    weights_bytes: int = 0         # weights in memory at run time (fp16 weights dequantized to fp32)
    uncounted: list[str] = field(default_factory=list)

    @property
    def macs(self) -> int:
        return sum(o.macs for o in self.ops)

    def by_class(self) -> dict[str, dict]:
        table: dict[str, dict] = {}
        for o in self.ops:
            row = table.setdefault(o.op_class, {"ops": 0, "macs": 0, "bytes": 0, "dtypes": {}})
            row["ops"] += 1
            row["macs"] += o.macs
            row["bytes"] += o.bytes
            row["dtypes"][o.dtype] = row["dtypes"].get(o.dtype, 0) + 1
        return table


# Counting: TFLite ------------------------------------------------------------------------------------

def _nbytes(shape, dtype) -> int:
    return int(np.prod([max(int(d), 1) for d in shape], dtype=np.int64)) * np.dtype(dtype).itemsize


def _tflite_dtype(act, weight) -> str:
    act, weight = np.dtype(act) if act is not None else None, np.dtype(weight) if weight is not None else None
    if act in (np.dtype(np.int8), np.dtype(np.uint8)):
        return "int8"
    if act == np.dtype(np.int16):
        return "int16x8"
    if weight in (np.dtype(np.int8), np.dtype(np.uint8)):
        return "dynamic"
    if weight == np.dtype(np.float16):
        return "fp16"
    return "fp32"


def count_tflite(path: str | Path) -> GraphWork:
    """Ops, MACs, bytes and memory of a .tflite file, read with ai-edge-litert (or tflite-runtime)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - the armv7 wheel
        from tflite_runtime.interpreter import Interpreter
    path = Path(path)
    try:
        interpreter = Interpreter(model_path=str(path))
    except (ValueError, RuntimeError) as exc:
        raise UserError(f"cannot read {path} as a TFLite model: {first_line(exc)}") from None
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()  # noqa: SLF001 - the public API lists tensors, not ops
    graph_inputs = {d["index"] for d in interpreter.get_input_details()}
    graph_outputs = {d["index"] for d in interpreter.get_output_details()}
    produced = {int(i) for op in ops for i in op["outputs"]}
    # LSTM state tensors are "variable" tensors: neither produced nor inputs, yet not weights.
    variable = {int(op["inputs"][k]) for op in ops if TFLITE_CLASSES.get(op["op_name"]) == "lstm"
                for k in (18, 19) if len(op["inputs"]) > k and op["inputs"][k] >= 0}
    constant = {i for i in tensors if i not in produced and i not in graph_inputs and i not in variable}
    # fp16 weights: a DEQUANTIZE of a constant runs once at load; its fp32 output is a weight too.
    stored_dtype = {i: tensors[i]["dtype"] for i in constant}
    init_ops = set()
    for op in ops:
        if op["op_name"] == "DEQUANTIZE" and int(op["inputs"][0]) in constant:
            out = int(op["outputs"][0])
            constant.add(out)
            stored_dtype[out] = tensors[int(op["inputs"][0])]["dtype"]
            init_ops.add(op["index"])

    def shape(i):
        return [max(int(d), 1) for d in tensors[i]["shape"]]

    def size(i):
        return int(np.prod(shape(i), dtype=np.int64))

    work = GraphWork("tflite", str(path), path.stat().st_size)
    work.weights_bytes = sum(_nbytes(shape(i), tensors[i]["dtype"]) for i in constant
                             if not _is_dequantized_source(i, ops, init_ops))
    lifetimes: dict[int, list[int]] = {i: [0, len(ops)] for i in graph_inputs}
    for position, op in enumerate(ops):
        name = op["op_name"]
        if op["index"] in init_ops:
            continue
        inputs = [int(i) for i in op["inputs"] if i >= 0]
        outputs = [int(i) for i in op["outputs"] if i >= 0]
        for i in inputs + outputs:
            if i not in constant:
                span = lifetimes.setdefault(i, [position, position])
                span[1] = max(span[1], position)
        if name in CONTROL_FLOW:
            work.uncounted.append(name)
        weights = [i for i in inputs if i in constant]
        activations = [i for i in inputs if i not in constant]
        op_class = TFLITE_CLASSES.get(name, "elementwise")
        weight_dtype = next((stored_dtype[i] for i in weights if len(shape(i)) >= 2), None)
        act_dtype = tensors[activations[0]]["dtype"] if activations else None
        dtype = (_tflite_dtype(act_dtype, weight_dtype) if op_class in COMPUTE_CLASSES
                 else _tflite_dtype(tensors[outputs[0]]["dtype"] if outputs else None, None))
        macs = _tflite_macs(name, op_class, inputs, outputs, shape, size, constant)
        moved = 0 if name in ZERO_COPY else sum(_nbytes(shape(i), tensors[i]["dtype"])
                                                 for i in activations + outputs)
        weight_bytes = sum(_nbytes(shape(i), tensors[i]["dtype"]) for i in weights)
        work.ops.append(OpWork(name, op_class, dtype, int(macs), int(weight_bytes), int(moved)))
    for i in graph_outputs:
        if i in lifetimes:
            lifetimes[i][1] = len(ops)
    work.arena_bytes = _peak_live({i: (span, _nbytes(shape(i), tensors[i]["dtype"]))
                                   for i, span in lifetimes.items()})
    return work


def _is_dequantized_source(i, ops, init_ops) -> bool:
    """True for an fp16 weight that a load-time DEQUANTIZE expands (its fp32 copy is what stays in memory)."""
    return any(op["index"] in init_ops and int(op["inputs"][0]) == i for op in ops)


def _tflite_macs(name, op_class, inputs, outputs, shape, size, constant) -> int:
    if not outputs:
        return 0
    out = size(outputs[0])
    if name in ("CONV_2D", "CONV_3D"):
        weight = shape(inputs[1])                     # [O, KH, KW, I] (3D: [KD, KH, KW, I, O])
        return out * int(np.prod(weight)) // max(weight[0] if name == "CONV_2D" else weight[-1], 1)
    if name == "TRANSPOSE_CONV":
        weight = shape(inputs[1])                     # inputs: output_shape, weights [O, KH, KW, I], input
        return size(inputs[2]) * int(np.prod(weight)) // max(weight[-1], 1)
    if name == "DEPTHWISE_CONV_2D":
        weight = shape(inputs[1])                     # [1, KH, KW, O]
        return out * weight[1] * weight[2]
    if name == "FULLY_CONNECTED":
        return out * shape(inputs[1])[-1]              # weights [units, K]
    if name == "BATCH_MATMUL":
        return out * shape(inputs[0])[-1]
    if op_class == "lstm":
        features = shape(inputs[0])
        steps = int(np.prod(features[:-1]))            # batch x time
        matrices = sum(size(i) for i in inputs[1:] if i in constant and len(shape(i)) == 2)
        return steps * matrices
    return 0


def _peak_live(spans: dict[int, tuple[list[int], int]]) -> int:
    """Largest total size of the tensors alive at once (alive from first to last op touching them)."""
    if not spans:
        return 0
    end = max(span[1] for span, _ in spans.values()) + 1
    live = np.zeros(end + 1, dtype=np.int64)
    for (first, last), nbytes in spans.values():
        live[first:last + 1] += nbytes
    return int(live.max())


# Counting: ONNX --------------------------------------------------------------------------------------

def _read_onnx(path: Path):
    """The graph of an .onnx file with its shapes inferred (symbolic dims taken as 1), every tensor's
    (shape, dtype), and those of its constants (initializers and Constant nodes)."""
    import onnx
    from onnx import numpy_helper, shape_inference

    try:
        model = onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001 - protobuf raises many kinds
        raise UserError(f"cannot read {path} as an ONNX model: {first_line(exc)}") from None
    for value in model.graph.input:
        for dim in value.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value"):
                dim.dim_value = 1
    try:
        model = shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - counting with fewer shapes beats refusing
        pass
    graph = model.graph
    info: dict[str, tuple[list[int], np.dtype]] = {}
    for value in list(graph.input) + list(graph.value_info) + list(graph.output):
        t = value.type.tensor_type
        if t.elem_type:
            info[value.name] = ([max(d.dim_value, 1) for d in t.shape.dim],
                                np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)))
    constant = {}
    for init in graph.initializer:
        constant[init.name] = (list(init.dims), np.dtype(onnx.helper.tensor_dtype_to_np_dtype(init.data_type)))
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    arr = numpy_helper.to_array(attr.t)
                    constant[node.output[0]] = (list(arr.shape), arr.dtype)
    info.update(constant)
    return graph, info, constant


def count_onnx(path: str | Path) -> GraphWork:
    """Ops, MACs, bytes and memory of an .onnx file (onnx shape inference; symbolic dims taken as 1)."""
    path = Path(path)
    graph, info, constant = _read_onnx(path)
    produced_by = {out: node for node in graph.node for out in node.output}
    # QDQ: a DequantizeLinear of a constant is a weight (onnxruntime folds it into the consumer); one
    # of an activation is fused into its consumer, which then computes in int8.
    weight_of: dict[str, str] = {}
    int8_activation: set[str] = set()
    for node in graph.node:
        if node.op_type == "DequantizeLinear":
            if node.input[0] in constant:
                weight_of[node.output[0]] = node.input[0]
            else:
                int8_activation.add(node.output[0])

    def is_const(name):
        return name in constant or name in weight_of

    def shape(name):
        return info.get(weight_of.get(name, name), ([], np.dtype(np.float32)))[0]

    def dtype(name):
        return info.get(weight_of.get(name, name), ([], np.dtype(np.float32)))[1]

    def nbytes(name):
        return _nbytes(shape(name), dtype(name)) if name in info or name in weight_of else 0

    work = GraphWork("onnx", str(path), path.stat().st_size)
    work.weights_bytes = sum(_nbytes(s, d) for s, d in constant.values())
    inputs_of_graph = {v.name for v in graph.input} - set(constant)
    lifetimes: dict[str, list[int]] = {name: [0, len(graph.node)] for name in inputs_of_graph}
    # onnxruntime's graph optimizer folds a Conv/MatMul's constant Mul/Add (batch norm) and its
    # activation (Relu, Clip, ...) into the kernel: such ops after one cost nothing of their own.
    fusable_output: set[str] = set()
    for position, node in enumerate(graph.node):
        op = node.op_type
        inputs = [i for i in node.input if i]
        outputs = [o for o in node.output if o]
        live_inputs = [i for i in inputs if not is_const(i)]
        if op in ("Conv", "MatMul", "Gemm"):
            fusable_output.update(outputs)
        elif op in FUSED_AFTER_CONV and len(live_inputs) == 1 and live_inputs[0] in fusable_output:
            fusable_output.update(outputs)
            lifetimes.setdefault(outputs[0], [position, position])
            continue
        if op in ("QuantizeLinear", "DequantizeLinear") and (
                (op == "DequantizeLinear" and inputs[0] in constant)
                or (op == "QuantizeLinear" and inputs[0] not in inputs_of_graph)
                or (op == "DequantizeLinear" and inputs[0] in produced_by)) or op == "Constant":
            if inputs and inputs[0] in fusable_output:
                fusable_output.update(outputs)
            continue    # folded at load or fused into neighbours by onnxruntime's QDQ transformers
        for name in inputs + outputs:
            if not is_const(name):
                span = lifetimes.setdefault(name, [position, position])
                span[1] = max(span[1], position)
        if op in CONTROL_FLOW:
            work.uncounted.append(op)
        op_class = ONNX_CLASSES.get(op, "elementwise")
        if op == "Conv" and any(a.name == "group" and a.i > 1 for a in node.attribute) \
                and len(inputs) > 1 and len(shape(inputs[1])) > 1 and shape(inputs[1])[1] == 1:
            op_class = "depthwise"
        weights = [i for i in inputs if is_const(i) and len(shape(i)) >= 2]
        activations = [i for i in inputs if not is_const(i)]
        data_dtype = _onnx_dtype(node, activations, weights, dtype, int8_activation, op_class)
        macs = _onnx_macs(node, inputs, outputs, shape, weights)
        # An int8 op reads and writes int8 tensors, whatever float type the Q/DQ graph gives them.
        moved = 0 if op in ZERO_COPY else sum(
            nbytes(i) // (dtype(i).itemsize if data_dtype == "int8" else 1) for i in activations + outputs)
        work.ops.append(OpWork(op, op_class, data_dtype, int(macs), int(sum(nbytes(i) for i in weights)),
                               int(moved)))
    for value in graph.output:
        if value.name in lifetimes:
            lifetimes[value.name][1] = len(graph.node)
    work.arena_bytes = _peak_live({n: (span, nbytes(n)) for n, span in lifetimes.items()})
    return work


def _onnx_dtype(node, activations, weights, dtype, int8_activation, op_class) -> str:
    if node.op_type in ("QLinearConv", "QLinearMatMul"):
        return "int8"
    # onnxruntime fuses Q/DQ pairs into integer kernels for conv, matmul and simple ops; recurrent ops
    # stay float between their DequantizeLinear and QuantizeLinear.
    if op_class != "lstm" and any(a in int8_activation for a in activations):
        return "int8"
    if node.op_type in ("ConvInteger", "MatMulInteger"):
        return "dynamic"
    if op_class in COMPUTE_CLASSES and weights:
        if dtype(weights[0]) == np.float16:
            return "fp16"
        if dtype(weights[0]) in (np.int8, np.uint8):
            return "dynamic"
    if activations and dtype(activations[0]) in (np.int8, np.uint8):
        return "int8"
    return "fp32"


def _onnx_macs(node, inputs, outputs, shape, weights) -> int:
    op = node.op_type
    if not outputs:
        return 0
    out = int(np.prod(shape(outputs[0]))) if shape(outputs[0]) else 0
    if op in ONNX_WEIGHT_INPUT and len(inputs) > ONNX_WEIGHT_INPUT[op]:
        w = shape(inputs[ONNX_WEIGHT_INPUT[op]])
        if op in ("Conv", "ConvInteger", "QLinearConv") and len(w) >= 3:
            return out * int(np.prod(w[1:]))           # [O, I/group, KH, KW]
        if op == "ConvTranspose" and len(w) >= 3:
            x = shape(inputs[0])
            return int(np.prod(x)) * int(np.prod(w[1:])) if x else 0
        a = shape(inputs[0 if op != "QLinearMatMul" else 0])
        if a:
            transpose_a = any(at.name == "transA" and at.i for at in node.attribute)
            return out * (a[0] if transpose_a and len(a) == 2 else a[-1])
    if op in ("LSTM", "GRU", "RNN") and len(inputs) >= 3:
        x = shape(inputs[0])                              # [T, B, I]
        steps = int(np.prod(x[:-1])) if x else 0
        return steps * (int(np.prod(shape(inputs[1]))) + int(np.prod(shape(inputs[2]))))
    return 0


# Bundles ---------------------------------------------------------------------------------------------

def model_file(bundle: str | Path) -> Path:
    """The model file of a bundle folder (manifest.json's model_file), or the path itself for a file."""
    bundle = Path(bundle)
    if not bundle.exists():
        raise UserError(f"bundle not found: {bundle}")
    if bundle.is_file():
        if bundle.suffix not in (".tflite", ".onnx"):
            raise UserError(f"{bundle}: expected a bundle folder, a .tflite or an .onnx file")
        return bundle
    name = read_manifest(bundle)["model_file"]  # the runtime's one reader: one line when unreadable
    path = bundle / name
    if not path.is_file():
        raise UserError(f"{bundle}: model file {name!r} named by manifest.json is missing")
    return path


def count_work(bundle: str | Path) -> GraphWork:
    path = model_file(bundle)
    return count_tflite(path) if path.suffix == ".tflite" else count_onnx(path)


# The cost model --------------------------------------------------------------------------------------

def thread_speedup(threads: int, parallel_fraction: float) -> float:
    """Amdahl's law: the speed-up of N threads when `parallel_fraction` of the work splits evenly."""
    return 1.0 / ((1.0 - parallel_fraction) + parallel_fraction / max(threads, 1))


def op_ms(op: OpWork, model: dict, threads: int, fmt: str) -> float:
    """Estimated milliseconds of one op under a profile's cost model."""
    rates = model["gmacs_per_core"]
    parallel = model["parallel_fraction"]
    speedup = thread_speedup(threads, parallel.get(op.op_class, parallel["default"]))
    dtype_speed = model["dtype_speedup"].get(op.op_class, {}).get(op.dtype) \
        or model["dtype_speedup"]["default"][op.dtype]
    seconds = op.bytes / (model["gbytes_per_s_per_core"] * 1e9 * speedup)
    if op.macs and rates.get(op.op_class):   # a class without a rate is priced by its bytes alone
        seconds += op.macs / (rates[op.op_class] * 1e9 * dtype_speed * speedup)
    seconds += model["op_overhead_us"] * 1e-6
    return 1000.0 * seconds * model["format_factor"][fmt]


def op_uncertainty(op: OpWork, model: dict, fmt: str) -> float:
    """A multiplicative band (>= 1) for one op: calibrated fp32 classes get the held-out error, the
    rest the wider factors the profile gives (with their reasons)."""
    band = model["uncertainty"]
    factor = band["calibrated"]
    if op.dtype not in ("fp32", "fp16"):
        factor = max(factor, band["dtype"])
    if op.op_class == "lstm":
        factor = max(factor, band["lstm"])
    if fmt != "tflite":
        factor = max(factor, band["format"])
    return factor


def estimate(profile: dict | str, bundle: str | Path | None = None, *, threads: int | None = None,
             work: GraphWork | None = None) -> dict:
    """The estimate for one bundle on one device (JSON-ready; `estimate` is always True)."""
    profile = profiles.load(profile)
    model = profile.get("cost_model")
    if not model:
        raise UserError(f"device {profile['name']!r} has no cost_model in its profile: no estimate possible")
    threads = threads or profile["default_threads"]
    if threads > profile["cores"]:
        raise UserError(f"--threads {threads} exceeds the {profile['cores']} cores of {profile['name']}")
    work = work or count_work(bundle)
    fmt = work.format
    unsupported = profiles.format_unsupported_by(profile, fmt)
    point = low = high = 0.0
    per_class: dict[str, dict] = defaultdict(lambda: {"ops": 0, "macs": 0, "bytes": 0, "ms": 0.0})
    for op in work.ops:
        ms = op_ms(op, model, threads, fmt)
        band = op_uncertainty(op, model, fmt)
        point, low, high = point + ms, low + ms / band, high + ms * band
        row = per_class[op.op_class]
        row["ops"] += 1
        row["macs"] += op.macs
        row["bytes"] += op.bytes
        row["ms"] += ms
        row.setdefault("dtypes", {}).setdefault(op.dtype, 0)
        row["dtypes"][op.dtype] += 1
    memory_total = work.arena_bytes + work.weights_bytes
    budget = profile["memory_mb"] << 20
    dtypes = sorted({op.dtype for op in work.ops if op.op_class in COMPUTE_CLASSES}) or ["fp32"]
    basis = (f"cost model of {profile['name']} ({model['basis']}); {len(work.ops)} ops, "
             f"{work.macs / 1e6:.2f} M MACs, compute in {', '.join(dtypes)}; {threads} threads")
    warnings = []
    if work.uncounted:
        warnings.append(f"control flow ({', '.join(sorted(set(work.uncounted)))}) not counted: "
                        "the estimate misses the work inside its loops")
    if unsupported:
        warnings.append(unsupported)
    if any(op.op_class == "lstm" for op in work.ops):
        warnings.append("LSTM rates are not calibrated on published figures (none exist for these "
                        "boards): wide band")
    return {
        "estimate": True,
        "device": profile["name"],
        "bundle": str(bundle) if bundle is not None else work.path,
        "format": fmt,
        "threads": threads,
        "point_ms": round(point, 4), "low_ms": round(low, 4), "high_ms": round(high, 4),
        "basis": basis,
        "calibration": model.get("calibration", {}),
        "work": {"ops": len(work.ops), "macs": work.macs,
                 "by_class": {k: {**v, "ms": round(v["ms"], 4)} for k, v in sorted(per_class.items())}},
        "memory": {"estimate": True, "arena_bytes": work.arena_bytes, "weights_bytes": work.weights_bytes,
                   "total_bytes": memory_total, "budget_bytes": budget, "fits": memory_total <= budget,
                   "basis": "arena = peak of live activation tensors in op order (a lower bound: the "
                            "runtime adds scratch buffers); weights as held at run time"},
        "file_size_bytes": work.file_size_bytes,
        "runnable": unsupported is None,
        "warnings": warnings,
    }


def fmt_bytes(n: int) -> str:
    for unit, factor in (("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= factor:
            return f"{n / factor:.1f} {unit}"
    return f"{n} B"


def text_lines(result: dict) -> list[str]:
    """The printed form: every line says 'estimate'."""
    name = Path(result["bundle"]).name
    mem = result["memory"]
    lines = [
        f"estimate: {name} on {result['device']} ({result['threads']} threads): {result['point_ms']:.3g} ms "
        f"(range {result['low_ms']:.3g}-{result['high_ms']:.3g} ms)",
        f"estimate basis: {result['basis']}",
        f"estimate memory: {fmt_bytes(mem['total_bytes'])} (arena {fmt_bytes(mem['arena_bytes'])} + weights "
        f"{fmt_bytes(mem['weights_bytes'])}; budget {fmt_bytes(mem['budget_bytes'])}: "
        f"{'fits' if mem['fits'] else 'DOES NOT FIT'}); file {fmt_bytes(result['file_size_bytes'])}",
    ]
    for op_class, row in result["work"]["by_class"].items():
        dtypes = ",".join(f"{k}x{v}" for k, v in sorted(row["dtypes"].items()))
        lines.append(f"estimate by class: {op_class:11} {row['ops']:4d} ops {row['macs'] / 1e6:9.2f} M MACs "
                     f"{fmt_bytes(row['bytes']):>9} moved {row['ms']:8.3f} ms ({dtypes})")
    lines += [f"estimate warning: {w}" for w in result["warnings"]]
    return lines


def run(args) -> int:
    """`edgekit devices estimate NAME BUNDLE [--threads N] [--json]`."""
    result = estimate(args.name, args.bundle, threads=args.threads)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print("\n".join(text_lines(result)))
    return 0


# Calibration -----------------------------------------------------------------------------------------

XNNPACK_README = ("https://github.com/google/XNNPACK/blob/0085ae3628ee7dc042342df5a4e98ebdb55a806c/"
                  "README.md#raspberry-pi")
# XNNPACK's published end-to-end latencies (ms; fp32, randomized weights, multi-threaded: 4 threads,
# 32-bit Raspbian Buster, benchmarked 2020-02-12).
PUBLISHED_MS = {
    "rpi4": {"mobilenet_v1": 75.0, "mobilenet_v2": 44.0, "mobilenet_v3_large": 41.0, "mobilenet_v3_small": 14.0},
    "rpi3plus": {"mobilenet_v1": 115.0, "mobilenet_v2": 79.0, "mobilenet_v3_large": 67.0,
                 "mobilenet_v3_small": 23.0},
    "rpi2": {"mobilenet_v1": 341.0, "mobilenet_v2": 197.0, "mobilenet_v3_large": 165.0,
             "mobilenet_v3_small": 53.0},
}
PUBLISHED_THREADS = 4
# The work of the four MobileNets as `count_work` counts it: keras.applications MobileNet (v1),
# MobileNetV2, MobileNetV3Large and MobileNetV3Small (include_preprocessing=False), 224x224x3,
# alpha 1.0, 1000 classes, weights=None, exported with keras.export.ExportArchive (batch 1) and
# converted by TFLiteConverter.from_saved_model to fp32 (tensorflow 2.21). `--calibrate --recount`
# rebuilds them (a few minutes) and prints this table again.
# Features: conv = conv + dense MACs, dw = depthwise MACs, bytes = weights + activations moved, ops.
REFERENCE_WORK = {
    "mobilenet_v1": {"conv": 551354368, "dw": 17385984, "bytes": 57847952, "ops": 31, "macs": 568740352},
    "mobilenet_v2": {"conv": 280057856, "dw": 20716416, "bytes": 70593128, "ops": 65, "macs": 300774272},
    "mobilenet_v3_large": {"conv": 198197120, "dw": 18392640, "bytes": 82158800, "ops": 122, "macs": 216589760},
    "mobilenet_v3_small": {"conv": 49049856, "dw": 7460544, "bytes": 32593564, "ops": 109, "macs": 56510400},
}
FEATURES = ("conv", "dw", "bytes", "ops")


def reference_features(work: GraphWork) -> dict:
    by = work.by_class()
    return {"conv": by.get("conv", {}).get("macs", 0) + by.get("dense", {}).get("macs", 0),
            "dw": by.get("depthwise", {}).get("macs", 0), "bytes": sum(o.bytes for o in work.ops),
            "ops": len(work.ops), "macs": work.macs}


def _nnls(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Non-negative least squares by trying every support (4 unknowns: 15 small solves)."""
    n = a.shape[1]
    best, best_cost = np.zeros(n), float(np.sum(b ** 2))
    for k in range(1, n + 1):
        for support in itertools.combinations(range(n), k):
            cols = list(support)
            x, *_ = np.linalg.lstsq(a[:, cols], b, rcond=None)
            if np.all(x >= 0):
                full = np.zeros(n)
                full[cols] = x
                cost = float(np.sum((a @ full - b) ** 2))
                if cost < best_cost - 1e-15:
                    best, best_cost = full, cost
    return best


def fit(rows: list[tuple[str, str, float]], work: dict[str, dict], iterations: int = 200) -> tuple[np.ndarray, dict]:
    """Fit latency = scale[device] x (features . theta), minimising relative errors.

    `rows` are (device, model, ms). theta (seconds per conv MAC, per depthwise MAC, per byte, per op) is
    shared by the devices: the same kernels on slower or faster cores; scale (relative to the first
    device) is per device. Returns (theta for scale 1, {device: scale})."""
    devices = list(dict.fromkeys(d for d, _, _ in rows))
    x = np.array([[work[m][f] for f in FEATURES] for _, m, _ in rows], dtype=float)
    t = np.array([ms / 1000.0 for _, _, ms in rows])
    norm = x.mean(axis=0) + 1e-30
    scale = {d: 1.0 for d in devices}
    theta = np.zeros(len(FEATURES))
    for _ in range(iterations):
        s = np.array([scale[d] for d, _, _ in rows])
        previous = theta
        theta = _nnls((x / norm) * (s / t)[:, None], np.ones(len(rows))) / norm
        if np.allclose(theta, previous, rtol=1e-6, atol=0):
            break
        f = x @ theta
        for d in devices:
            mask = np.array([r[0] == d for r in rows])
            ratio = f[mask] / t[mask]
            scale[d] = float(ratio.sum() / max((ratio ** 2).sum(), 1e-30))
        first = scale[devices[0]]
        theta, scale = theta * first, {d: v / first for d, v in scale.items()}
    return theta, scale


def predict_ms(theta: np.ndarray, scale: float, features: dict) -> float:
    return 1000.0 * scale * float(np.array([features[f] for f in FEATURES], dtype=float) @ theta)


def held_out_errors(work: dict[str, dict]) -> dict:
    """The estimator's error on figures the fit did not use, two ways:
    - leave-one-out: fit on 11 of the 12 published figures, predict the 12th, for each;
    - cross-device: fit theta on the four Pi 4 figures, each other board's scale on its MobileNet v2
      figure alone, predict that board's three other figures (the Pi 3+ and Pi 2 rows held out)."""
    rows = [(d, m, ms) for d, table in PUBLISHED_MS.items() for m, ms in table.items()]
    loo = []
    for i, (device, model, ms) in enumerate(rows):
        rest = rows[:i] + rows[i + 1:]
        theta, scale = fit(rest, work)
        pred = predict_ms(theta, scale[device], work[model])
        loo.append({"device": device, "model": model, "published_ms": ms, "estimate_ms": round(pred, 1),
                    "error": round(pred / ms - 1, 3)})
    theta4, _ = fit([r for r in rows if r[0] == "rpi4"], work)
    cross = []
    for device in ("rpi3plus", "rpi2"):
        anchor = PUBLISHED_MS[device]["mobilenet_v2"]
        scale = anchor / predict_ms(theta4, 1.0, work["mobilenet_v2"])
        for model, ms in PUBLISHED_MS[device].items():
            if model == "mobilenet_v2":
                continue
            pred = predict_ms(theta4, scale, work[model])
            cross.append({"device": device, "model": model, "published_ms": ms,
                          "estimate_ms": round(pred, 1), "error": round(pred / ms - 1, 3)})

    def summary(items):
        errors = [abs(e["error"]) for e in items]
        return {"rows": items, "mean_abs_error": round(float(np.mean(errors)), 3),
                "max_abs_error": round(float(np.max(errors)), 3)}

    return {"leave_one_out": summary(loo), "cross_device": summary(cross)}


# From the fit to the profiles' cost_model -----------------------------------------------------------

PARALLEL_FRACTION = {"default": 0.9, "lstm": 0.0}
# LSTM MACs run at this fraction of the conv rate. x86: measured (edgekit's speech model, see SOURCES);
# ARM: the x86 ratio x 4 (AVX-512 has 16 fp32 lanes, NEON 4: a matrix-vector-bound kernel loses less of
# the GEMM rate on the narrower unit): an ASSUMPTION.
LSTM_EFFICIENCY = {"x86": 0.059, "arm": 0.24}
SPEECH_LSTM = ("edgekit's speech model (tflite fused LSTM, 61 steps, 1.62 M LSTM MACs) measured with "
               "`edgekit bench --threads 1 --runs 300` (bare invoke p50) on the 2-core x86-64 host, "
               "ai-edge-litert 2.3.0: fp32 0.222 ms, dynamic 0.193 ms, int8 1.475 ms")
DTYPE_SPEEDUP_ARM = {"default": {"fp32": 1.0, "fp16": 1.0, "dynamic": 1.0, "int8": 2.5, "int16x8": 1.0},
                     "lstm": {"int8": 1.5}}
DTYPE_SPEEDUP_X86 = {"default": {"fp32": 1.0, "fp16": 1.0, "dynamic": 0.33, "int8": 2.1, "int16x8": 1.0},
                     "lstm": {"int8": 0.15, "dynamic": 1.15}}
FORMAT_FACTOR = {"tflite": 1.0, "onnx": 1.1}
UNCERTAINTY = {"calibrated": 1.25, "dtype": 1.6, "lstm": 2.0, "format": 1.3}
NOTES = "docs/conversion-facts.md"
LITERT_PTQ = "https://ai.google.dev/edge/litert/models/post_training_quantization"
SOURCES = {
    "gmacs_per_core": (
        "conv and dense: fitted (relative least squares) to XNNPACK's published Raspberry Pi 4 / 3+ / 2 "
        "latencies of MobileNet v1, v2, v3 Large and v3 Small (fp32, 4 threads; " + XNNPACK_README + "), "
        "with MACs counted by edgekit on keras.applications builds of the same models, then divided by "
        "the 4-thread speed-up; depthwise: no MAC term (the fit prices it by the bytes it moves); lstm: "
        "x86 0.059 x the conv rate, measured (" + SPEECH_LSTM + "); ARM 0.24 x the conv rate, an "
        "ASSUMPTION: the x86 ratio x 4 (16 AVX-512 fp32 lanes vs 4 NEON lanes; batch-1 LSTM steps are "
        "matrix-vector products that gain little from wide vectors); no published Raspberry Pi LSTM figure"),
    "gbytes_per_s_per_core": "fitted with gmacs_per_core (bytes = weights + activations each op reads and writes)",
    "op_overhead_us": "fitted with gmacs_per_core (per-op dispatch and thread synchronisation, not thread-scaled)",
    "parallel_fraction": (
        "ASSUMPTION: 0.9 (Amdahl) for every class but lstm; XNNPACK's Pixel 3a MobileNet v2 figures (55 ms "
        "single-threaded, 28 ms multi-threaded on 2 big cores; README 'Mobile phones') imply 0.98 on 2 cores, "
        "a 4-core Pi shares one memory bus; lstm 0.0: LiteRT's batch-1 LSTM kernel is not split across threads"),
    "dtype_speedup": (
        "int8: ASSUMPTION 2.5x on the MAC term (LiteRT's post-training quantization guide: full integer "
        "'3x+ speedup' on CPU, " + LITERT_PTQ + "; measured here on x86: MobileNetV2 3.2 -> 1.5 ms, 2.1x, "
        + NOTES + "); fp16: 1.0, CPU kernels dequantize fp16 weights to fp32 at load (same guide); "
        "dynamic: 1.0 on ARM (the guide claims 2-3x, yet on x86 we measured 3x SLOWER), x86 0.33 measured; "
        "lstm int8: ARM 1.5 ASSUMPTION (NEON integer LSTM kernels), x86 0.15 measured (LiteRT's integer "
        "LSTM uses portable scalar code on x86; " + SPEECH_LSTM + "; also 0.43 vs 0.08 ms and 28.4 vs "
        "9.1 ms in " + NOTES + "); lstm dynamic: x86 1.15 measured (same), ARM 1.0"),
    "format_factor": ("onnx: 1.1x the TFLite time (measured on x86: MobileNetV2 fp32 ONNX 3.5 ms vs TFLite "
                      "3.2 ms, " + NOTES + "; onnxruntime's MLAS kernels on ARM are not calibrated)"),
    "uncertainty": (
        "calibrated: 1.25, the 25% target (held-out error of the fp32 fit: see calibration.held_out); "
        "dtype 1.6 and lstm 2.0: the spread of the assumptions above; format 1.3: ONNX on ARM unmeasured"),
}


def _speedup4() -> float:
    return thread_speedup(PUBLISHED_THREADS, PARALLEL_FRACTION["default"])


def cost_models(work: dict[str, dict] | None = None) -> dict[str, dict]:
    """The `cost_model` object of every profile, from the pooled fit (see docs/estimates.md)."""
    work = work or REFERENCE_WORK
    rows = [(d, m, ms) for d, table in PUBLISHED_MS.items() for m, ms in table.items()]
    theta, scale = fit(rows, work)
    held = held_out_errors(work)
    s4 = _speedup4()
    base = {"conv": 1e-9 / theta[0] / s4 if theta[0] else None,
            "depthwise": 1e-9 / theta[1] / s4 if theta[1] else None,
            "gbytes": 1e-9 / theta[2] / s4 if theta[2] else None,
            "overhead_us": theta[3] * 1e6}
    held_summary = {k: {"mean_abs_error": v["mean_abs_error"], "max_abs_error": v["max_abs_error"],
                        "figures": len(v["rows"])} for k, v in held.items()}
    # 1-thread rpi4-scale prediction of MobileNet v2, to anchor boards with a single published figure.
    v2_one_thread = _model_ms(base, 1.0, work["mobilenet_v2"], threads=1)
    anchors = {
        "rpi4": (scale["rpi4"], "one fit over the Pi 4, 3+ and 2 figures (shared per-class costs, a speed "
                 "scale per board), Pi 4 scale"),
        "rpi3-armv7": (scale["rpi3plus"], "the same fit, Pi 3+ scale (the published boards ran 32-bit "
                       "Raspbian, like this profile)"),
        "rpi5": (scale["rpi4"] / 2.5, "NO published figure: the Raspberry Pi 4 model / 2.5 (Raspberry Pi Ltd: "
                 "'a 2-3x increase in CPU performance relative to Raspberry Pi 4', "
                 "https://www.raspberrypi.com/news/introducing-raspberry-pi-5/)"),
        "android-arm64": (55.0 / v2_one_thread, "scale fitted on XNNPACK's Pixel 3a MobileNet v2 figure (55 ms, "
                          "1 thread); its 2-thread figure (28 ms) is held out"),
        "x86_64-host": (3.2 / v2_one_thread, "scale fitted on edgekit's own x86 measurement of MobileNetV2 fp32 "
                        "(3.2 ms, 1 thread, " + NOTES + "); its 2-thread figure (1.6 ms) is held out; the "
                        "int8 speed-up (2.1x) comes from its int8 figure (1.5 ms)"),
    }
    models = {}
    for name, (device_scale, how) in anchors.items():
        rates = {k: _sig(base[k] / device_scale) for k in ("conv",) if base[k]}
        rates["dense"] = rates["conv"]
        if base["depthwise"]:
            rates["depthwise"] = _sig(base["depthwise"] / device_scale)
        rates["lstm"] = _sig(rates["conv"] * LSTM_EFFICIENCY["x86" if name == "x86_64-host" else "arm"])
        models[name] = {
            "basis": f"fp32 fitted to published MobileNet latencies, {how}; held-out error "
                     f"{100 * held['leave_one_out']['mean_abs_error']:.0f}% mean, "
                     f"{100 * held['leave_one_out']['max_abs_error']:.0f}% max (leave-one-out)",
            "gmacs_per_core": rates,
            "gbytes_per_s_per_core": _sig(base["gbytes"] / device_scale),
            "op_overhead_us": _sig(base["overhead_us"] * device_scale),
            "parallel_fraction": dict(PARALLEL_FRACTION),
            "dtype_speedup": json.loads(json.dumps(DTYPE_SPEEDUP_X86 if name == "x86_64-host"
                                                   else DTYPE_SPEEDUP_ARM)),
            "format_factor": dict(FORMAT_FACTOR),
            "uncertainty": dict(UNCERTAINTY, calibrated=1.6 if name == "rpi5" else UNCERTAINTY["calibrated"]),
            "calibration": {"scale_vs_rpi4": round(device_scale, 4), "how": how, "held_out": held_summary,
                            "published": PUBLISHED_MS.get({"rpi4": "rpi4", "rpi3-armv7": "rpi3plus"}.get(name, ""),
                                                          {}),
                            "source": XNNPACK_README},
            "sources": dict(SOURCES),
        }
    if "rpi5" in models:
        models["rpi5"]["sources"]["uncertainty"] += "; rpi5 calibrated band 1.6: no Pi 5 figure, the 2-3x claim"
    if "x86_64-host" in models:
        models["x86_64-host"]["sources"]["uncertainty"] += (
            "; x86: tiny int8 models ran up to 18x slower than this model estimates (per-op costs; "
            "docs/estimates.md): on the host, measure instead")
    return models


def _sig(x: float, digits: int = 3) -> float:
    return float(f"{x:.{digits}g}")


def _model_ms(base: dict, scale: float, features: dict, threads: int) -> float:
    s = thread_speedup(threads, PARALLEL_FRACTION["default"])
    seconds = features["conv"] / (base["conv"] * 1e9 * s) + features["bytes"] / (base["gbytes"] * 1e9 * s)
    if base["depthwise"]:
        seconds += features["dw"] / (base["depthwise"] * 1e9 * s)
    return 1000.0 * scale * (seconds + features["ops"] * base["overhead_us"] * 1e-6)


# `python -m edgekit.devices.estimate --calibrate [--write] [--recount DIR]` -------------------------

BUILD_REFERENCE = r'''
import os, sys
import keras, tensorflow as tf
out = sys.argv[1]
apps = keras.applications
builders = {
    "mobilenet_v1": lambda: apps.MobileNet(input_shape=(224, 224, 3), weights=None),
    "mobilenet_v2": lambda: apps.MobileNetV2(input_shape=(224, 224, 3), weights=None),
    "mobilenet_v3_large": lambda: apps.MobileNetV3Large(input_shape=(224, 224, 3), weights=None,
                                                        include_preprocessing=False),
    "mobilenet_v3_small": lambda: apps.MobileNetV3Small(input_shape=(224, 224, 3), weights=None,
                                                        include_preprocessing=False),
}
for name, build in builders.items():
    model = build()
    saved = os.path.join(out, name + "_saved")
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", lambda x: model(x, training=False),
                         input_signature=[tf.TensorSpec((1, 224, 224, 3), tf.float32)])
    archive.write_out(saved, verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(saved, signature_keys=["serving_default"])
    with open(os.path.join(out, name + ".tflite"), "wb") as f:
        f.write(converter.convert())
    print(name, flush=True)
'''


def recount(folder: str | Path) -> dict[str, dict]:
    """Build and convert the four MobileNets in a child process (TensorFlow; minutes), then count them."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as script:
        script.write(BUILD_REFERENCE)
    try:
        subprocess.run([sys.executable, script.name, str(folder)], env=env, check=True)
    finally:
        os.unlink(script.name)
    return {name: reference_features(count_tflite(folder / f"{name}.tflite")) for name in PUBLISHED_MS["rpi4"]}


def write_profiles(models: dict[str, dict]) -> list[str]:
    """Replace `cost_model` in each profile file (atomically), keeping everything else."""
    from edgekit.core import atomic_write_text

    written = []
    for name, model in models.items():
        path = profiles.profile_dir() / f"{name}.json"
        if not path.is_file():
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        data["cost_model"] = model
        problems = profiles.validate(data)
        if problems:
            raise UserError(f"{path}: {'; '.join(problems)}")
        atomic_write_text(path, json.dumps(data, indent=2) + "\n")
        written.append(str(path))
    return written


def main(argv: list[str] | None = None) -> int:
    from edgekit.runtime.cli import ArgumentParser

    parser = ArgumentParser(prog="python -m edgekit.devices.estimate",
                            description="Calibrate the latency cost model on published figures.")
    parser.add_argument("--calibrate", action="store_true", required=True)
    parser.add_argument("--recount", metavar="DIR", help="rebuild and recount the MobileNets in DIR (minutes)")
    parser.add_argument("--write", action="store_true", help="write cost_model into the profile files")
    args = parser.parse_args(argv)
    work = REFERENCE_WORK
    if args.recount:
        work = recount(args.recount)
        print("REFERENCE_WORK = " + json.dumps(work, indent=4))
    held = held_out_errors(work)
    print("| board | model | published (ms) | estimate (ms) | error | held out by |")
    print("|---|---|---:|---:|---:|---|")
    for scheme, table in held.items():
        for r in table["rows"]:
            print(f"| {r['device']} | {r['model']} | {r['published_ms']:g} | {r['estimate_ms']:g} "
                  f"| {100 * r['error']:+.1f}% | {scheme} |")
    for scheme, table in held.items():
        print(f"{scheme}: mean |error| {100 * table['mean_abs_error']:.1f}%, max {100 * table['max_abs_error']:.1f}% "
              f"over {len(table['rows'])} figures")
    models = cost_models(work)
    for name, model in models.items():
        print(f"{name}: conv {model['gmacs_per_core']['conv']} GMAC/s/core, "
              f"{model['gbytes_per_s_per_core']} GB/s/core, {model['op_overhead_us']} us/op "
              f"(scale vs rpi4 {model['calibration']['scale_vs_rpi4']})")
    if args.write:
        for path in write_profiles(models):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
