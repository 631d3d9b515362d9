"""What a format's graph reader returns (`Graph`), and what the cost estimates count on it (`GraphWork`).

numpy + stdlib only. Tensors are keyed by what the format uses to refer to them: the tensor index in
a .tflite flatbuffer, the value name in an ONNX graph.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Tensor:
    key: Hashable                  # index (TFLite) or value name (ONNX)
    name: str                      # the tensor's own name in the file
    shape: list                    # ints; None for a dynamic dimension (graph inputs/outputs)
    dtype: str                     # numpy dtype name: "float32", "int8", ...
    quantization: dict | None = None   # {"scale": [...], "zero_point": [...]} when quantized
    constant: bool = False         # weights: data stored in the file
    variable: bool = False         # state that persists across invokes (TFLite variable tensors)
    signature_name: str | None = None  # the public input/output name (TFLite signature), if any


@dataclass
class Op:
    index: int
    op: str                        # "CONV_2D", "Conv", "com.microsoft.QLinearConv", or a custom op's code
    custom: bool
    inputs: list                   # tensor keys; TFLite's optional inputs left out (-1)
    outputs: list
    names: list[str] = field(default_factory=list)   # op/tensor names (they carry the Keras layer scopes)
    attributes: dict = field(default_factory=dict)


@dataclass
class Graph:
    format: str
    tensors: dict
    ops: list[Op]
    inputs: list                   # keys of the graph's input tensors, in order
    outputs: list
    extra: dict = field(default_factory=dict)   # format-specific facts (ONNX: opset)
    # tensors are numbered and have public (signature) names of their own (TFLite): the manifest then
    # lists both the public name and the file's tensor name and index
    indexed: bool = False

    def io(self, keys) -> list[dict]:
        """Inputs or outputs as a manifest lists them (name, tensor name, index, shape, dtype, quantization)."""
        rows = []
        for key in keys:
            t = self.tensors[key]
            row = {"name": t.signature_name or t.name, "shape": list(t.shape), "dtype": t.dtype,
                   "quantization": t.quantization}
            if self.indexed:
                row.update(tensor_name=t.name, index=int(key))
            rows.append(row)
        return rows

    def op_records(self) -> list[dict]:
        return [{"op": op.op, "custom": op.custom, "names": list(op.names),
                 "dtypes": [self.tensors[k].dtype for k in op.outputs if k in self.tensors]} for op in self.ops]

    def histogram(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for op in self.ops:
            counts[op.op] = counts.get(op.op, 0) + 1
        return dict(sorted(counts.items()))

    def describe(self) -> dict:
        """inputs, outputs, op records and histogram: what export records and the op check reads."""
        return {"inputs": self.io(self.inputs), "outputs": self.io(self.outputs), "op_records": self.op_records(),
                "ops": self.histogram(), **self.extra}


# --- the work of a graph, for latency estimates (devices/estimate) ------------------------------------

# Op classes the cost model prices; each format maps its ops onto them.
CLASSES = ("conv", "depthwise", "dense", "lstm", "elementwise", "pooling", "movement", "quantize")
COMPUTE_CLASSES = ("conv", "depthwise", "dense", "lstm")


@dataclass
class OpWork:
    op: str
    op_class: str
    dtype: str                     # the recipe family the op computes in: fp32, fp16, dynamic, int8, int16x8
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


def nbytes(shape, dtype) -> int:
    return int(np.prod([max(int(d), 1) for d in shape], dtype=np.int64)) * np.dtype(dtype).itemsize


def peak_live(spans: dict) -> int:
    """Largest total size of the tensors alive at once: spans maps a tensor to ([first, last] op
    positions, bytes)."""
    if not spans:
        return 0
    end = max(span[1] for span, _ in spans.values()) + 1
    live = np.zeros(end + 1, dtype=np.int64)
    for (first, last), size in spans.values():
        live[first:last + 1] += size
    return int(live.max())


def compute_dtype(activation, weight) -> str:
    """The recipe family an op computes in, from its activation and weight dtypes."""
    act = np.dtype(activation) if activation is not None else None
    w = np.dtype(weight) if weight is not None else None
    if act in (np.dtype(np.int8), np.dtype(np.uint8)):
        return "int8"
    if act == np.dtype(np.int16):
        return "int16x8"
    if w in (np.dtype(np.int8), np.dtype(np.uint8)):
        return "dynamic"
    if w == np.dtype(np.float16):
        return "fp16"
    return "fp32"
