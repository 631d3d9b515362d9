"""The Open Inference Protocol (KServe's "v2" protocol; Triton, KServe, Seldon MLServer and OpenVINO
Model Server speak it): routes and answers, independent of sockets.

    GET  /v2                                        server name, version, extensions
    GET  /v2/health/live, /v2/health/ready          200 while serving (ready: 400 while stopping)
    GET  /v2/models/NAME[/versions/V]               platform, versions, inputs and outputs
    GET  /v2/models/NAME[/versions/V]/ready         {"name", "ready"}
    POST /v2/models/NAME[/versions/V]/infer         tensors in, tensors out (JSON or binary)

Inputs are the model's own tensors by name (what `EdgeModel.predict_outputs` takes: float features,
or integer token ids), or, for a bundle with preprocessing, one BYTES tensor of raw inputs (texts,
encoded photos, WAV files) that the bundle's preprocessing turns into tensors. Outputs are the model's
outputs by name, as `predict_outputs` gives them; with `"parameters": {"classification": K}` an
output comes back as Triton's top-K "score:index:label" strings.
"""

from __future__ import annotations

from urllib.parse import unquote

import numpy as np

from edgekit.runtime.serve.catalog import Catalog
from edgekit.runtime.serve.inputs import HTTPError, media_type, raw_inputs
from edgekit.runtime.serve.reply import JSON_TYPE, Answer, MethodNotAllowed, json_answer
from edgekit.runtime.serve.tensors import BYTES, classification, datatype_of, decode_request, encode_response

PREFIX = "/v2"
SERVER_NAME = "edgekit"
EXTENSIONS = ["binary_tensor_data", "classification", "parameters"]
HEADER_LENGTH = "Inference-Header-Content-Length"
BODY_TYPES = ("", JSON_TYPE, "application/octet-stream")
# route -> method
ROUTES = {"v2_server": "GET", "v2_live": "GET", "v2_ready": "GET", "v2_model": "GET", "v2_model_ready": "GET",
          "v2_infer": "POST"}


def route(method: str, path: str, catalog: Catalog) -> tuple[str, str | None, str | None]:
    """(route, model name, version or None) for a path under /v2, or HTTPError 404/405."""
    name = version = None
    if path in ("/v2", "/v2/"):
        verb = "v2_server"
    elif path == "/v2/health/live":
        verb = "v2_live"
    elif path == "/v2/health/ready":
        verb = "v2_ready"
    elif path.startswith("/v2/models/"):
        parts = path[len("/v2/models/"):].split("/")
        verb = "v2_model"
        if parts[-1] in ("ready", "infer") and len(parts) in (2, 4):
            verb = "v2_model_ready" if parts.pop() == "ready" else "v2_infer"
        if len(parts) == 3 and parts[1] == "versions" and parts[2]:
            version = unquote(parts[2])
        elif len(parts) != 1:
            raise HTTPError(404, f"no route {path!r}; the model routes are /v2/models/NAME[/versions/V]"
                                 "[/ready|/infer]")
        name = unquote(parts[0])
        catalog.pool(name, version)  # 404 for an unknown model or version
    else:
        raise HTTPError(404, f"no route {path!r}; see GET /v2 and /v2/models/NAME")
    if method != ROUTES[verb]:
        raise MethodNotAllowed(path, method, ROUTES[verb])
    return verb, name, version


def answer(route: str, name: str | None, version: str | None, catalog: Catalog, headers, body: bytes,
           options, draining: bool, server_version: str) -> Answer:
    if route == "v2_server":
        return json_answer({"name": SERVER_NAME, "version": server_version, "extensions": EXTENSIONS})
    if route == "v2_live":
        return json_answer({"live": True})
    if route == "v2_ready":  # the protocol's "false" is a 4xx
        return json_answer({"ready": not draining}, 400 if draining else 200)
    version, pool = catalog.pool(name, version)
    if route == "v2_model_ready":
        return json_answer({"name": name, "ready": not draining}, 400 if draining else 200)
    if route == "v2_model":
        with pool.lend(options.timeout) as model:
            return json_answer(model_metadata(model, name, catalog.versions(name)))
    mime, _ = media_type(headers.get("Content-Type"))
    if mime not in BODY_TYPES:
        raise HTTPError(415, f"Content-Type {mime!r}: infer takes JSON (application/json), or with the binary "
                             "tensor data extension application/octet-stream")
    request = decode_request(body, headers.get(HEADER_LENGTH), options.max_batch)
    with pool.lend(options.timeout) as model:
        results = infer(model, request)
    payload, header_length = encode_response(name, version, request, results)
    if header_length is None:
        return Answer(200, JSON_TYPE, payload)
    return Answer(200, "application/octet-stream", payload, ((HEADER_LENGTH, str(header_length)),))


def _public_dtype(info) -> str:
    """What a client sends or gets: float for integer-quantized tensors (the runtime (de)quantizes)."""
    return "FP32" if info.quantized or info.dtype.kind == "f" else datatype_of(info.dtype)


def _shape(info) -> list[int]:
    return [-1] + [-1 if d is None or d < 0 else int(d) for d in info.shape[1:]]


def model_metadata(model, name: str, versions: list[str]) -> dict:
    runner = model.runner
    return {"name": name, "versions": versions, "platform": f"{model.backend}_{model.bundle.format}",
            "inputs": [{"name": n, "datatype": _public_dtype(i), "shape": _shape(i)}
                       for n, i in zip(model.input_names, runner.inputs)],
            "outputs": [{"name": n, "datatype": _public_dtype(i), "shape": _shape(i)}
                        for n, i in zip(model.output_names, runner.outputs)]}


def infer(model, request) -> list[tuple[str, np.ndarray, bool]]:
    """Decoded request -> (output name, array, binary) per requested output."""
    names = list(model.input_names)
    given = [t.name for t in request.inputs]
    raw = [t for t in request.inputs if t.datatype == BYTES]
    if raw:
        if len(request.inputs) != 1 or model.preprocessor is None:
            raise HTTPError(400, "a BYTES input (raw texts, photos or WAV files) is for a bundle with "
                                 f"preprocessing, alone; this model takes {_takes(model)}")
        if given != names:
            raise HTTPError(400, f"input {given[0]!r}: this model's input is {names[0]!r}")
        if len(raw[0].value) != raw[0].shape[0]:
            raise HTTPError(400, f"input {given[0]!r}: a BYTES input has shape [N], one raw input per sample")
        outputs = model.predict_outputs(model.preprocess(raw_inputs(model, raw[0].value)))
    else:
        if set(given) != set(names):
            raise HTTPError(400, f"inputs {given}: this model takes {_takes(model)}")
        outputs = model.predict_outputs({t.name: t.value for t in request.inputs})
    wanted = request.outputs
    if wanted is None:
        return [(n, outputs[n], request.binary_output) for n in outputs]
    unknown = [o.name for o in wanted if o.name not in outputs]
    if unknown:
        raise HTTPError(400, f"no output named {unknown[0]!r}; this model has {list(outputs)}")
    results = []
    for o in wanted:
        array = outputs[o.name]
        if o.classification is not None:
            array = classification(array, o.classification, model.labels, o.name)
        results.append((o.name, array, request.binary_output if o.binary is None else o.binary))
    return results


def _takes(model) -> str:
    return ", ".join(f"{n} ({_public_dtype(i)} {_shape(i)})" for n, i in zip(model.input_names, model.runner.inputs))
