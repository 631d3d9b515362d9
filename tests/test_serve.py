"""`edgekit serve`: the HTTP inference server, on loopback only.

Fast tests (no bundles): flags, the host/token rule, token checks, metrics text, upload decoding,
and an in-process server around stand-in models (a failing model is a 500 and the server goes on).
Slow tests (`rt_bundles`, trained): the load-and-abuse test on a server subprocess (8 clients x 200
mixed requests equal to the serial answers, resident memory steady, a few hundred malformed
requests all 4xx, server still healthy), and SIGTERM with a request in flight.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import wave
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edgekit.runtime.backends.base import TensorInfo
from edgekit.runtime.errors import EdgekitError, ModelFileError
from edgekit.runtime.serve.app import App
from edgekit.runtime.serve.auth import check_host, read_token, token_matches
from edgekit.runtime.serve.httpd import EdgekitHTTPServer
from edgekit.runtime.serve.metrics import Metrics
from edgekit.runtime.serve.options import ServeOptions
from edgekit.runtime.serve.pool import ModelPool

TOKEN = "test-token-0123456789abcdef"
ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------ fast tests


@pytest.mark.parametrize("argv_prefix", [["edgekit"], ["runtime"]])
def test_both_clis_take_the_same_serve_flags(argv_prefix):
    from edgekit.cli import build_parser as top_parser
    from edgekit.runtime.cli import build_parser as runtime_parser

    parser = top_parser() if argv_prefix == ["edgekit"] else runtime_parser()
    args = parser.parse_args(["serve", "a", "b", "--host", "0.0.0.0", "--port", "9000", "--threads", "3",
                              "--token-file", "tok"])
    given = (args.bundles, args.host, args.port, args.threads, args.token_file)
    assert given == (["a", "b"], "0.0.0.0", 9000, 3, "tok")
    defaults = parser.parse_args(["serve", "a"])
    assert (defaults.host, defaults.port, defaults.threads, defaults.token_file) == ("127.0.0.1", 8500, None, None)
    for bad in (["--port", "70000"], ["--threads", "0"], ["--timeout", "-1"], ["--tok", "x"]):
        with pytest.raises(SystemExit) as exc:
            parser.parse_args(["serve", "a", *bad])
        assert exc.value.code == 2


def test_only_127_0_0_1_is_served_without_a_token():
    check_host("127.0.0.1", None)
    for host in ("127.0.0.2", "0.0.0.0", "::1", "localhost", "192.168.1.10"):
        with pytest.raises(EdgekitError, match="needs --token-file"):
            check_host(host, None)
        check_host(host, "token.txt")


def test_a_non_loopback_host_without_a_token_refuses_to_start_with_one_line():
    # The check comes before any bundle is read, so no bundle is needed to see it.
    proc = subprocess.run([sys.executable, "-m", "edgekit.runtime", "serve", "no-such-bundle", "--host", "127.0.0.2"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "127.0.0.2 needs --token-file" in lines[0], proc.stderr


def test_token_file_rules(tmp_path):
    good = tmp_path / "token"
    good.write_text(TOKEN + "\n")
    assert read_token(good) == TOKEN
    for text in ("", "short", "has a space in the middle 0123"):
        (tmp_path / "bad").write_text(text)
        with pytest.raises(EdgekitError, match="at least 16"):
            read_token(tmp_path / "bad")
    with pytest.raises(EdgekitError, match="not found"):
        read_token(tmp_path / "missing")
    assert token_matches(f"Bearer {TOKEN}", TOKEN) and token_matches(f"bearer  {TOKEN} ", TOKEN)
    for header in (None, "", TOKEN, f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer", f"Bearer {TOKEN[:-1]}"):
        assert not token_matches(header, TOKEN)
    assert token_matches(None, None)  # no token configured (127.0.0.1)


def test_metrics_text_format():
    m = Metrics(["a", 'we"ird\\name'])
    for model, route, code, seconds in [("a", "predict", 200, 0.0004), ("a", "predict", 200, 0.03),
                                        ("a", "predict", 400, 0.002), ("ghost", "other", 404, None),
                                        ('we"ird\\name', "classify", 200, 20.0)]:
        m.started()
        m.observe(model, route, code, seconds)
    text = m.render()
    assert 'edgekit_requests_total{model="a",route="predict",code="200"} 2' in text
    assert 'edgekit_request_errors_total{model="a",route="predict"} 1' in text
    assert 'edgekit_requests_total{model="",route="other",code="404"} 1' in text  # unknown names: no new labels
    assert 'edgekit_request_duration_seconds_bucket{model="a",le="0.001"} 1' in text
    assert 'edgekit_request_duration_seconds_bucket{model="a",le="0.05"} 3' in text  # cumulative
    assert 'edgekit_request_duration_seconds_bucket{model="a",le="+Inf"} 3' in text
    assert 'edgekit_request_duration_seconds_count{model="a"} 3' in text
    assert 'model="we\\"ird\\\\name",le="10.0"} 0' in text and 'model="we\\"ird\\\\name",le="+Inf"} 1' in text
    assert "edgekit_in_flight_requests 0" in text
    for line in text.splitlines():  # every sample line: name{labels} number
        assert line.startswith("#") or re.fullmatch(r'[a-z_]+(\{.*\})? [0-9.e+-]+', line), line


def _wav_bytes(samples: np.ndarray, rate: int = 8000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())
    return buf.getvalue()


def test_uploads_decode_like_files():
    """The kinds decode uploads with the runtime's own readers, exactly as `predict` reads a file."""
    from types import SimpleNamespace

    from edgekit.runtime.kinds import KINDS

    samples = (np.sin(np.arange(800) / 7) * 12000).astype(np.int16)
    speech = SimpleNamespace(bundle=SimpleNamespace(preprocessing={"sample_rate": 8000}))
    (wav,) = KINDS["speech"].decode_upload(speech, "audio/wav", {}, _wav_bytes(samples))
    np.testing.assert_array_equal(wav, samples / 32768.0)
    with pytest.raises(EdgekitError) as exc:
        KINDS["speech"].decode_upload(speech, "audio/wav", {}, b"RIFF\x00\x00junk")
    assert "/tmp" not in str(exc.value) and "the upload" in str(exc.value)
    pil = pytest.importorskip("PIL.Image")
    image = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    buf = io.BytesIO()
    pil.fromarray(image).save(buf, format="PNG")
    (decoded,) = KINDS["image"].decode_upload(None, "image/png", {}, buf.getvalue())
    np.testing.assert_array_equal(decoded, image)
    with pytest.raises(EdgekitError, match="cannot decode the image") as bad:
        KINDS["image"].decode_upload(None, "image/png", {}, b"\x89PNG not really")
    assert "BytesIO" not in str(bad.value)
    with pytest.raises(EdgekitError) as refused:
        KINDS["image"].decode_upload(None, "audio/wav", {}, b"x")
    assert refused.value.status == 415 and "a photo" in str(refused.value)


