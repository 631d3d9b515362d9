"""`edgekit serve` speaking the Open Inference Protocol (KServe v2), checked with the protocol's own
artefacts: NVIDIA's `tritonclient[http]` clients (the gevent one and the aiohttp one) against a real
`edgekit serve` process, and schemathesis fuzzing it from the published OpenAPI file
(tests/data/open_inference_rest.yaml, with its source and licence beside it).

Fast: the wire format (JSON and binary tensors, BYTES, classification), routes, limits and errors on
an in-process server around a stand-in model, and the serve package's import order.
Slow: the official clients on the trained text, image and speech bundles (one test per task, so each
runs in its model's xdist group), on a two-input two-output tensor model served as a folder of
versions with a token, and the fuzz run.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from test_serve import TOKEN, ServerProcess, raw_request, request

from edgekit.runtime.backends.base import TensorInfo
from edgekit.runtime.serve import tensors
from edgekit.runtime.serve.app import App
from edgekit.runtime.serve.httpd import EdgekitHTTPServer
from edgekit.runtime.serve.inputs import HTTPError
from edgekit.runtime.serve.options import ServeOptions
from edgekit.runtime.serve.pool import ModelPool

SPEC = Path(__file__).parent / "data" / "open_inference_rest.yaml"


# ------------------------------------------------------------------------------------ the codec


def _binary_request(doc: dict, blobs: list[bytes]) -> tuple[bytes, str]:
    header = json.dumps(doc).encode()
    return header + b"".join(blobs), str(len(header))


def test_tensors_decode_json_and_binary_alike():
    x = np.arange(6, dtype=np.float32).reshape(2, 3) / 7
    ids = np.array([[1, 2], [3, 40000]], dtype=np.int64)
    json_doc = {"id": "r1", "parameters": {"tag": "t", "binary_data_output": True},
                "inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": x.tolist()},
                           {"name": "ids", "shape": [2, 2], "datatype": "INT64", "data": ids.ravel().tolist()}],
                "outputs": [{"name": "y", "parameters": {"classification": 2, "binary_data": False}}]}
    request_json = tensors.decode_request(json.dumps(json_doc).encode(), None, max_batch=8)
    bin_doc = json.loads(json.dumps(json_doc))
    for spec, array in zip(bin_doc["inputs"], (x, ids)):
        del spec["data"]
        spec["parameters"] = {"binary_data_size": array.nbytes}
    body, length = _binary_request(bin_doc, [x.tobytes(), ids.astype("<i8").tobytes()])
    request_bin = tensors.decode_request(body, length, max_batch=8)
    for req in (request_json, request_bin):
        assert [t.name for t in req.inputs] == ["x", "ids"] and req.id == "r1" and req.binary_output
        assert req.parameters == {"tag": "t"}  # binary_data_output is acted on, the rest passes through
        np.testing.assert_array_equal(req.inputs[0].value, x)
        assert req.inputs[0].value.dtype == np.float32 and req.inputs[1].value.dtype == np.int64
        np.testing.assert_array_equal(req.inputs[1].value, ids)
        assert req.outputs[0].classification == 2 and req.outputs[0].binary is False
    texts = ["héllo", "", "a b"]
    packed = b"".join(struct.pack("<I", len(t.encode())) + t.encode() for t in texts)
    body, length = _binary_request({"inputs": [{"name": "raw", "shape": [3], "datatype": "BYTES",
                                                "parameters": {"binary_data_size": len(packed)}}]}, [packed])
    assert tensors.decode_request(body, length, 8).inputs[0].value == [t.encode() for t in texts]
    doc = {"inputs": [{"name": "raw", "shape": [3, 1], "datatype": "BYTES", "data": [[t] for t in texts]}]}
    assert tensors.decode_request(json.dumps(doc).encode(), None, 8).inputs[0].value == [t.encode() for t in texts]


def test_every_fixed_size_datatype_round_trips_through_the_binary_extension():
    rng = np.random.default_rng(0)
    for name, dtype in tensors.DATATYPES.items():
        array = (rng.integers(0, 2, (2, 3)) if dtype.kind == "b" else rng.integers(0, 100, (2, 3))).astype(dtype)
        req = tensors.InferRequest(inputs=[])
        for binary in (True, False):
            body, length = tensors.encode_response("m", "1", req, [("out", array, binary)])
            header = json.loads(body[:length] if length else body)
            tensor = header["outputs"][0]
            assert tensor["datatype"] == name and tensor["shape"] == [2, 3]
            back = (np.frombuffer(body[length:], dtype=dtype.newbyteorder("<")) if binary
                    else np.asarray(tensor["data"], dtype=dtype))
            np.testing.assert_array_equal(back.reshape(2, 3), array)
        spec = {"name": "a", "shape": [2, 3], "datatype": name, "parameters": {"binary_data_size": array.nbytes}}
        body, length = _binary_request({"inputs": [spec]}, [array.astype(dtype.newbyteorder("<")).tobytes()])
        np.testing.assert_array_equal(tensors.decode_request(body, length, 8).inputs[0].value, array)


def test_classification_is_tritons_score_index_label():
    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.25, 0.25]], dtype=np.float32)
    out = tensors.classification(scores, 2, ["a", "b", "c"], "probs")
    assert out.tolist() == [["0.700000:1:b", "0.200000:2:c"], ["0.500000:0:a", "0.250000:1:b"]]
    assert tensors.classification(scores, 9, None, "probs").shape == (2, 3)  # k is capped; no labels: score:index
    with pytest.raises(HTTPError, match="2 labels"):
        tensors.classification(scores, 1, ["a", "b"], "probs")


BAD_REQUESTS = [
    (b"[]", None, 400, "JSON object"), (b'{"inputs": []}', None, 400, "non-empty"),
    (b'{"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32"}]}', None, 400, "no data"),
    (b'{"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP99", "data": [1, 2]}]}', None, 400,
     "unknown datatype"),
    (b'{"inputs": [{"name": "x", "shape": [1, 2], "datatype": "BF16", "data": [1, 2]}]}', None, 400, "BF16"),
    (b'{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2]}]}', None, 400, "needs 3"),
    (b'{"inputs": [{"name": "x", "shape": [1, -2], "datatype": "FP32", "data": [1, 2]}]}', None, 400, "non-negative"),
    (b'{"inputs": [{"name": "x", "shape": [65, 1], "datatype": "FP32", "data": [1]}]}', None, 413, "at most 64"),
    (b'{"inputs": [{"name": "x", "shape": [1,1,1,1,1,1,1,1,1], "datatype": "FP32", "data": [1]}]}', None, 400, "rank"),
    (b'{"inputs": [{"name": "x", "shape": [1, 2], "datatype": "INT32", "data": [1.5, 2]}]}', None, 400, "integers"),
    (b'{"inputs": [{"name": "x", "shape": [1, 2], "datatype": "INT8", "data": [1, 200]}]}', None, 400, "range"),
    (b'{"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, "a"]}]}', None, 400, "numbers"),
    (b'{"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [[1], [2, 3]]}]}', None, 400,
     "rectangular"),
    (b'{"inputs": [{"name": "x", "shape": [1, 2], "datatype": "BOOL", "data": [1, 0]}]}', None, 400, "true/false"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": [3]}]}', None, 400, "strings"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}, '
     b'{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}', None, 400, "twice"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}, '
     b'{"name": "z", "shape": [2], "datatype": "FP32", "data": [1, 2]}]}', None, 400, "different batch"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}], "parameters": {"a": [1]}}',
     None, 400, "string, number or boolean"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}], "id": 5}', None, 400, "id"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}], "outputs": null}', None, 400,
     "outputs must be a list"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1], "parameters": null}]}', None, 400,
     "must be an object"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}], "outputs": [{"n": 1}]}',
     None, 400, "outputs[0]"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}}]}xyz',
     "json", 400, "ends after 3 of 4"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 8}}]}',
     None, 400, "does not match"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}junk', "json", 400,
     "belong to no input"),
    (b'{"inputs": []}', "999", 400, "Inference-Header-Content-Length"),
    (b'{"inputs": []}', "-1", 400, "Inference-Header-Content-Length"),
]


@pytest.mark.parametrize("body, length, status, words", BAD_REQUESTS)
def test_malformed_infer_requests_are_one_line_4xx(body, length, status, words):
    if length == "json":  # the JSON header ends at the last "}"; binary bytes follow
        length = str(body.rindex(b"}") + 1)
    with pytest.raises(HTTPError) as exc:
        tensors.decode_request(body, length, max_batch=64)
    assert exc.value.status == status and words in str(exc.value) and "\n" not in str(exc.value)


# --------------------------------------------------------------------- an in-process stand-in server


class _TwoHeads:
    """A stand-in EdgeModel: inputs `a` [N, 2] float and `b` [N] int, outputs `sum` = a0 + a1 + b and
    `probs` (softmax of a); labels "left", "right"; a first value of 13 raises an unexpected error."""

    backend, input_names, output_names, labels, preprocessor = "standin", ["a", "b"], ["sum", "probs"], \
        ["left", "right"], None

    def __init__(self) -> None:
        self.runner = SimpleNamespace(
            inputs=[TensorInfo("a", (None, 2), np.dtype(np.float32)), TensorInfo("b", (None,), np.dtype(np.int32))],
            outputs=[TensorInfo("sum", (None,), np.dtype(np.float32)), TensorInfo("probs", (None, 2),
                                                                                  np.dtype(np.float32))])
        self.bundle = SimpleNamespace(manifest={}, task="tensor", format="tflite", variant="fp32", sha256="0",
                                      preprocessing=None)

    def predict_outputs(self, feed):
        a, b = np.asarray(feed["a"], np.float32), np.asarray(feed["b"])
        if a.flat[0] == 13:
            raise RuntimeError("boom")
        e = np.exp(a - a.max(axis=1, keepdims=True))
        return {"sum": a.sum(axis=1) + b.astype(np.float32), "probs": (e / e.sum(axis=1, keepdims=True))}

    def close(self) -> None:
        pass


@pytest.fixture
def standin_port():
    options = ServeOptions(port=0, timeout=2.0, max_body_bytes=4096, max_batch=8)
    pools = {"two": {"1": ModelPool("two", "two", 1, _TwoHeads), "3": ModelPool("two", "two", 1, _TwoHeads)}}
    server = EdgekitHTTPServer(("127.0.0.1", 0), App(pools, options, token=TOKEN))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.drain()
    server.server_close()


def _raw(port, data: bytes) -> tuple[int, dict, bytes]:
    status, answer = raw_request(port, data)
    head, _, body = answer.partition(b"\r\n\r\n")
    headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:])
    return status, headers, body


def _infer_doc(a, b, **extra):
    a, b = np.asarray(a, np.float32), np.asarray(b, np.int32)
    return {"inputs": [{"name": "a", "shape": list(a.shape), "datatype": "FP32", "data": a.ravel().tolist()},
                       {"name": "b", "shape": list(b.shape), "datatype": "INT32", "data": b.tolist()}], **extra}


def test_v2_routes_answers_and_errors_on_a_stand_in(standin_port):
    port = standin_port
    get = lambda path, **kw: request(port, "GET", path, **kw)  # noqa: E731
    post = lambda path, body, **kw: request(port, "POST", path, body, **kw)  # noqa: E731
    for path in ("/v2/health/live", "/v2/health/ready"):  # probes need no token
        status, _, body = get(path, token=None)
        assert status == 200 and json.loads(body) in ({"live": True}, {"ready": True})
    assert get("/v2", token=None)[0] == 401 and get("/v2/models/two/infer", token=None)[0] == 401
    server = json.loads(get("/v2/")[2])
    assert server["name"] == "edgekit" and "binary_tensor_data" in server["extensions"]
    meta = json.loads(get("/v2/models/two")[2])
    assert meta == {"name": "two", "versions": ["1", "3"], "platform": "standin_tflite",
                    "inputs": [{"name": "a", "datatype": "FP32", "shape": [-1, 2]},
                               {"name": "b", "datatype": "INT32", "shape": [-1]}],
                    "outputs": [{"name": "sum", "datatype": "FP32", "shape": [-1]},
                                {"name": "probs", "datatype": "FP32", "shape": [-1, 2]}]}
    assert json.loads(get("/v2/models/two/versions/003/ready")[2]) == {"name": "two", "ready": True}

    a, b = [[1.0, 2.0], [0.5, -0.5]], [10, 20]
    status, headers, body = post("/v2/models/two/versions/1/infer", _infer_doc(a, b, id="q", parameters={"k": 1}))
    answer = json.loads(body)
    assert status == 200 and answer["model_version"] == "1" and answer["id"] == "q" and answer["parameters"] == {"k": 1}
    assert [(o["name"], o["shape"], o["data"]) for o in answer["outputs"]][0] == ("sum", [2], [13.0, 20.0])
    # The binary tensor data extension both ways, an output chosen by name and one as labels.
    doc = _infer_doc(a, b, outputs=[{"name": "probs", "parameters": {"binary_data": True}},
                                    {"name": "probs", "parameters": {"classification": 1}}][:1])
    spec = doc["inputs"][0]
    del spec["data"]
    spec["parameters"] = {"binary_data_size": 16}
    payload, length = _binary_request(doc, [np.asarray(a, "<f4").tobytes()])
    status, headers, body = post("/v2/models/two/infer", payload, headers={
        "Inference-Header-Content-Length": length, "Content-Type": "application/octet-stream"})
    n = int(headers["Inference-Header-Content-Length"])
    out = json.loads(body[:n])["outputs"]
    assert status == 200 and [o["name"] for o in out] == ["probs"] and out[0]["parameters"]["binary_data_size"] == 16
    probs = np.frombuffer(body[n:], "<f4").reshape(2, 2)
    np.testing.assert_allclose(probs, [[0.26894143, 0.7310586], [0.7310586, 0.26894143]], rtol=1e-6)
    doc = _infer_doc(a, b, outputs=[{"name": "probs", "parameters": {"classification": 1}}])
    out = json.loads(post("/v2/models/two/infer", doc)[2])["outputs"][0]
    assert out["datatype"] == "BYTES" and out["data"] == ["0.731059:1:right", "0.731059:0:left"]
    compressed = gzip.compress(json.dumps(_infer_doc(a, b)).encode())
    assert post("/v2/models/two/infer", compressed, headers={"Content-Encoding": "gzip"})[0] == 200

    errors = {
        "unknown model": (get("/v2/models/nope"), 404), "unknown version": (get("/v2/models/two/versions/2"), 404),
        "unknown route": (get("/v2/models/two/stats"), 404), "GET infer": (get("/v2/models/two/infer"), 405),
        "POST ready": (post("/v2/health/ready", b""), 405),
        "wrong inputs": (post("/v2/models/two/infer", {"inputs": _infer_doc(a, b)["inputs"][:1]}), 400),
        "unknown output": (post("/v2/models/two/infer", _infer_doc(a, b, outputs=[{"name": "zz"}])), 400),
        "label count": (post("/v2/models/two/infer", _infer_doc(a, b, outputs=[
            {"name": "sum", "parameters": {"classification": 1}}])), 400),
        "BYTES to a tensor model": (post("/v2/models/two/infer", {"inputs": [
            {"name": "a", "shape": [1], "datatype": "BYTES", "data": ["x"]}]}), 400),
        "NaN": (post("/v2/models/two/infer", json.dumps(_infer_doc(a, b)).replace("1.0", "NaN").encode()), 400),
        "form type": (post("/v2/models/two/infer", _infer_doc(a, b), headers={
            "Content-Type": "application/x-www-form-urlencoded"}), 415),
        "brotli": (post("/v2/models/two/infer", b"x", headers={"Content-Encoding": "br"}), 415),
        "gzip bomb": (post("/v2/models/two/infer", gzip.compress(b" " * 100_000), headers={
            "Content-Encoding": "gzip"}), 413),
        "body over limit": (post("/v2/models/two/infer", b" " * 5000), 413),
        "batch over limit": (post("/v2/models/two/infer", _infer_doc([[0, 0]] * 9, [0] * 9)), 413),
        "PUT": (_raw(port, b"PUT /v2 HTTP/1.1\r\nContent-Length: 0\r\n\r\n"), 405),
    }
    wrong = {name: got[0] for name, (got, want) in errors.items() if got[0] != want}
    assert not wrong, wrong
    assert all("error" in json.loads(got[2]) for got, _ in errors.values())
    assert errors["GET infer"][0][1]["Allow"] == "POST" and errors["PUT"][0][1]["Allow"] == "GET, POST"
    status, _, body = post("/v2/models/two/infer", _infer_doc([[13, 0]], [0]))
    assert status == 500 and "RuntimeError: boom" in json.loads(body)["error"]
    assert get("/v2/health/live", token=None)[0] == 200  # and the server goes on

    metrics = get("/metrics")[2].decode()
    assert 'edgekit_requests_total{model="two",route="v2_infer",code="200"} 4' in metrics
    assert 'edgekit_request_errors_total{model="two",route="v2_infer"}' in metrics
    assert 'edgekit_requests_total{model="",route="v2_live",code="200"} 2' in metrics
    assert 'edgekit_request_duration_seconds_count{model="two"}' in metrics


# ------------------------------------------------------------------------------------ slow: served


@pytest.fixture(scope="module")
def pair_versions(rt_bundles, tmp_path_factory) -> Path:
    """The two-input two-output bundles as one model with two versions (TF Serving's layout):
    pair/1 = pair-tflite-fp32, pair/2 = pair-tflite-int8 (whose inputs the server quantizes)."""
    import shutil

    folder = tmp_path_factory.mktemp("versions") / "pair"
    for version, bundle in (("1", "pair-tflite-fp32"), ("2", "pair-tflite-int8")):
        shutil.copytree(rt_bundles / bundle, folder / version)
    return folder


def _tensor(name, shape, datatype, data):
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


# One valid infer request per served model (the fuzzer's "examples" phase sends them and mutates them).
FUZZ_EXAMPLES = {
    "dense-tflite-fp32": [_tensor("features", [1, 8], "FP32", [0.5] * 8)],
    "image-tflite-int8": [_tensor("image", [1, 16, 16, 3], "FP32", [0.1] * 768)],
    "words": [_tensor("tokens", [2], "BYTES", ["w2 w3 w4", "w9"])],
    "pair": [_tensor("features", [1, 8], "FP32", [0.1] * 8), _tensor("extra", [1, 4], "FP32", [1, 2, 3, 4])],
}


def _openapi_for_fuzzing(served: dict[str, list[str]]) -> dict:
    """The published OpenAPI file, its `${NAME}` path parameters read as `{NAME}`, plus a copy of its
    three model operations for each served model and version with the name and version filled in and
    a valid example body, so that generated requests reach real models as well as unknown names."""
    import copy

    import yaml

    spec = yaml.safe_load(SPEC.read_text())
    spec["paths"] = {path.replace("${", "{"): item for path, item in spec["paths"].items()}
    model_paths = {p: item for p, item in spec["paths"].items() if p.startswith("/v2/models/")}
    for name, versions in served.items():
        for version in versions:
            for path, item in model_paths.items():
                item = copy.deepcopy(item)
                item.pop("parameters")
                for operation in item.values():
                    operation["operationId"] += f"-{name}-{version}"
                    if "requestBody" in operation:
                        operation["requestBody"]["content"]["application/json"]["example"] = {
                            "inputs": FUZZ_EXAMPLES[name]}
                spec["paths"][path.replace("{MODEL_NAME}", name).replace("{MODEL_VERSION}", version)] = item
    return spec


@pytest.mark.timeout(240)
def test_fuzzing_from_the_published_openapi_finds_no_server_error(rt_bundles, pair_versions, tmp_path):
    """schemathesis (coverage and fuzzing phases, positive and negative data) against a server with
    a tensor bundle, an int8 image bundle and a folder of versions: no 5xx, every request that breaks
    the schema a 4xx, every 200 answer valid by the published response schemas, the server alive."""
    from test_serve import VOCAB, _with_preprocessing

    words = _with_preprocessing(rt_bundles / "tokens-onnx-fp32", tmp_path / "words", "text",
                                {"type": "text", "vocab_file": "assets/vocab.txt", "max_len": 12, "padding": "post"},
                                vocab=VOCAB)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    served = {"dense-tflite-fp32": ["1"], "image-tflite-int8": ["1"], "words": ["1"], "pair": ["1", "2"]}
    spec = tmp_path / "openapi.json"
    spec.write_text(json.dumps(_openapi_for_fuzzing(served)))
    config = tmp_path / "schemathesis.toml"
    # Every request that breaks the schema must be refused with a 4xx: 413 (too large) and 411 too.
    config.write_text('[checks.negative_data_rejection]\nexpected-statuses = ["4xx"]\n')
    server = ServerProcess([str(rt_bundles / "dense-tflite-fp32"), str(rt_bundles / "image-tflite-int8"), str(words),
                            str(pair_versions), "--threads", "1", "--token-file", str(token_file),
                            "--max-batch", "16", "--max-body-bytes", "200000"])
    # Seconds of fuzzing at most; how many requests fit depends on the machine's load (measured on the
    # shared 2-core build machine: 962 requests with a 30 s bound, 1034 with 40 s, 1393 with 60 s).
    budget = 45
    try:
        started = time.monotonic()
        proc = subprocess.run(
            [str(Path(sys.executable).parent / "schemathesis"), "--config-file", str(config), "run", str(spec),
             "--url", f"http://127.0.0.1:{server.port}", "-H", f"Authorization: Bearer {TOKEN}",
             "--checks", "not_a_server_error,negative_data_rejection,response_schema_conformance,"
                         "content_type_conformance,unsupported_method",
             "--phases", "examples,coverage,fuzzing", "--mode", "all", "--max-examples", "8", "--seed", "23",
             "--workers", "2", "--max-time", str(budget), "--generation-database", "none", "--no-color",
             "--report", "har", "--report-har-path", str(tmp_path / "fuzz.har")],
            capture_output=True, text=True, timeout=budget + 120, cwd=tmp_path)
        elapsed = time.monotonic() - started
        entries = json.loads((tmp_path / "fuzz.har").read_text())["log"]["entries"]
        statuses = [e["response"]["status"] for e in entries]
        print(f"schemathesis: {len(entries)} requests in {elapsed:.1f} s; status codes "
              f"{dict(sorted(Counter(statuses).items()))}")
        assert proc.returncode == 0, proc.stdout[-4000:]
        assert len(entries) >= 150 and not [s for s in statuses if s >= 500 or s == 0]
        assert server.proc.poll() is None and request(server.port, "GET", "/v2/health/ready")[0] == 200
    finally:
        rc = server.stop()
    assert rc == 0
    log = "\n".join(server.lines)
    assert "Traceback" not in log and ": 500:" not in log, log[-3000:]


class _Client:
    """tritonclient's gevent client or its aiohttp one behind one synchronous interface."""

    def __init__(self, kind: str, port: int, headers: dict | None = None) -> None:
        self.kind, self.headers = kind, headers
        if kind == "aio":
            import tritonclient.http.aio as module

            self.loop = asyncio.new_event_loop()
            self.client = self.loop.run_until_complete(self._make(module, port))
        else:
            import tritonclient.http as module

            self.client = module.InferenceServerClient(f"127.0.0.1:{port}", network_timeout=60.0)
        self.module = module

    @staticmethod
    async def _make(module, port):
        return module.InferenceServerClient(f"127.0.0.1:{port}")

    def __getattr__(self, method):
        def call(*args, **kwargs):
            # a copy each time: tritonclient's infer() writes its Inference-Header-Content-Length into it
            kwargs.setdefault("headers", dict(self.headers) if self.headers else None)
            result = getattr(self.client, method)(*args, **kwargs)
            return self.loop.run_until_complete(result) if self.kind == "aio" else result
        return call

    def close(self) -> None:
        if self.kind == "aio":
            self.loop.run_until_complete(self.client.close())
            self.loop.close()
        else:
            self.client.close()


def _inputs(module, feed: dict, binary: bool) -> list:
    from tritonclient.utils import np_to_triton_dtype

    out = []
    for name, array in feed.items():
        tensor = module.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array, binary_data=binary)
        out.append(tensor)
    return out


