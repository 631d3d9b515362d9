"""ONNX, device half: the byte check, the one graph reader, and the op classes and work counts the
latency estimates use.

A device never reads an ONNX graph (onnxruntime runs the file; ONNX models keep no state between
runs), so the reader is host-side use of this module: it needs the `onnx` package (the protobuf
classes and shape inference onnxruntime itself is built on), imported only when a graph is read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.runtime.errors import ModelFileError, first_line
from edgekit.runtime.formats.graph import COMPUTE_CLASSES, Graph, GraphWork, Op, OpWork, Tensor, peak_live
from edgekit.runtime.formats.graph import nbytes as tensor_bytes


def check_bytes(data: bytes, path: Path) -> None:
    from edgekit.runtime.formats import tflite  # a sibling format's signature, to say what the file is

    if data[:1] in (b"{", b"<") or tflite.looks_like(data):
        raise ModelFileError(f"{path} is not an ONNX model (looks like "
                             f"{'a TFLite model' if tflite.looks_like(data) else 'text'}); check the file type")


def _load(data: bytes):
    import onnx

    try:
        return onnx.load_from_string(data)
    except Exception as exc:  # noqa: BLE001 - protobuf raises many kinds
        raise ModelFileError(f"cannot read the ONNX graph: {first_line(exc)}") from None


def _value_tensor(value, constant: bool = False) -> Tensor:
    from onnx.helper import tensor_dtype_to_np_dtype

    t = value.type.tensor_type
    shape = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    dtype = np.dtype(tensor_dtype_to_np_dtype(t.elem_type)).name if t.elem_type else "float32"
    return Tensor(value.name, value.name, shape, dtype, None, constant)


def read_graph(data: bytes) -> Graph:
    """The graph of an .onnx file: its inputs (initializers excluded) and outputs with shapes (None for
    a dynamic dimension) and dtypes, the initializers as constant tensors, and the nodes in order."""
    from onnx.helper import tensor_dtype_to_np_dtype

    proto = _load(data)
    graph = proto.graph
    tensors = {}
    for init in graph.initializer:
        tensors[init.name] = Tensor(init.name, init.name, list(init.dims),
                                    np.dtype(tensor_dtype_to_np_dtype(init.data_type)).name, None, True)
    for value in [*graph.input, *graph.value_info, *graph.output]:
        if value.name not in tensors:
            tensors[value.name] = _value_tensor(value)
    ops = []
    for i, node in enumerate(graph.node):
        op = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
        ops.append(Op(i, op, False, [n for n in node.input if n], [n for n in node.output if n],
                      [node.name, *node.output]))
    opset = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=None)
    return Graph("onnx", tensors, ops, [v.name for v in graph.input if not tensors[v.name].constant],
                 [v.name for v in graph.output], extra={"opset": opset})


# --- work counts for the latency estimates ------------------------------------------------------------

OP_CLASSES = {
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
WEIGHT_INPUT = {"Conv": 1, "ConvTranspose": 1, "ConvInteger": 1, "QLinearConv": 3, "Gemm": 1,
                "MatMul": 1, "MatMulInteger": 1, "QLinearMatMul": 3}
# Ops that only relabel a buffer (no bytes move).
ZERO_COPY = {"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Shape", "Constant"}
# onnxruntime folds these into a preceding Conv/MatMul/Gemm (batch norm, activations).
FUSED_AFTER_CONV = {"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "Tanh", "Mul", "Add", "Sub", "Div",
                    "BatchNormalization"}
CONTROL_FLOW = {"Loop", "If", "Scan"}


def _shaped(data: bytes):
    """The graph of an .onnx file with its shapes inferred (symbolic dims taken as 1), every tensor's
    (shape, dtype), and those of its constants (initializers and Constant nodes)."""
    import onnx
    from onnx import numpy_helper, shape_inference

    model = _load(data)
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


def count_work(data: bytes, path: str | Path) -> GraphWork:
    """Ops, MACs, bytes and memory of an .onnx file (onnx shape inference; symbolic dims taken as 1)."""
    graph, info, constant = _shaped(data)
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
        return tensor_bytes(shape(name), dtype(name)) if name in info or name in weight_of else 0

    work = GraphWork("onnx", str(path), len(data))
    work.weights_bytes = sum(tensor_bytes(s, d) for s, d in constant.values())
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
        op_class = OP_CLASSES.get(op, "elementwise")
        if op == "Conv" and any(a.name == "group" and a.i > 1 for a in node.attribute) \
                and len(inputs) > 1 and len(shape(inputs[1])) > 1 and shape(inputs[1])[1] == 1:
            op_class = "depthwise"
        weights = [i for i in inputs if is_const(i) and len(shape(i)) >= 2]
        activations = [i for i in inputs if not is_const(i)]
        data_dtype = _compute_dtype(node, activations, weights, dtype, int8_activation, op_class)
        macs = _macs(node, inputs, outputs, shape, weights)
        # An int8 op reads and writes int8 tensors, whatever float type the Q/DQ graph gives them.
        moved = 0 if op in ZERO_COPY else sum(
            nbytes(i) // (dtype(i).itemsize if data_dtype == "int8" else 1) for i in activations + outputs)
        work.ops.append(OpWork(op, op_class, data_dtype, int(macs), int(sum(nbytes(i) for i in weights)),
                               int(moved)))
    for value in graph.output:
        if value.name in lifetimes:
            lifetimes[value.name][1] = len(graph.node)
    work.arena_bytes = peak_live({n: (span, nbytes(n)) for n, span in lifetimes.items()})
    return work


def _compute_dtype(node, activations, weights, dtype, int8_activation, op_class) -> str:
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


def _macs(node, inputs, outputs, shape, weights) -> int:
    op = node.op_type
    if not outputs:
        return 0
    out = int(np.prod(shape(outputs[0]))) if shape(outputs[0]) else 0
    if op in WEIGHT_INPUT and len(inputs) > WEIGHT_INPUT[op]:
        w = shape(inputs[WEIGHT_INPUT[op]])
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
