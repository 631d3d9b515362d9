"""The HTTP side of `serve`: routes, bearer-token auth, limits, and a clean stop.

Threads: one per connection (http.server's ThreadingHTTPServer), at most MAX_CONNECTIONS at once
(more are answered 503 at once). Each model runs in a pool of interpreters (pool.py), so requests
for one bundle run in parallel. A client that stalls or drips its request is cut off after
`timeout` seconds (socket timeout per read, plus a reaper thread that ends any request taking longer
than `timeout` in total to arrive), so it holds one connection thread and nothing else.

Errors: a bad request is a 4xx with {"error": "one line"}; a model that fails on a valid request is
a 500 with one line (never a traceback), and the server goes on serving. SIGTERM (or SIGINT) stops
accepting, closes idle keep-alive connections, lets requests in flight finish, then exits 0.
"""

from __future__ import annotations

import hmac
import json
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from edgekit.runtime.errors import EdgekitError, InvalidInputError, first_line
from edgekit.runtime.serve import DEFAULT_HOST, DEFAULT_MAX_BATCH, DEFAULT_MAX_BODY_BYTES, DEFAULT_TIMEOUT_S, reload
from edgekit.runtime.serve.inputs import HTTPError, classify_inputs, media_type, parse_json, predict_feed
from edgekit.runtime.serve.metrics import CONTENT_TYPE as METRICS_TYPE
from edgekit.runtime.serve.metrics import Metrics
from edgekit.runtime.serve.pool import ModelPool, PoolBusyError, default_workers

JSON_TYPE = "application/json"
MAX_CONNECTIONS = 64
MIN_TOKEN_CHARS = 16
PROG = "edgekit serve"


@dataclass(frozen=True)
class ServeOptions:
    host: str = DEFAULT_HOST
    port: int = 8500
    threads: int | None = None            # interpreters per bundle; None: default_workers()
    token_file: str | None = None
    backend: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_batch: int = DEFAULT_MAX_BATCH
    timeout: float = DEFAULT_TIMEOUT_S