def _public_datatype(info) -> str:
    from tritonclient.utils import np_to_triton_dtype

    return "FP32" if info.quantized or info.dtype.kind == "f" else np_to_triton_dtype(info.dtype)


def _check_model(client: _Client, name: str, model, feed: dict, raw: list[bytes] | None, version: str = "1",
                 versions: list[str] | None = None) -> None:
    """The official client's metadata, readiness and outputs (binary and JSON tensors, raw BYTES,
    classification) against the runtime's own answers for `model`."""
    module = client.module
    meta = client.get_model_metadata(name, version)

    def tensors(names, infos):  # the batch, and any other dynamic dimension, is -1
        return [{"name": n, "datatype": _public_datatype(i),
                 "shape": [-1] + [-1 if d is None else d for d in i.shape[1:]]} for n, i in zip(names, infos)]
    assert meta == {"name": name, "versions": versions or ["1"], "platform": f"{model.backend}_{model.bundle.format}",
                    "inputs": tensors(model.input_names, model.runner.inputs),
                    "outputs": tensors(model.output_names, model.runner.outputs)}, meta
    assert client.is_model_ready(name, version)
    expected = model.predict_outputs(feed)
    binary = client.infer(name, _inputs(module, feed, True), model_version=version, request_id="b1")
    assert binary.get_response()["model_version"] == version and binary.get_response()["id"] == "b1"
    as_json = client.infer(name, _inputs(module, feed, False), model_version=version,
                           outputs=[module.InferRequestedOutput(n, binary_data=False) for n in model.output_names])
    for result in (binary, as_json):
        for out in model.output_names:
            got = result.as_numpy(out)
            assert got.dtype == expected[out].dtype and np.array_equal(got, expected[out]), (name, out)
    if raw is not None:
        tensor = module.InferInput(model.input_names[0], [len(raw)], "BYTES")
        tensor.set_data_from_numpy(np.array(raw, dtype=object))
        first = model.output_names[0]
        result = client.infer(name, [tensor], model_version=version, outputs=[module.InferRequestedOutput(first)])
        assert np.array_equal(result.as_numpy(first), expected[first]), name  # the server's decoding = the runtime's
    top = client.infer(name, _inputs(module, feed, True), model_version=version,
                       outputs=[module.InferRequestedOutput(model.output_names[0], class_count=1)])
    labels = [x.decode().split(":", 2) for x in top.as_numpy(model.output_names[0]).reshape(-1)]
    scores = expected[model.output_names[0]]
    best = scores.reshape(-1, scores.shape[-1]).argmax(axis=1)
    assert [int(i) for _, i, _ in labels] == best.tolist()
    assert [label for _, _, label in labels] == [model.labels[i] for i in best]