# A stand-in for EdgeModel, to test the HTTP side without a backend: y = x, except that a first
# value of 13 raises an unexpected error and 666 a model error.
class _StandIn:
    backend = "standin"
    labels = ["a", "b"]
    input_names = ["x"]

    def __init__(self) -> None:
        info = TensorInfo("x", (None, 2), np.dtype(np.float32))
        self.runner = SimpleNamespace(inputs=[info], outputs=[info])
        self.bundle = SimpleNamespace(manifest={}, task="tensor", format="tflite", variant="fp32", sha256="0",
                                      preprocessing=None)

    def predict_outputs(self, x):
        x = np.asarray(x, dtype=np.float32)
        if x.flat[0] == 13:
            raise RuntimeError("boom\nsecond line of a traceback-like message")
        if x.flat[0] == 666:
            raise ModelFileError("the backend crashed")
        return {"y": x}

    def close(self) -> None:
        pass


@pytest.fixture
def standin_server():
    options = ServeOptions(port=0, timeout=2.0)
    app = App({"standin": {"1": ModelPool("standin", "standin", 2, _StandIn)}}, options)
    server = EdgekitHTTPServer(("127.0.0.1", 0), app)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.drain()
    server.server_close()


def test_a_failing_model_is_a_500_with_one_line_and_the_server_goes_on(standin_server):
    port = standin_server
    status, _, body = request(port, "POST", "/v1/models/standin:predict", {"instances": [[13, 0]]}, token=None)
    error = json.loads(body)["error"]
    assert status == 500 and "RuntimeError: boom" in error and "\n" not in error and "Traceback" not in error
    status, _, body = request(port, "POST", "/v1/models/standin:predict", {"instances": [[666, 0]]}, token=None)
    assert status == 500 and "the backend crashed" in json.loads(body)["error"]
    status, _, body = request(port, "POST", "/v1/models/standin:predict", {"instances": [[1, 2], [3, 4]]}, token=None)
    assert status == 200 and json.loads(body) == {"predictions": [[1.0, 2.0], [3.0, 4.0]]}
    assert request(port, "GET", "/healthz", token=None)[0] == 200
    metrics = request(port, "GET", "/metrics", token=None)[2].decode()
    assert 'edgekit_request_errors_total{model="standin",route="predict"} 2' in metrics


