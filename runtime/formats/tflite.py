"""TFLite (LiteRT) flatbuffers, device half: the byte check, the one graph reader, recurrent state
inputs, and the op classes and work counts the latency estimates use. numpy + the backend's own
packages only (the flatbuffer schema that ai-edge-litert ships; tensorflow.lite's where that is all
there is; on a tflite-runtime-only device, the interpreter's own op listing).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.runtime.errors import ModelFileError, first_line
from edgekit.runtime.formats.graph import (
    COMPUTE_CLASSES,
    Graph,
    GraphWork,
    Op,
    OpWork,
    Tensor,
    compute_dtype,
    nbytes,
    peak_live,
)

IDENTIFIER = b"TFL3"

# Recurrent ops whose state survives an invoke in variable tensors, and the op inputs that hold it.
STATE_INPUTS = {"UNIDIRECTIONAL_SEQUENCE_LSTM": (18, 19), "UNIDIRECTIONAL_SEQUENCE_RNN": (4,), "SVDF": (4,)}
STATEFUL_OPS = {"UNIDIRECTIONAL_SEQUENCE_LSTM", "BIDIRECTIONAL_SEQUENCE_LSTM", "UNIDIRECTIONAL_SEQUENCE_RNN",
                "BIDIRECTIONAL_SEQUENCE_RNN", "SVDF", "VAR_HANDLE", "ASSIGN_VARIABLE"}
# With any of these, carrying state from one invoke to the next does not continue the sequence
# (a backward LSTM reads its input reversed; resource variables are not op inputs we can save).
NOT_STREAMABLE = (STATEFUL_OPS - set(STATE_INPUTS)) | {"REVERSE_V2", "REVERSE_SEQUENCE"}


def check_bytes(data: bytes, path: Path) -> None:
    # A TFLite flatbuffer: 4-byte root offset, then the file identifier "TFL3".
    if len(data) < 16 or data[4:8] != IDENTIFIER:
        raise ModelFileError(f"{path} is not a TFLite model (no TFL3 flatbuffer identifier); "
                             "re-export it or check the file type")
    root = int.from_bytes(data[:4], "little")
    if root < 8 or root >= len(data):
        raise ModelFileError(f"{path} is a truncated or corrupt TFLite model (root offset {root} "
                             f"outside the {len(data)}-byte file)")


def looks_like(data: bytes) -> bool:
    return len(data) >= 8 and data[4:8] == IDENTIFIER


# --- the graph reader --------------------------------------------------------------------------------

def _schema():
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        try:
            from tensorflow.lite.python import schema_py_generated as schema
        except ImportError:
            return None
    return schema


def read_graph(data: bytes, interpreter=None) -> Graph:
    """Subgraph 0 of a .tflite file: tensors (signature names, shapes, dtypes, quantization, which are
    weights and which carry state), ops in execution order. Reads the flatbuffer itself, so it works
    for files no interpreter can load (Flex or custom ops: what the op check must report)."""
    schema = _schema()
    if schema is None:  # a tflite-runtime-only device: no schema module, ask an interpreter
        return _graph_from_interpreter(data, interpreter)
    try:
        return _read_flatbuffer(schema, data)
    except Exception as exc:  # noqa: BLE001 - a corrupt flatbuffer raises anything
        raise ModelFileError(f"cannot read the TFLite graph: {first_line(exc)}") from None


def _read_flatbuffer(schema, data: bytes) -> Graph:
    model = schema.Model.GetRootAs(data, 0)
    if not model.SubgraphsLength():
        raise ValueError("no subgraph")
    graph = model.Subgraphs(0)
    type_names = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    signature: dict[int, str] = {}
    if model.SignatureDefsLength():
        sig = model.SignatureDefs(0)
        for i in range(sig.InputsLength()):
            signature[sig.Inputs(i).TensorIndex()] = sig.Inputs(i).Name().decode()
        for i in range(sig.OutputsLength()):
            signature[sig.Outputs(i).TensorIndex()] = sig.Outputs(i).Name().decode()
    tensors = {}
    for i in range(graph.TensorsLength()):
        t = graph.Tensors(i)
        quant = t.Quantization()
        quantization = None
        if quant is not None and quant.ScaleLength():
            quantization = {"scale": quant.ScaleAsNumpy().astype(float).tolist(),
                            "zero_point": quant.ZeroPointAsNumpy().astype(int).tolist()}
        buffer = model.Buffers(t.Buffer()) if t.Buffer() < model.BuffersLength() else None
        constant = buffer is not None and (buffer.DataLength() > 0 or buffer.Size() > 0)
        dtype = type_names.get(t.Type(), str(t.Type()))
        tensors[i] = Tensor(i, t.Name().decode("utf-8", "replace"), t.ShapeAsNumpy().astype(int).tolist()
                            if t.ShapeLength() else [], _numpy_name(dtype), quantization, constant,
                            bool(t.IsVariable()), signature.get(i))
    ops = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        name = op_names.get(builtin, str(builtin))
        custom = name == "CUSTOM"
        if custom:
            name = (code.CustomCode() or b"CUSTOM").decode("utf-8", "replace")
        inputs = [int(op.Inputs(j)) for j in range(op.InputsLength())]
        outputs = [int(op.Outputs(j)) for j in range(op.OutputsLength()) if op.Outputs(j) >= 0]
        ops.append(Op(i, name, custom, inputs, outputs, [tensors[k].name for k in outputs]))
    return Graph("tflite", tensors, ops, [int(graph.Inputs(i)) for i in range(graph.InputsLength())],
                 [int(graph.Outputs(i)) for i in range(graph.OutputsLength())], indexed=True)


def _numpy_name(tflite_type: str) -> str:
    return {"float32": "float32", "float16": "float16", "int8": "int8", "uint8": "uint8", "int16": "int16",
            "int32": "int32", "int64": "int64", "bool": "bool", "float64": "float64"}.get(tflite_type, tflite_type)


def _graph_from_interpreter(data: bytes, interpreter=None) -> Graph:
    """The same graph from an interpreter's own listing (tflite-runtime has no schema module)."""
    if interpreter is None:
        from tflite_runtime.interpreter import Interpreter  # the only TFLite package left on such a device

        interpreter = Interpreter(model_content=data)
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    listed = interpreter._get_ops_details()  # noqa: SLF001 - the public API lists tensors, not ops
    produced = {int(i) for op in listed for i in op["outputs"]}
    inputs = [d["index"] for d in interpreter.get_input_details()]
    signature: dict[int, str] = {}
    try:
        runner = interpreter.get_signature_runner()
        for name, detail in [*runner.get_input_details().items(), *runner.get_output_details().items()]:
            signature[int(detail["index"])] = name
    except (ValueError, RuntimeError, AttributeError):  # no signature: tensor names stand
        pass
    variable = {int(op["inputs"][k]) for op in listed if op["op_name"] in STATE_INPUTS
                for k in STATE_INPUTS[op["op_name"]] if k < len(op["inputs"]) and op["inputs"][k] >= 0}
    tensors = {}
    for i, d in details.items():
        q = d.get("quantization_parameters") or {}
        scales = np.asarray(q.get("scales", ()), dtype=np.float64).ravel()
        quantization = ({"scale": scales.tolist(), "zero_point": np.asarray(q.get("zero_points", ())).ravel()
                         .astype(int).tolist()} if scales.size else None)
        tensors[i] = Tensor(i, str(d["name"]), [int(x) for x in d["shape"]], np.dtype(d["dtype"]).name,
                            quantization, i not in produced and i not in inputs and i not in variable,
                            i in variable, signature.get(i))
    ops = [Op(int(op["index"]), op["op_name"], False, [int(x) for x in op["inputs"]],
              [int(x) for x in op["outputs"] if x >= 0], [tensors[int(x)].name for x in op["outputs"] if x >= 0])
           for op in listed]
    return Graph("tflite", tensors, ops, inputs, [d["index"] for d in interpreter.get_output_details()],
                 indexed=True)