def _raw_inputs(task: str, sms_spam: Path, fsdd: Path, cifar10_small: Path) -> tuple[list, list[bytes]]:
    """A few real inputs of the task: (what `EdgeModel.preprocess` takes, the same as bytes)."""
    if task == "text":
        rows = [line.split("\t", 1)[1] for line in sms_spam.read_text(encoding="utf-8").splitlines()[1:5]]
        return rows, [r.encode() for r in rows]
    files = ([fsdd / f"{d}_george_0.wav" for d in (1, 4, 7)] if task == "speech" else
             [sorted((cifar10_small / "test" / c).iterdir())[0] for c in ("airplane", "cat", "ship")])
    return [str(f) for f in files], [f.read_bytes() for f in files]


@pytest.mark.parametrize("task", ["text", "image", "speech"])
def test_official_clients_get_the_runtimes_outputs(task, exported_dir, sms_spam, fsdd, cifar10_small):
    """tritonclient's two HTTP clients against `edgekit serve` on the trained bundles (tflite int8 and
    onnx fp32): server and model metadata, readiness, and every output bit for bit equal to the
    runtime in-process, for tensors sent binary and as JSON, raw inputs as BYTES, and labels."""
    from edgekit import runtime

    raw, raw_bytes = _raw_inputs(task, sms_spam, fsdd, cifar10_small)
    bundles = [exported_dir(task) / f"{task}-tflite-int8", exported_dir(task) / f"{task}-onnx-fp32"]
    started = time.monotonic()
    server = ServerProcess([*map(str, bundles), "--threads", "1"])
    models = [runtime.load(b, threads=1) for b in bundles]
    try:
        for kind in ("gevent", "aio"):
            client = _Client(kind, server.port)
            try:
                assert client.is_server_live() and client.is_server_ready()
                assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
                for bundle, model in zip(bundles, models):
                    feed = model.preprocess(raw)
                    feed = feed if isinstance(feed, dict) else {model.input_names[0]: feed}
                    _check_model(client, bundle.name, model, feed, raw_bytes)
            finally:
                client.close()
    finally:
        for model in models:
            model.close()
        assert server.stop() == 0
    assert not [line for line in server.lines if ": 500:" in line or "Traceback" in line]
    print(f"{task}: official clients checked in {time.monotonic() - started:.1f} s (bundles built before)")