def test_http_framing_errors_are_json_4xx(standin_server):
    port = standin_server
    for raw, code in [(b"HELLO\r\n\r\n", 400), (b"GET /healthz HTTP/2.0\r\n\r\n", 400), (b"GET /healthz\r\n", 400),
                      (b"BREW /healthz HTTP/1.1\r\n\r\n", 405),
                      (b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n", 414),
                      (b"GET /healthz HTTP/1.1\r\nX: " + b"a" * 70000 + b"\r\n\r\n", 431),
                      (b"GET /healthz HTTP/1.1\r\n" + b"X: y\r\n" * 150 + b"\r\n", 431)]:
        status, body = raw_request(port, raw)
        assert status == code, (raw[:40], status, body)
        assert "error" in json.loads(body.split(b"\r\n\r\n", 1)[1])


# ----------------------------------------------------------------------------------- HTTP helpers


def request(port, method, path, body=None, headers=None, token=TOKEN, conn=None, timeout=30):
    """One request -> (status, headers, body bytes). `body`: bytes, or an object sent as JSON."""
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    hdrs = dict(headers or {})
    if not isinstance(body, (bytes, type(None))):
        body = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    if token is not None:
        hdrs.setdefault("Authorization", f"Bearer {token}")
    try:
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        if own:
            conn.close()


def raw_request(port, data: bytes, *, close_write=False, timeout=30) -> tuple[int, bytes]:
    """Send bytes as they are, read the answer until the server closes -> (status, raw answer)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
            if close_write:
                s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may answer and close before reading everything
        return _read_answer(s)


def _read_answer(s) -> tuple[int, bytes]:
    chunks = []
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            answer = b"".join(chunks)
            head, sep, rest = answer.partition(b"\r\n\r\n")
            m = re.search(rb"Content-Length: (\d+)", head)
            if sep and m and len(rest) >= int(m.group(1)):
                break
    except ConnectionResetError:
        pass
    answer = b"".join(chunks)
    m = re.match(rb"HTTP/1\.[01] (\d{3}) ", answer)
    return (int(m.group(1)) if m else 0), answer


class ServerProcess:
    """`python -m edgekit.runtime serve ...` as a child process; stderr is collected."""

    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "edgekit.runtime", "serve", *args, "--port", "0"],
                                     stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=ROOT,
                                     env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
        self.lines: list[str] = []
        self.port = None
        ready = threading.Event()

        def pump():
            for line in self.proc.stderr:
                self.lines.append(line.rstrip("\n"))
                m = re.search(r"on http://127\.0\.0\.1:(\d+) ", line)
                if m:
                    self.port = int(m.group(1))
                    ready.set()
            ready.set()

        threading.Thread(target=pump, daemon=True).start()
        ready.wait(120)
        if self.port is None:
            self.stop()
            raise AssertionError("server did not start:\n" + "\n".join(self.lines[-20:]))

    @property
    def rss_kb(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)


# -------------------------------------------------------------------------------- bundles to serve


def _with_preprocessing(src: Path, dst: Path, task: str, preprocessing: dict, vocab: list[str] | None = None) -> Path:
    """A copy of a test bundle whose manifest adds raw-input preprocessing (the model file, and so
    its sha256, is unchanged)."""
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest.update(task=task, preprocessing=preprocessing)
    (dst / "manifest.json").write_text(json.dumps(manifest))
    if vocab is not None:
        (dst / "assets").mkdir()
        (dst / "assets" / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return dst


VOCAB = ["", "[UNK]"] + [f"w{i}" for i in range(2, 20)]


@pytest.fixture(scope="module")
def served_bundles(rt_bundles, tmp_path_factory) -> list[Path]:
    tmp = tmp_path_factory.mktemp("served")
    photo = _with_preprocessing(rt_bundles / "image-tflite-fp32", tmp / "photo", "image",
                                {"type": "image", "height": 16, "width": 16, "mean": [127.5] * 3, "std": [127.5] * 3})
    words = _with_preprocessing(rt_bundles / "tokens-onnx-fp32", tmp / "words", "text",
                                {"type": "text", "vocab_file": "assets/vocab.txt", "max_len": 12, "padding": "post"},
                                vocab=VOCAB)
    names = ["dense-tflite-fp32", "dense-tflite-int8", "dense-onnx-fp32", "image-tflite-int8", "image-onnx-fp32",
             "tokens-tflite-fp32"]
    return [rt_bundles / n for n in names] + [photo, words]


def _photo(seed: int, fmt: str) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    image = rng.integers(0, 90, size=(20 + seed % 7, 24, 3), dtype=np.uint8)
    image[..., seed % 3] += 150  # the brightest channel is the class
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt, quality=90)
    return buf.getvalue()


def _valid_requests() -> list[tuple[str, bytes, str]]:
    """(path, body, content type): a mix of routes, formats and bundles."""
    rng = np.random.default_rng(1)
    out = []
    for i in range(6):
        dense = (rng.standard_normal((1 + i % 3, 8)) * 0.8).round(4).tolist()
        image = (rng.uniform(-1, 1, (1 + i % 2, 16, 16, 3))).round(3).tolist()
        tokens = rng.integers(0, 20, (1 + i % 2, 12)).tolist()
        js = "application/json"
        photo = ("image/png", "PNG") if i % 2 else ("image/jpeg", "JPEG")
        text = " ".join(f"w{t}" for t in tokens[0]).encode()
        out += [("/v1/models/dense-tflite-fp32:predict", json.dumps({"instances": dense}).encode(), js),
                ("/v1/models/dense-tflite-int8:predict", json.dumps({"inputs": dense}).encode(), js),
                ("/v1/models/dense-onnx-fp32:classify", json.dumps({"instances": dense}).encode(), js),
                ("/v1/models/image-tflite-int8:predict", json.dumps({"instances": image}).encode(), js),
                ("/v1/models/image-onnx-fp32:predict", json.dumps({"inputs": image}).encode(), js),
                ("/v1/models/tokens-tflite-fp32:predict", json.dumps({"instances": tokens}).encode(), js),
                ("/v1/models/photo:classify", _photo(i, photo[1]), photo[0]),
                ("/v1/models/words:classify", text, "text/plain; charset=utf-8")]
    return out


def _abuse_cases(port: int) -> list[tuple[str, object]]:
    """(name, callable -> status) for malformed requests; each must be answered with a 4xx."""
    js = {"Content-Type": "application/json"}
    dense = "/v1/models/dense-tflite-fp32:predict"
    tokens = "/v1/models/tokens-tflite-fp32:predict"
    auth = f"Authorization: Bearer {TOKEN}\r\n".encode()

    def post(path, body, headers=js, token=TOKEN):
        return lambda: request(port, "POST", path, body, headers, token=token)[0]

    def raw(data, **kw):
        return lambda: raw_request(port, data, **kw)[0]

    def head(path, length, extra=b""):
        return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {length}\r\n").encode() + auth + extra + b"\r\n"

    cases = [
        ("bad json", post(dense, b"{")), ("bad json 2", post(dense, b'{"instances": [1, 2,}')),
        ("not json", post(dense, b"hello")), ("not utf-8", post(dense, b'{"instances": "\xff\xfe"}')),
        ("json array", post(dense, b"[]")), ("json number", post(dense, b"42")), ("json null", post(dense, b"null")),
        ("no key", post(dense, {})), ("both keys", post(dense, {"instances": [[0] * 8], "inputs": [[0] * 8]})),
        ("empty", post(dense, {"instances": []})), ("scalar", post(dense, {"instances": 3})),
        ("rank 1", post(dense, {"instances": [1, 2, 3, 4, 5, 6, 7, 8]})),
        ("wrong width", post(dense, {"instances": [[1, 2, 3]]})),
        ("rank 3", post(dense, {"instances": [[[0] * 8]]})),
        ("ragged", post(dense, {"instances": [[0] * 8, [0] * 7]})),
        ("strings", post(dense, {"instances": [["a"] * 8]})), ("nulls", post(dense, {"instances": [[None] * 8]})),
        ("objects", post(dense, {"instances": [[{"a": 1}] * 8]})),
        ("NaN", post(dense, b'{"instances": [[NaN, 0, 0, 0, 0, 0, 0, 0]]}')),
        ("Infinity", post(dense, b'{"instances": [[1e999, 0, 0, 0, 0, 0, 0, 0]]}')),
        ("deep nesting", post(dense, b'{"instances": ' + b"[" * 50000 + b"]" * 50000 + b"}")),
        ("too many instances", post(dense, {"instances": [[0] * 8] * 65})),
        ("rank 9", post(dense, {"instances": [[[[[[[[[0]]]]]]]]]})),
        ("float token ids", post(tokens, {"instances": [[1.5] * 12]})),
        ("token ids out of range", post(tokens, {"instances": [[10**12] * 12]})),
        ("huge ints", post(tokens, {"instances": [[10**40] * 12]})),
        ("image shape", post("/v1/models/image-tflite-int8:predict", {"instances": [[[0, 0, 0]]]})),
        ("predict text/plain", post(dense, b'{"instances": [[0,0,0,0,0,0,0,0]]}', {"Content-Type": "text/plain"})),
        ("form encoded", post(dense, b"a=b", {"Content-Type": "application/x-www-form-urlencoded"})),
        ("photo as text", post("/v1/models/photo:classify", b"a cat", {"Content-Type": "text/plain"})),
        ("text as photo", post("/v1/models/words:classify", _photo(1, "PNG"), {"Content-Type": "image/png"})),
        ("tensor model photo", post("/v1/models/dense-onnx-fp32:classify", _photo(1, "PNG"),
                                    {"Content-Type": "image/png"})),
        ("wav to photo model", post("/v1/models/photo:classify", b"RIFF....WAVE", {"Content-Type": "audio/wav"})),
        ("corrupt photo", post("/v1/models/photo:classify", b"\x89PNG\r\n\x1a\nbroken", {"Content-Type": "image/png"})),
        ("truncated jpeg", post("/v1/models/photo:classify", _photo(2, "JPEG")[:60], {"Content-Type": "image/jpeg"})),
        ("empty photo", post("/v1/models/photo:classify", b"", {"Content-Type": "image/png"})),
        ("blank text", post("/v1/models/words:classify", b"   ", {"Content-Type": "text/plain"})),
        ("bad charset", post("/v1/models/words:classify", b"w2", {"Content-Type": "text/plain; charset=nope"})),
        ("not utf-8 text", post("/v1/models/words:classify", b"\xff\xfe\xfa", {"Content-Type": "text/plain"})),
        ("json texts not list", post("/v1/models/words:classify", {"instances": "w2 w3"})),
        ("bad top_k", post("/v1/models/dense-onnx-fp32:classify?top_k=zero", {"instances": [[0] * 8]})),
        ("no token", post(dense, {"instances": [[0] * 8]}, token=None)),
        ("wrong token", post(dense, {"instances": [[0] * 8]}, token=TOKEN[::-1])),
        ("basic auth", post(dense, {"instances": [[0] * 8]}, {**js, "Authorization": f"Basic {TOKEN}"}, token=None)),
        ("metrics without token", lambda: request(port, "GET", "/metrics", token=None)[0]),
        ("unknown model", post("/v1/models/nope:predict", {"instances": [[0] * 8]})),
        ("unknown verb", post("/v1/models/dense-tflite-fp32:regress", {"instances": [[0] * 8]})),
        ("unknown route", lambda: request(port, "GET", "/v2/anything")[0]),
        ("GET predict", lambda: request(port, "GET", dense)[0]),
        ("DELETE", lambda: request(port, "DELETE", "/v1/models/dense-tflite-fp32")[0]),
        ("garbage line", raw(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n")),
        ("HTTP/0.9", raw(b"GET /healthz\r\n")), ("HTTP/2.0", raw(b"GET /healthz HTTP/2.0\r\n\r\n")),
        ("long header", raw(b"GET /healthz HTTP/1.1\r\nX: " + b"a" * 70000 + b"\r\n\r\n")),
        ("no length", raw(f"POST {dense} HTTP/1.1\r\nHost: x\r\n".encode() + auth + b"\r\n{}")),
        ("chunked", raw(f"POST {dense} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n".encode() + auth
                        + b"\r\n2\r\n{}\r\n0\r\n\r\n")),
        ("bad length", raw(head(dense, "abc"))), ("negative length", raw(head(dense, -5))),
        ("huge body", raw(head(dense, 50 << 20) + b"[" * 1000)),
        ("body over limit", post(dense, b" " * (1 << 20) + b"{}")),
        ("truncated upload", raw(head(dense, 1000) + b'{"instances": [[0, 0', close_write=True)),
        ("truncated photo", raw(head("/v1/models/photo:classify", 5000).replace(b"application/json", b"image/png")
                                + _photo(3, "PNG")[:100], close_write=True)),
    ]
    return cases


def _slow_client(port, data: bytes, drip: float | None = None) -> tuple[int, float]:
    """Send `data` (byte by byte every `drip` seconds, or at once) and never finish the request;
    stop sending once the server answers."""
    import select

    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        t = time.monotonic()
        try:
            if drip is None:
                s.sendall(data)
            else:
                for b in data:
                    s.sendall(bytes([b]))
                    if select.select([s], [], [], drip)[0]:
                        break
        except OSError:
            pass
        status, _ = _read_answer(s)
        return status, time.monotonic() - t


# ------------------------------------------------------------------------------------- slow tests


def test_load_and_abuse(served_bundles, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    server = ServerProcess([*map(str, served_bundles), "--threads", "2", "--token-file", str(token_file),
                            "--timeout", "2", "--max-body-bytes", "1000000"])
    try:
        port = server.port
        valid = _valid_requests()
        serial = []
        for path, body, ctype in valid:
            status, _, answer = request(port, "POST", path, body, {"Content-Type": ctype})
            assert status == 200, (path, answer)
            serial.append(json.loads(answer))
        _check_against_in_process(served_bundles, valid, serial)

        def hammer(client: int, count: int, results: list) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            for j in range(count):
                k = (client * 7 + j * 5) % len(valid)
                path, body, ctype = valid[k]
                try:
                    status, _, answer = request(port, "POST", path, body, {"Content-Type": ctype}, conn=conn)
                    results.append((k, status, json.loads(answer)))
                except Exception as exc:  # a dropped connection is an error too
                    results.append((k, 0, repr(exc)))
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn.close()

        def load(clients: int, count: int) -> list:
            results: list = []
            threads = [threading.Thread(target=hammer, args=(c, count, results)) for c in range(clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return results

        load(8, 30)  # warm-up: every connection thread and interpreter has run
        rss_warm = server.rss_kb
        results = load(8, 200)
        rss_loaded = server.rss_kb
        assert len(results) == 1600
        errors = [(valid[k][0], status, answer) for k, status, answer in results if status != 200]
        assert not errors, errors[:5]
        mismatches = [valid[k][0] for k, _, answer in results if answer != serial[k]]
        assert not mismatches, f"{len(mismatches)} concurrent answers differ from the serial ones: {mismatches[:5]}"
        assert rss_loaded < 1.10 * rss_warm, f"resident memory grew from {rss_warm} kB to {rss_loaded} kB under load"

        # A few hundred malformed requests, all 4xx.
        cases = _abuse_cases(port)
        statuses = {}
        for _ in range(5):
            for name, send in cases:
                statuses.setdefault(name, []).append(send())
        bad = {name: s for name, s in statuses.items() if not all(400 <= code < 500 for code in s)}
        assert not bad, bad
        assert sum(len(s) for s in statuses.values()) >= 300
        expected = {"no token": 401, "unknown model": 404, "huge body": 413, "too many instances": 413,
                    "predict text/plain": 415, "no length": 411, "truncated upload": 400, "GET predict": 405}
        assert {name: statuses[name][0] for name in expected} == expected

        # Slow clients (stalled body, dripped headers) are cut off with a 408 and block nobody.
        slow = []
        stalled = [(head_bytes, None) for head_bytes in [
            (f"POST /v1/models/dense-tflite-fp32:predict HTTP/1.1\r\nContent-Length: 100\r\n"
             f"Authorization: Bearer {TOKEN}\r\n\r\n" + '{"instances":').encode()] * 6]
        dripped = [(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"y" * 40, 0.2)] * 4
        slow_threads = [threading.Thread(target=lambda d=d, r=r: slow.append(_slow_client(port, d, r)))
                        for d, r in stalled + dripped]
        for t in slow_threads:
            t.start()
        time.sleep(0.3)
        during = [request(port, "POST", *valid[k][:2], {"Content-Type": valid[k][2]}) for k in range(len(valid))]
        answered_while_slow_clients_waited = len(slow) < len(slow_threads)
        for t in slow_threads:
            t.join(30)
        assert [json.loads(body) for _, _, body in during] == serial
        assert answered_while_slow_clients_waited
        assert sorted(status for status, _ in slow) == [408] * len(slow_threads), slow

        # Still healthy, same answers, memory bounded, and nothing leaked a traceback.
        assert request(port, "GET", "/healthz", token=None)[0] == 200
        assert json.loads(request(port, "POST", *valid[0][:2], {"Content-Type": valid[0][2]})[2]) == serial[0]
        metrics = request(port, "GET", "/metrics")[2].decode()
        ok = sum(int(n) for n in re.findall(r'edgekit_requests_total\{model="[^"]+",route="(?:predict|classify)",'
                                            r'code="200"\} (\d+)', metrics))
        assert ok >= len(valid) * 2 + 1600 + 240
        assert re.search(r'edgekit_request_errors_total\{model="dense-tflite-fp32",route="predict"\} \d+', metrics)
        assert 'edgekit_request_duration_seconds_bucket{model="photo",le="+Inf"}' in metrics
        assert server.rss_kb < 1.25 * rss_warm
        assert server.proc.poll() is None
    finally:
        rc = server.stop()
    assert rc == 0
    log = "\n".join(server.lines)
    assert "Traceback" not in log and "internal error" not in log, log[-3000:]


def _check_against_in_process(bundles: list[Path], valid: list, serial: list) -> None:
    """The server's answers are exactly what the runtime gives in-process (one thread each)."""
    from edgekit import runtime

    by_name = {b.name: b for b in bundles}
    checked = set()
    for (path, body, ctype), answer in zip(valid, serial):
        name, verb = path.rsplit("/", 1)[-1].split(":")
        if name in checked:
            continue
        checked.add(name)
        with runtime.load(by_name[name], threads=1) as model:
            if verb == "predict":
                doc = json.loads(body)
                x = np.asarray(doc.get("instances", doc.get("inputs")))
                assert answer == {"predictions": model.predict_tensors(x).tolist()}, name
            elif ctype.startswith("image/"):
                from PIL import Image

                image = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))
                assert answer == {"predictions": [p.to_dict() for p in model.predict([image])]}, name
            elif ctype.startswith("text/"):
                assert answer == {"predictions": [p.to_dict() for p in model.predict([body.decode()])]}, name
            else:
                x = np.asarray(json.loads(body)["instances"])
                assert answer == {"predictions": [p.to_dict() for p in model.predict(x)]}, name
    assert len(checked) == 8