# --- recurrent state --------------------------------------------------------------------------------

def stateful(graph: Graph) -> bool:
    """Whether an invoke leaves state behind that the next one would see (fused LSTMs and RNNs)."""
    return any(op.op in STATEFUL_OPS for op in graph.ops)


def state_inputs(graph: Graph) -> list[int] | None:
    """The tensors that carry recurrent state between invokes, or None when the model's state cannot
    be carried that way (see NOT_STREAMABLE) or it has none."""
    if any(op.op in NOT_STREAMABLE for op in graph.ops):
        return None
    found = [op.inputs[k] for op in graph.ops if op.op in STATE_INPUTS
             for k in STATE_INPUTS[op.op] if k < len(op.inputs) and op.inputs[k] >= 0]
    return found or None


# --- work counts for the latency estimates ------------------------------------------------------------

# Builtin op -> cost class (runtime/formats/graph.py CLASSES). Ops not named here are elementwise.
OP_CLASSES = {
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
# Ops that only relabel a buffer (no bytes move; the runtime aliases their output to their input).
ZERO_COPY = {"RESHAPE", "SQUEEZE", "EXPAND_DIMS"}
# Ops the counter cannot see into: their subgraphs are not counted (said in the estimate's basis).
CONTROL_FLOW = {"WHILE", "IF", "CALL_ONCE"}


def count_work(data: bytes, path: str | Path) -> GraphWork:
    """Ops (class, compute dtype, MACs, bytes moved) and memory (tensor arena, weights) of a .tflite file."""
    graph = read_graph(data)
    tensors = graph.tensors
    ops = graph.ops
    graph_inputs = set(graph.inputs)
    produced = {i for op in ops for i in op.outputs}
    # weights: tensors no op produces that are neither graph inputs nor state (variable) tensors
    constant = {i for i, t in tensors.items() if i not in produced and i not in graph_inputs and not t.variable}
    # fp16 weights: a DEQUANTIZE of a constant runs once at load; its fp32 output is a weight too.
    stored_dtype = {i: tensors[i].dtype for i in constant}
    init_ops, expanded = set(), set()
    for op in ops:
        if op.op == "DEQUANTIZE" and op.inputs and op.inputs[0] in constant:
            out = op.outputs[0]
            constant.add(out)
            stored_dtype[out] = tensors[op.inputs[0]].dtype
            init_ops.add(op.index)
            expanded.add(op.inputs[0])

    def shape(i):
        return [max(int(d), 1) for d in tensors[i].shape]

    def size(i):
        return int(np.prod(shape(i), dtype=np.int64))

    work = GraphWork("tflite", str(path), len(data))
    work.weights_bytes = sum(nbytes(shape(i), tensors[i].dtype) for i in constant if i not in expanded)
    lifetimes: dict[int, list[int]] = {i: [0, len(ops)] for i in graph_inputs}
    for position, op in enumerate(ops):
        if op.index in init_ops:
            continue
        inputs = [i for i in op.inputs if i >= 0]
        outputs = op.outputs
        for i in inputs + outputs:
            if i not in constant:
                span = lifetimes.setdefault(i, [position, position])
                span[1] = max(span[1], position)
        if op.op in CONTROL_FLOW:
            work.uncounted.append(op.op)
        weights = [i for i in inputs if i in constant]
        activations = [i for i in inputs if i not in constant]
        op_class = OP_CLASSES.get(op.op, "elementwise")
        weight_dtype = next((stored_dtype[i] for i in weights if len(shape(i)) >= 2), None)
        act_dtype = tensors[activations[0]].dtype if activations else None
        dtype = (compute_dtype(act_dtype, weight_dtype) if op_class in COMPUTE_CLASSES
                 else compute_dtype(tensors[outputs[0]].dtype if outputs else None, None))
        macs = _macs(op.op, op_class, inputs, outputs, shape, size, constant)
        moved = 0 if op.op in ZERO_COPY else sum(nbytes(shape(i), tensors[i].dtype) for i in activations + outputs)
        weight_bytes = sum(nbytes(shape(i), tensors[i].dtype) for i in weights)
        work.ops.append(OpWork(op.op, op_class, dtype, int(macs), int(weight_bytes), int(moved)))
    for i in graph.outputs:
        if i in lifetimes:
            lifetimes[i][1] = len(ops)
    work.arena_bytes = peak_live({i: (span, nbytes(shape(i), tensors[i].dtype)) for i, span in lifetimes.items()})
    return work


def _macs(name, op_class, inputs, outputs, shape, size, constant) -> int:
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