def test_official_clients_on_a_two_input_model_with_versions_and_a_token(pair_versions, tmp_path):
    """Two inputs, two outputs, served as a folder of versions (pair/1 fp32, pair/2 int8) behind a
    token: each version answers what its bundle gives in-process, no version means the highest; the
    v1 routes answer on the same server, and the metrics count both protocols."""
    from edgekit import runtime

    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    started = time.monotonic()
    server = ServerProcess([str(pair_versions), "--threads", "2", "--token-file", str(token_file)])
    rng = np.random.default_rng(5)
    feed = {"features": rng.normal(size=(5, 8)).astype(np.float32), "extra": rng.normal(size=(5, 4)).astype(np.float32)}
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        for kind in ("gevent", "aio"):
            client = _Client(kind, server.port, auth)
            try:
                for version in ("1", "2"):
                    with runtime.load(pair_versions / version, threads=1) as model:
                        _check_model(client, "pair", model, feed, None, version, versions=["1", "2"])
                        expected = model.predict_outputs(feed)
                latest = client.infer("pair", _inputs(client.module, feed, True),
                                      outputs=[client.module.InferRequestedOutput("value")])
                assert latest.get_response()["model_version"] == "2" and latest.as_numpy("cls") is None
                assert np.array_equal(latest.as_numpy("value"), expected["value"])
                with pytest.raises(client.module.InferenceServerException, match="bearer token"):
                    client.infer("pair", _inputs(client.module, feed, True), headers={})
            finally:
                client.close()
        status, _, body = request(server.port, "POST", "/v1/models/pair:predict",
                                  {"inputs": {k: v.tolist() for k, v in feed.items()}})
        rows = json.loads(body)["predictions"]
        assert status == 200 and [r["cls"] for r in rows] == expected["cls"].tolist()
        metrics = request(server.port, "GET", "/metrics")[2].decode()
        counts = {route: sum(int(n) for n in re.findall(rf'route="{route}",code="200"\}} (\d+)', metrics))
                  for route in ("predict", "v2_infer", "v2_model")}
        # per client: 2 versions x (binary, JSON, classification) + the latest version's
        assert counts == {"predict": 1, "v2_infer": 2 * (2 * 3 + 1), "v2_model": 2 * 2}, counts
    finally:
        assert server.stop() == 0
    print(f"two-input model: official clients checked in {time.monotonic() - started:.1f} s")
