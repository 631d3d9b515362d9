"""HTTP/1.1 on the standard library's server: connections, framing, limits, slow clients, drain.

Threads: one per connection (http.server's ThreadingHTTPServer), at most MAX_CONNECTIONS at once
(more are answered 503 at once). A client that stalls or drips its request is cut off after
`timeout` seconds (socket timeout per read, plus a reaper thread that ends any request taking longer
than `timeout` in total to arrive), so it holds one connection thread and nothing else. Requests go
to the App (app.py), which knows nothing of sockets; malformed HTTP itself (request line, headers,
lengths) is answered here, as one-line JSON 4xx too. `drain()` stops accepting, closes idle
keep-alive connections and lets requests in flight finish.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
import zlib
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from edgekit.runtime.errors import first_line
from edgekit.runtime.serve.app import TIMED_ROUTES, App, log
from edgekit.runtime.serve.inputs import HTTPError
from edgekit.runtime.serve.reply import JSON_TYPE, error_body

MAX_CONNECTIONS = 64
# Content-Encoding -> zlib window bits (gzip header, zlib header); tritonclient can compress requests.
ENCODINGS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


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
        metrics.observe(None, "other", code, None)   # counted before the answer goes out, as in dispatch
        try:
            self.respond(code, JSON_TYPE, error_body(message or HTTPStatus(code).phrase),
                         (("Allow", "GET, POST"),) if code == 405 else ())
        except OSError:
            pass

    def respond(self, status: int, content_type: str, body: bytes, headers=()) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
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
        encoding = (self.headers.get("Content-Encoding") or "identity").strip().lower()
        if encoding not in ENCODINGS and encoding != "identity":
            self.close_connection = True
            raise HTTPError(415, f"Content-Encoding {encoding!r} is not supported; send gzip, deflate or identity")
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
        self.server.tracker.set(self, "busy")
        return _decompress(data, encoding, limit) if encoding in ENCODINGS else data

    def dispatch(self) -> None:
        app = self.server.app
        app.metrics.started()
        started = time.perf_counter()
        self.body_read = False
        if self.command != "POST":  # the whole request is in (a POST's body: read_body says when)
            self.server.tracker.set(self, "busy")
        answer, route, name = app.handle(self.command, self.path, self.headers, self.read_body)
        if not self.body_read and (self.headers.get("Content-Length", "0").strip() not in ("", "0")
                                   or self.headers.get("Transfer-Encoding")):
            self.close_connection = True  # an unread body would be taken for the next request
        if self.close_connection and answer.status >= 400:
            self.linger = True
        # counted before the answer goes out: a client that has its answer sees it in /metrics
        app.metrics.observe(name, route, answer.status,
                            time.perf_counter() - started if route in TIMED_ROUTES else None)
        self.respond(answer.status, answer.content_type, answer.body, answer.headers)

def _decompress(data: bytes, encoding: str, limit: int) -> bytes:
    """A gzip or deflate body, inflated to at most `limit` bytes (a small bomb gets 413, not memory)."""
    inflater = zlib.decompressobj(ENCODINGS[encoding])
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise HTTPError(400, f"body is not valid {encoding} data ({first_line(exc)})") from None
    if len(out) > limit:
        raise HTTPError(413, f"{encoding} body inflates to more than this server's limit of {limit} bytes")
    if not inflater.eof:
        raise HTTPError(400, f"{encoding} body is truncated")
    return out


_BUSY = error_body("too many connections; try again later")
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
            log(f"connection from {client_address[0]}: {type(exc).__name__}: {first_line(exc)}")

    def drain(self) -> None:
        """Stop accepting, close idle connections; requests in flight finish (server_close waits)."""
        self.app.draining = True
        self.tracker.close_idle()
        self.shutdown()
        self.tracker.close_idle()
