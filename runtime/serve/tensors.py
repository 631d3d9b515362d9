"""The Open Inference Protocol's tensors on the wire: JSON (`{"name", "shape", "datatype", "data"}`)
and the binary tensor data extension (a JSON header of `Inference-Header-Content-Length` bytes, then
each binary tensor's raw little-endian bytes in order; BYTES elements as a 4-byte little-endian
length and the bytes). Decoding checks everything the request can get wrong before any model sees
it: each refusal is an HTTPError (4xx, one line).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field

import numpy as np

from edgekit.runtime.serve.inputs import MAX_RANK, HTTPError, parse_json

BYTES = "BYTES"
DATATYPES = {
    "BOOL": np.dtype(np.bool_), "UINT8": np.dtype(np.uint8), "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32), "UINT64": np.dtype(np.uint64), "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16), "INT32": np.dtype(np.int32), "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16), "FP32": np.dtype(np.float32), "FP64": np.dtype(np.float64),
}
_NAMES = {dtype: name for name, dtype in DATATYPES.items()}
# Request parameters this server acts on (the rest come back in the answer's `parameters`).
BINARY_OUTPUT = "binary_data_output"


def datatype_of(dtype) -> str:
    name = _NAMES.get(np.dtype(dtype))
    if name is None:
        raise ValueError(f"no Open Inference Protocol datatype for {np.dtype(dtype).name}")
    return name


@dataclass
class Tensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    value: np.ndarray | list[bytes]        # BYTES: the elements, flattened (row-major)


@dataclass
class RequestedOutput:
    name: str
    binary: bool | None = None            # None: the request's binary_data_output
    classification: int | None = None     # top-K "score:index:label" strings instead of the tensor


@dataclass
class InferRequest:
    inputs: list[Tensor]
    outputs: list[RequestedOutput] | None = None     # None: every output
    id: str | None = None
    parameters: dict = field(default_factory=dict)   # the request's own, passed back in the answer
    binary_output: bool = False


# ------------------------------------------------------------------------------------- decoding


_ABSENT = object()


def _parameters(value, what: str) -> dict:
    """$parameters: an object of string / number / boolean values (absent: none)."""
    if value is _ABSENT:
        return {}
    if not isinstance(value, dict):
        raise HTTPError(400, f"{what} must be an object of name: value pairs")
    for key, item in value.items():
        if not isinstance(item, (str, int, float, bool)) or item is None:
            raise HTTPError(400, f"{what}.{key} must be a string, number or boolean")
    return value


def _flag(params: dict, key: str, what: str) -> bool | None:
    value = params.get(key)
    if value is not None and not isinstance(value, bool):
        raise HTTPError(400, f"{what}.{key} must be true or false")
    return value


def _shape(value, what: str, max_batch: int) -> tuple[int, ...]:
    if (not isinstance(value, list) or not value
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value)):
        raise HTTPError(400, f"{what}.shape must be a list of non-negative integers, batch first")
    if len(value) > MAX_RANK:
        raise HTTPError(400, f"{what} has rank {len(value)}; at most {MAX_RANK}")
    if value[0] > max_batch:
        raise HTTPError(413, f"{what} has a batch of {value[0]}; this server takes at most {max_batch} per request")
    return tuple(value)


def _flatten_bytes(data, what: str) -> list[bytes]:
    """JSON BYTES data (strings, possibly nested) -> the elements, UTF-8 encoded."""
    out, stack = [], [(data, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            out.append(item.encode("utf-8", "surrogatepass"))
        elif isinstance(item, list) and depth <= MAX_RANK:
            stack.extend((x, depth + 1) for x in reversed(item))
        else:
            raise HTTPError(400, f"{what}.data must hold strings for datatype BYTES")
    return out


def _json_array(data, datatype: str, count: int, what: str) -> np.ndarray:
    """JSON numbers (flat or nested, row-major) -> a flat array of the datatype."""
    if not isinstance(data, list):
        raise HTTPError(400, f"{what}.data must be a list")
    try:
        array = np.asarray(data)
    except (ValueError, TypeError, OverflowError):
        raise HTTPError(400, f"{what}.data is not a rectangular array of numbers") from None
    kind = array.dtype.kind
    if array.size == 0:
        array = array.astype(DATATYPES[datatype])
        kind = array.dtype.kind
    elif kind not in "biuf":
        raise HTTPError(400, f"{what}.data must hold only numbers (or booleans for BOOL)")
    if array.size != count:
        raise HTTPError(400, f"{what}.data has {array.size} elements; shape needs {count}")
    dtype = DATATYPES[datatype]
    if dtype.kind == "b":
        if kind != "b":
            raise HTTPError(400, f"{what}.data must hold true/false for datatype BOOL")
    elif kind == "b":
        raise HTTPError(400, f"{what}.data holds booleans; datatype {datatype} takes numbers")
    elif dtype.kind in "iu":
        if kind == "f" and not (np.isfinite(array).all() and np.array_equal(array, np.rint(array))):
            raise HTTPError(400, f"{what}.data must hold integers for datatype {datatype}")
        limits = np.iinfo(dtype)
        if array.size and (array.min() < limits.min or array.max() > limits.max):
            raise HTTPError(400, f"{what}.data holds values outside the {datatype} range")
    with np.errstate(over="ignore", invalid="ignore"):  # too large for FP16/FP32: inf, refused later
        return array.reshape(-1).astype(dtype)


def _binary_bytes(chunk: bytes, count: int, what: str) -> list[bytes]:
    """BYTES elements in the binary extension: each a uint32 little-endian length, then the bytes."""
    items, offset = [], 0
    while offset < len(chunk):
        if offset + 4 > len(chunk):
            raise HTTPError(400, f"{what}: truncated BYTES element length")
        (length,) = struct.unpack_from("<I", chunk, offset)
        offset += 4
        if offset + length > len(chunk):
            raise HTTPError(400, f"{what}: BYTES element of {length} bytes runs past its binary data")
        items.append(chunk[offset:offset + length])
        offset += length
    if len(items) != count:
        raise HTTPError(400, f"{what} has {len(items)} BYTES elements; shape needs {count}")
    return items


def _input(spec, i: int, max_batch: int) -> tuple[Tensor, int | None]:
    """One $request_input -> (tensor without its binary data yet, binary_data_size or None)."""
    what = f"inputs[{i}]"
    if not isinstance(spec, dict):
        raise HTTPError(400, f"{what} must be an object with name, shape, datatype and data")
    name, datatype = spec.get("name"), spec.get("datatype")
    if not isinstance(name, str) or not name:
        raise HTTPError(400, f"{what}.name must be a non-empty string")
    what = f"input {name!r}"
    if datatype == "BF16":
        raise HTTPError(400, f"{what}: datatype BF16 is not supported; send FP32")
    if datatype != BYTES and datatype not in DATATYPES:
        raise HTTPError(400, f"{what}: unknown datatype {datatype!r}; one of {', '.join([*DATATYPES, BYTES])}")
    shape = _shape(spec.get("shape"), what, max_batch)
    params = _parameters(spec.get("parameters", _ABSENT), f"{what}.parameters")
    size = params.get("binary_data_size")
    count = math.prod(shape)
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise HTTPError(400, f"{what}.parameters.binary_data_size must be a non-negative integer")
        if "data" in spec:
            raise HTTPError(400, f"{what} has both data and binary_data_size")
        if datatype != BYTES and size != count * DATATYPES[datatype].itemsize:
            raise HTTPError(400, f"{what}: binary_data_size {size} does not match shape {list(shape)} of "
                                 f"{datatype} ({count * DATATYPES[datatype].itemsize} bytes)")
        return Tensor(name, datatype, shape, np.empty(0)), size
    if "data" not in spec:
        raise HTTPError(400, f"{what} has no data (and no parameters.binary_data_size)")
    if datatype == BYTES:
        items = _flatten_bytes(spec["data"], what)
        if len(items) != count:
            raise HTTPError(400, f"{what}.data has {len(items)} elements; shape needs {count}")
        return Tensor(name, datatype, shape, items), None
    return Tensor(name, datatype, shape, _json_array(spec["data"], datatype, count, what).reshape(shape)), None


def _output(spec, i: int) -> RequestedOutput:
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise HTTPError(400, f"outputs[{i}] must be an object with a name")
    what = f"output {spec['name']!r}"
    params = _parameters(spec.get("parameters", _ABSENT), f"{what}.parameters")
    k = params.get("classification")
    if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
        raise HTTPError(400, f"{what}.parameters.classification must be a positive integer")
    return RequestedOutput(spec["name"], _flag(params, "binary_data", f"{what}.parameters"), k)


def decode_request(body: bytes, header_length: str | None, max_batch: int) -> InferRequest:
    """An infer request body (JSON, or JSON header + binary tensors) -> InferRequest."""
    if header_length is None:
        header, rest = body, b""
    else:
        text = header_length.strip()
        if not text.isascii() or not text.isdigit() or not 0 < int(text) <= len(body):
            raise HTTPError(400, f"Inference-Header-Content-Length {header_length!r} must be a length within "
                                 f"the {len(body)}-byte body")
        header, rest = body[:int(text)], body[int(text):]
    doc = parse_json(header)
    if not isinstance(doc, dict):
        raise HTTPError(400, 'an infer request is a JSON object: {"inputs": [{"name", "shape", "datatype", '
                             '"data"}, ...]}')
    request_id = doc.get("id")
    if "id" in doc and not isinstance(request_id, str):
        raise HTTPError(400, "id must be a string")
    params = dict(_parameters(doc.get("parameters", _ABSENT), "parameters"))
    binary_output = bool(_flag(params, BINARY_OUTPUT, "parameters"))
    params.pop(BINARY_OUTPUT, None)
    specs = doc.get("inputs")
    if not isinstance(specs, list) or not specs:
        raise HTTPError(400, "inputs must be a non-empty list of tensors")
    inputs, offset = [], 0
    for i, spec in enumerate(specs):
        tensor, size = _input(spec, i, max_batch)
        if size is not None:
            chunk = rest[offset:offset + size]
            if len(chunk) < size:
                raise HTTPError(400, f"input {tensor.name!r}: binary data ends after {len(chunk)} of {size} bytes")
            offset += size
            count = math.prod(tensor.shape)
            if tensor.datatype == BYTES:
                tensor.value = _binary_bytes(chunk, count, f"input {tensor.name!r}")
            else:
                dtype = DATATYPES[tensor.datatype]
                array = np.frombuffer(chunk, dtype=dtype.newbyteorder("<") if dtype.itemsize > 1 else
                                      (np.uint8 if dtype.kind == "b" else dtype))
                tensor.value = (array != 0 if dtype.kind == "b" else array.astype(dtype)).reshape(tensor.shape)
        inputs.append(tensor)
    if offset != len(rest):
        raise HTTPError(400, f"{len(rest) - offset} bytes after the JSON header belong to no input")
    names = [t.name for t in inputs]
    if len(set(names)) != len(names):
        raise HTTPError(400, f"inputs name a tensor twice: {names}")
    if len({t.shape[0] for t in inputs}) > 1:
        raise HTTPError(400, "inputs have different batch sizes: "
                             + ", ".join(f"{t.name} {t.shape[0]}" for t in inputs))
    outputs = None
    if "outputs" in doc:
        if not isinstance(doc["outputs"], list):
            raise HTTPError(400, "outputs must be a list of {\"name\": ...} objects")
        outputs = [_output(spec, i) for i, spec in enumerate(doc["outputs"])]
        wanted = [o.name for o in outputs]
        if len(set(wanted)) != len(wanted):
            raise HTTPError(400, f"outputs name a tensor twice: {wanted}")
    return InferRequest(inputs, outputs, request_id, params, binary_output)


# ------------------------------------------------------------------------------------- encoding


def classification(scores: np.ndarray, k: int, labels: list[str] | None, name: str) -> np.ndarray:
    """Triton's classification extension: the top k of the last axis as "score:index:label" strings
    (scores printed like C's %f), highest first; ties keep the lower index first."""
    if scores.dtype.kind != "f" or scores.ndim < 2:
        raise HTTPError(400, f"output {name!r} is not a batch of scores; classification needs one")
    if labels is not None and len(labels) != scores.shape[-1]:
        raise HTTPError(400, f"output {name!r} has {scores.shape[-1]} scores per sample but the model has "
                             f"{len(labels)} labels")
    k = min(k, scores.shape[-1])
    order = np.argsort(-scores, axis=-1, kind="stable")[..., :k]
    top = np.take_along_axis(scores, order, axis=-1)
    out = np.empty(order.shape, dtype=object)
    for idx in np.ndindex(order.shape):
        j = int(order[idx])
        out[idx] = f"{float(top[idx]):f}:{j}" + (f":{labels[j]}" if labels is not None else "")
    return out


def _bytes_elements(array: np.ndarray) -> list[bytes]:
    return [x if isinstance(x, bytes) else str(x).encode("utf-8") for x in array.reshape(-1)]


def encode_response(model_name: str, version: str, request: InferRequest,
                    outputs: list[tuple[str, np.ndarray, bool]]) -> tuple[bytes, int | None]:
    """(name, array, binary) per output -> (body, JSON header length or None when all JSON). An
    object array holds BYTES elements (str or bytes)."""
    import json

    tensors, chunks = [], []
    for name, array, binary in outputs:
        is_bytes = array.dtype == object
        tensor = {"name": name, "datatype": BYTES if is_bytes else datatype_of(array.dtype),
                  "shape": list(array.shape)}
        if binary:
            if is_bytes:
                data = b"".join(struct.pack("<I", len(x)) + x for x in _bytes_elements(array))
            else:
                data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
            tensor["parameters"] = {"binary_data_size": len(data)}
            chunks.append(data)
        else:
            tensor["data"] = ([x.decode("utf-8", "replace") for x in _bytes_elements(array)] if is_bytes
                              else array.reshape(-1).tolist())
        tensors.append(tensor)
    doc = {"model_name": model_name, "model_version": version}
    if request.id is not None:
        doc["id"] = request.id
    if request.parameters:
        doc["parameters"] = request.parameters
    doc["outputs"] = tensors
    header = json.dumps(doc, separators=(",", ":")).encode()
    if not chunks:
        return header, None
    return header + b"".join(chunks), len(header)