def _log(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------- start-up checks


def check_host(host: str, token_file: str | None) -> None:
    """Only 127.0.0.1 may be served without a token: any other address (even 127.0.0.2, which
    other users' containers or port forwards may reach) needs --token-file."""
    if host != DEFAULT_HOST and not token_file:
        raise EdgekitError(f"serving on {host} needs --token-file FILE (clients then send 'Authorization: "
                           f"Bearer TOKEN'); without a token the server listens only on {DEFAULT_HOST}")


def read_token(path: str | Path) -> str:
    path = Path(path)
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise EdgekitError(f"token file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EdgekitError(f"cannot read token file {path}: {first_line(exc)}") from None
    if len(token) < MIN_TOKEN_CHARS or not token.isascii() or not token.isprintable() or " " in token:
        raise EdgekitError(f"token file {path} must hold one token of at least {MIN_TOKEN_CHARS} printable "
                           "ASCII characters without spaces (e.g. python3 -c 'import secrets; "
                           "print(secrets.token_hex(32))' > FILE)")
    return token


def bundle_names(bundles: list[str]) -> dict[str, Path]:
    """NAME -> bundle path; NAME is the folder's name (a bare model file: its stem)."""
    names: dict[str, Path] = {}
    for item in bundles:
        path = Path(item).resolve()
        name = reload.served_name(item)  # a fleet's NAME/current link: NAME
        if name in names:
            raise EdgekitError(f"two bundles would both be served as {name!r}: {names[name]} and {path}; "
                               "rename one folder")
        names[name] = path
    return names


def token_matches(header: str | None, token: str | None) -> bool:
    """`Authorization: Bearer TOKEN` (scheme case-insensitive), compared in constant time."""
    if token is None:
        return True
    scheme, _, given = (header or "").strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


# ------------------------------------------------------------------------------------------ the app


def _error(message: str) -> bytes:
    return (json.dumps({"error": " ".join(str(message).split())}) + "\n").encode()


def _json(doc) -> bytes:
    return (json.dumps(doc, separators=(",", ":")) + "\n").encode()


class App:
    """Routes and answers, independent of sockets: `answer(...) -> (status, content type, body)`."""

    def __init__(self, pools: dict[str, ModelPool], options: ServeOptions, token: str | None = None) -> None:
        self.pools = pools
        self.options = options
        self.token = token
        self.metrics = Metrics(list(pools))
        self.draining = False

    def route(self, method: str, path: str) -> tuple[str, str | None]:
        """(route, model name) for a path, or HTTPError 404/405."""
        if path in ("/healthz", "/metrics", "/v1/models"):
            route, name, verb_method = path.rsplit("/", 1)[-1], None, "GET"
        elif path.startswith("/v1/models/"):
            rest = path[len("/v1/models/"):]
            name, verb = rest, "status"
            if rest.endswith("/metadata"):
                name, verb = rest[:-len("/metadata")], "metadata"
            elif ":" in rest:
                head, _, tail = rest.rpartition(":")
                if tail in ("predict", "classify"):
                    name, verb = head, tail
            name = unquote(name)
            if name not in self.pools:
                raise HTTPError(404, f"no model named {name!r}; this server has {sorted(self.pools)}")
            route, verb_method = verb, ("POST" if verb in ("predict", "classify") else "GET")
        else:
            raise HTTPError(404, f"no route {path!r}; see GET /v1/models")
        if method != verb_method:
            raise HTTPError(405, f"{path} takes {verb_method}, not {method}")
        return route, name

    def answer(self, route: str, name: str | None, headers, body: bytes, query: dict) -> tuple[int, str, bytes]:
        if route == "healthz":
            state = "draining" if self.draining else "ok"
            return (503 if self.draining else 200), JSON_TYPE, _json(
                {"status": state, "models": {n: "AVAILABLE" for n in self.pools}})
        if route == "metrics":
            return 200, METRICS_TYPE, self.metrics.render().encode()
        if route == "models":
            return 200, JSON_TYPE, _json({"models": [{"name": n, "state": "AVAILABLE"} for n in self.pools]})
        pool = self.pools[name]
        if route == "status":
            return 200, JSON_TYPE, _json({"name": name, "model_version_status": [
                {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}],
                "metadata": pool.metadata})
        if route == "metadata":
            return 200, JSON_TYPE, _json({"model_spec": {"name": name, "version": "1"}, "metadata": pool.metadata})
        max_batch = self.options.max_batch
        if route == "predict":
            mime, _ = media_type(headers.get("Content-Type"))
            if mime not in ("", JSON_TYPE):
                raise HTTPError(415, f"Content-Type {mime!r}: :predict takes JSON (application/json)")
            doc = parse_json(body)
            with pool.lend(self.options.timeout) as model:
                feed = predict_feed(model, doc, max_batch)
                outputs = model.predict_outputs(feed)
            return 200, JSON_TYPE, _json({"predictions": _rows(outputs)})
        top_k = _top_k(query)
        with pool.lend(self.options.timeout) as model:
            inputs = classify_inputs(model, headers.get("Content-Type"), body, max_batch)
            predictions = model.predict(inputs)
        if isinstance(predictions, dict):  # a tensor bundle without labels: its outputs by name
            return 200, JSON_TYPE, _json({"predictions": _rows(predictions)})
        return 200, JSON_TYPE, _json({"predictions": [p.to_dict(top_k) for p in predictions]})


def _rows(outputs: dict) -> list:
    """TensorFlow Serving's row format: one value per instance for a one-output model, else one
    object {output name: value} per instance."""
    if len(outputs) == 1:
        return next(iter(outputs.values())).tolist()
    names = list(outputs)
    return [{n: outputs[n][i].tolist() for n in names} for i in range(len(outputs[names[0]]))]


def _top_k(query: dict) -> int | None:
    values = query.get("top_k")
    if not values:
        return None
    try:
        k = int(values[-1])
    except ValueError:
        k = 0
    if k < 1:
        raise HTTPError(400, f"top_k must be a positive integer, got {values[-1]!r}")
    return k


# ------------------------------------------------------------------------------ slow clients, drain


class ConnectionTracker:
    """Which connections wait for a request, are receiving one (with a deadline), or are being
    answered; the reaper cuts off those past their deadline, and a drain closes the idle ones."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._lock = threading.Lock()
        self._state: dict = {}  # handler -> (state, deadline)
        self._stop = threading.Event()

    def set(self, handler, state: str) -> None:
        # waiting: until the request line arrives (an idle keep-alive connection, or a client that
        # drips its request line); reading: headers and body, a fresh `timeout`; busy: no deadline.
        deadline = None if state == "busy" else time.monotonic() + self.timeout
        with self._lock:
            self._state[handler] = (state, deadline)

    def remove(self, handler) -> None:
        with self._lock:
            self._state.pop(handler, None)

    def _cut(self, handler) -> None:
        try:
            handler.connection.shutdown(socket.SHUT_RD)  # its reads end; it can still answer 408
        except OSError:
            pass

    def reap_once(self) -> None:
        now = time.monotonic()
        with self._lock:
            late = [h for h, (_, deadline) in self._state.items() if deadline is not None and deadline < now]
        for handler in late:
            handler.reaped = True
            self._cut(handler)

    def close_idle(self) -> None:
        with self._lock:
            idle = [h for h, (state, _) in self._state.items() if state == "waiting"]
        for handler in idle:
            self._cut(handler)

    def run_reaper(self) -> None:
        interval = min(0.5, self.timeout / 4)
        while not self._stop.wait(interval):
            self.reap_once()

    def stop(self) -> None:
        self._stop.set()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "edgekit-serve"
    # Headers and body go out in two writes: with Nagle's algorithm on, the second waits for the
    # client's delayed ACK (40 ms on Linux) on every keep-alive request.
    disable_nagle_algorithm = True

    def version_string(self) -> str:  # no Python version in the Server header
        return self.server_version

    def setup(self) -> None:
        self.timeout = self.server.app.options.timeout  # socket timeout for every read and write
        self.reaped = False
        self.linger = False  # close with a lingering read (an error answer left input unread)
        super().setup()

    def finish(self) -> None:
        self.server.tracker.remove(self)
        if self.linger:
            self._linger()
        try:
            super().finish()
        except OSError:
            pass

    def _linger(self) -> None:
        """Closing a socket with unread input makes the kernel send a reset, which can destroy the
        error answer before the client reads it: stop writing, then read and drop what the client
        still sends (briefly, boundedly) before closing."""
        try:
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(0.5)
            deadline, total = time.monotonic() + 2.0, 0
            while time.monotonic() < deadline and total < (64 << 20):
                chunk = self.connection.recv(1 << 16)
                if not chunk:
                    break
                total += len(chunk)
        except OSError:
            pass

    def log_message(self, format, *args) -> None:  # no access log: a Pi's journal is small
        pass

    def handle_one_request(self) -> None:
        """http.server's version, plus the tracker's states and a drain check."""
        tracker = self.server.tracker
        tracker.set(self, "waiting")
        if self.server.app.draining:
            self.close_connection = True
            return
        try:
            self.raw_requestline = self.rfile.readline(65537)
            if not self.raw_requestline:
                self.close_connection = True
                return
            tracker.set(self, "reading")
            if len(self.raw_requestline) > 65536:
                self.requestline, self.request_version, self.command = "", "", ""
                self.send_error(414, "request line too long")
                return
            if len(self.raw_requestline.split()) == 2:  # http.server would wait for HTTP/0.9 headers
                self.requestline, self.request_version, self.command = "", "", ""
                self.send_error(400, "HTTP/0.9 requests are not supported")
                return
            if not self.parse_request():
                return
            if self.reaped:
                self.send_error(408, f"request not received within {self.timeout:g} s")
                return
            if self.command not in ("GET", "POST"):
                self.send_error(405, f"method {self.command} is not supported; use GET or POST")
                return
            self.dispatch()
            self.wfile.flush()
        except (TimeoutError, ConnectionError):
            self.close_connection = True

    def send_error(self, code, message=None, explain=None) -> None:
        """http.server's own rejections (bad request line, headers, version) as one-line JSON 4xx."""
        code = 408 if self.reaped else {501: 405, 505: 400}.get(int(code), int(code))
        if self.reaped:
            message = f"request not received within {self.timeout:g} s"
        self.close_connection = self.linger = True
        if self.request_version == "HTTP/0.9" or not self.request_version:
            self.request_version = "HTTP/1.1"  # always send a status line
        metrics = self.server.app.metrics
        metrics.started()
        try:
            self.respond(code, JSON_TYPE, _error(message or HTTPStatus(code).phrase))
        except OSError:
            pass
        finally:
            metrics.observe(None, "other", code, None)

    def respond(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if status == 401:
            self.send_header("WWW-Authenticate", 'Bearer realm="edgekit"')
        if self.close_connection or self.server.app.draining:
            self.close_connection = True
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise HTTPError(411, "send the body with a Content-Length (chunked transfer is not supported)")
        text = self.headers.get("Content-Length")
        if text is None:
            self.close_connection = True
            raise HTTPError(411, "Content-Length is required")
        if not text.strip().isdigit():
            self.close_connection = True
            raise HTTPError(400, f"bad Content-Length {text!r}")
        length = int(text)
        limit = self.server.app.options.max_body_bytes
        if length > limit:
            self.close_connection = True  # the body stays unread
            raise HTTPError(413, f"body of {length} bytes is larger than this server's limit of {limit} bytes")
        try:
            data = self.rfile.read(length) if length else b""
        except TimeoutError:
            data = None
        if data is None or self.reaped:
            self.close_connection = True
            raise HTTPError(408, f"body not received within {self.timeout:g} s")
        if len(data) < length:
            self.close_connection = True
            raise HTTPError(400, f"body truncated: got {len(data)} of {length} bytes")
        self.body_read = True
        return data

    def dispatch(self) -> None:
        app = self.server.app
        app.metrics.started()
        started = time.perf_counter()
        route, name = "other", None
        self.body_read = False
        try:
            parts = urlsplit(self.path)
            if parts.path != "/healthz" and not token_matches(self.headers.get("Authorization"), app.token):
                raise HTTPError(401, "missing or wrong bearer token: send 'Authorization: Bearer TOKEN'")
            route, name = app.route(self.command, parts.path)
            body = self.read_body() if self.command == "POST" else b""
            self.server.tracker.set(self, "busy")
            status, content_type, payload = app.answer(route, name, self.headers, body, parse_qs(parts.query))
        except HTTPError as exc:
            status, content_type, payload = exc.status, JSON_TYPE, _error(exc)
        except PoolBusyError as exc:
            status, content_type, payload = 503, JSON_TYPE, _error(exc)
        except InvalidInputError as exc:
            status, content_type, payload = 400, JSON_TYPE, _error(exc)
        except EdgekitError as exc:  # the model or its backend failed on an accepted input
            status, content_type, payload = 500, JSON_TYPE, _error(f"model {name!r} failed: {exc}")
            _log(f"{self.command} {self.path}: 500: {exc}")
        except Exception as exc:
            status, content_type, payload = 500, JSON_TYPE, _error(
                f"internal error in {route} ({type(exc).__name__}: {first_line(exc)})")
            _log(f"{self.command} {self.path}: 500: {type(exc).__name__}: {first_line(exc)}")
        if not self.body_read and (self.headers.get("Content-Length", "0").strip() not in ("", "0")
                                   or self.headers.get("Transfer-Encoding")):
            self.close_connection = True  # an unread body would be taken for the next request
        if self.close_connection and status >= 400:
            self.linger = True
        timed = route in ("predict", "classify")
        try:
            self.respond(status, content_type, payload)
        finally:
            app.metrics.observe(name, route, status, time.perf_counter() - started if timed else None)


_BUSY = _error("too many connections; try again later")
BUSY_ANSWER = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
               b"Content-Length: %d\r\n\r\n%s" % (len(_BUSY), _BUSY))


class EdgekitHTTPServer(ThreadingHTTPServer):
    daemon_threads = False     # server_close() waits for the requests in flight
    block_on_close = True
    request_queue_size = 64

    def __init__(self, address, app: App) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.app = app
        self.tracker = ConnectionTracker(app.options.timeout)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(address, Handler)

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            try:
                request.sendall(BUSY_ANSWER)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request, client_address) -> None:
        exc = sys.exc_info()[1]
        if not isinstance(exc, (ConnectionError, TimeoutError)):
            _log(f"connection from {client_address[0]}: {type(exc).__name__}: {first_line(exc)}")

    def drain(self) -> None:
        """Stop accepting, close idle connections; requests in flight finish (server_close waits)."""
        self.app.draining = True
        self.tracker.close_idle()
        self.shutdown()
        self.tracker.close_idle()


# ----------------------------------------------------------------------------------------- serve


def load_pools(names: dict[str, Path], workers: int, backend: str | None) -> dict[str, ModelPool]:
    from edgekit import runtime

    pools: dict[str, ModelPool] = {}
    try:
        for name, path in names.items():
            pools[name] = ModelPool(name, path, workers,
                                    lambda path=path: runtime.load(path, backend=backend, threads=1))
    except BaseException:
        for pool in pools.values():
            pool.close()
        raise
    return pools


def serve(bundles: list[str], options: ServeOptions = ServeOptions()) -> int:
    check_host(options.host, options.token_file)
    token = read_token(options.token_file) if options.token_file else None
    names = bundle_names(bundles)
    workers = options.threads or default_workers()
    pools = load_pools(names, workers, options.backend)
    try:
        app = App(pools, options, token)
        try:
            server = EdgekitHTTPServer((options.host, options.port), app)
        except OSError as exc:
            raise EdgekitError(f"cannot listen on {options.host}:{options.port}: {exc.strerror or exc}") from None
        stopping = threading.Event()

        def stop(signum, frame):
            if not stopping.is_set():
                stopping.set()
                _log(f"{signal.Signals(signum).name}: finishing requests in flight, then exiting")
                threading.Thread(target=server.drain, daemon=True).start()

        previous = ({sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
                    if threading.current_thread() is threading.main_thread() else {})
        reaper = threading.Thread(target=server.tracker.run_reaper, name="edgekit-serve-reaper", daemon=True)
        reaper.start()
        host, port = server.server_address[:2]
        shown = f"[{host}]" if ":" in host else host
        _log(f"serving {', '.join(names)} on http://{shown}:{port} ({workers} interpreter"
             f"{'s' if workers > 1 else ''} per model{', bearer token required' if token else ''})")
        watcher = reload.watch(bundles, pools, options.backend, _log)  # linked bundles follow their link
        try:
            server.serve_forever(poll_interval=0.2)
        finally:
            if watcher:
                watcher.stop()
            server.server_close()  # waits for the handler threads: requests in flight finish
            server.tracker.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        _log("stopped")
        return 0
    finally:
        for pool in pools.values():
            pool.close()