def test_sigterm_finishes_the_request_in_flight(served_bundles):
    server = ServerProcess([str(served_bundles[0]), "--threads", "2", "--timeout", "5"])
    try:
        port = server.port
        body = json.dumps({"instances": [[0.5] * 8]}).encode()
        path = "/v1/models/dense-tflite-fp32:predict"
        expected = request(port, "POST", path, body, {"Content-Type": "application/json"}, token=None)[2]
        idle = http.client.HTTPConnection("127.0.0.1", port, timeout=10)  # keep-alive, then idle
        assert request(port, "GET", "/healthz", token=None, conn=idle)[0] == 200
        in_flight = socket.create_connection(("127.0.0.1", port), timeout=10)
        in_flight.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:10])
        time.sleep(0.3)
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert server.proc.poll() is None  # waiting for the request in flight
        idle.sock.settimeout(5)
        assert idle.sock.recv(1) == b""  # the idle keep-alive connection was closed
        in_flight.sendall(body[10:])
        status, answer = _read_answer(in_flight)
        in_flight.close()
        assert status == 200 and answer.endswith(expected) and b"Connection: close" in answer
        assert server.proc.wait(15) == 0
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5)
    finally:
        server.stop()
    assert any("finishing requests in flight" in line for line in server.lines)
    assert server.lines[-1].endswith("stopped")


def test_bench_serve_reports_the_server_next_to_the_runtime(rt_bundles):
    from edgekit.bench import format_serve, measure_serve

    result = measure_serve(rt_bundles / "image-tflite-int8", clients=2, runs=20, warmup=2)
    for key in ("in_process_1", "in_process_N", "server", "server_v2", "server_v2_json"):
        assert result[key]["requests"] == 40 and result[key]["requests_per_s"] > 0, key
        assert 0 < result[key]["latency_ms"]["p50"] <= result[key]["latency_ms"]["p99"]
    assert result["clients"] == 2 and result["server"]["clients"] == 2 and result["server_v2_over_server"] > 0
    text = format_serve(result)
    assert "server over loopback, 2 clients" in text and "in-process, 2 threads" in text
    assert "v2 infer, binary tensors" in text and "v2 binary / v1 = " in text
