"""The server's logic, independent of sockets: which requests need the token, which protocol answers
a path (TensorFlow Serving's v1 routes in tfserving.py, the Open Inference Protocol's v2 routes in
oip.py, plus /healthz and /metrics), and how failures become answers: a bad request is a 4xx with one
line, a model that fails on a valid request a 500 with one line (never a traceback).
"""

from __future__ import annotations

import sys
from urllib.parse import parse_qs, urlsplit

import edgekit.runtime.serve.oip as oip
import edgekit.runtime.serve.tfserving as tfserving
from edgekit.runtime.errors import EdgekitError, InvalidInputError, first_line
from edgekit.runtime.serve.auth import needs_token, token_matches
from edgekit.runtime.serve.catalog import Catalog
from edgekit.runtime.serve.inputs import HTTPError
from edgekit.runtime.serve.metrics import CONTENT_TYPE as METRICS_TYPE
from edgekit.runtime.serve.metrics import Metrics
from edgekit.runtime.serve.options import ServeOptions
from edgekit.runtime.serve.pool import ModelPool, PoolBusyError
from edgekit.runtime.serve.reply import Answer, MethodNotAllowed, error_answer, error_for, json_answer

PROG = "edgekit serve"
# Routes whose latency the histogram records: the ones that run a model.
TIMED_ROUTES = frozenset({"predict", "classify", "v2_infer"})


def log(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def _server_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("keras-edgekit")
    except PackageNotFoundError:
        return "unknown"


class App:
    """`handle(method, target, headers, read_body) -> (Answer, route, model name)`; `read_body()` is
    called only once the route is known and the caller is allowed (so that 401/404/405 need no body)."""

    def __init__(self, models: dict[str, dict[str, ModelPool]], options: ServeOptions,
                 token: str | None = None) -> None:
        self.catalog = Catalog(models)
        self.options = options
        self.token = token
        self.metrics = Metrics(self.catalog.names)
        self.draining = False
        self.version = _server_version()

    def handle(self, method: str, target: str, headers, read_body) -> tuple[Answer, str, str | None]:
        route, name = "other", None
        try:
            parts = urlsplit(target)
            path = parts.path
            if needs_token(path) and not token_matches(headers.get("Authorization"), self.token):
                raise HTTPError(401, "missing or wrong bearer token: send 'Authorization: Bearer TOKEN'")
            if path in ("/healthz", "/metrics"):
                if method != "GET":
                    raise MethodNotAllowed(path, method, "GET")
                route = path[1:]
                answer = self._health() if route == "healthz" else Answer(200, METRICS_TYPE,
                                                                          self.metrics.render().encode())
            elif path == tfserving.PREFIX or path.startswith(tfserving.PREFIX + "/"):
                route, name = tfserving.route(method, path, self.catalog)
                body = read_body() if method == "POST" else b""
                answer = tfserving.answer(route, name, self.catalog, headers, body, parse_qs(parts.query),
                                          self.options)
            elif path == oip.PREFIX or path.startswith(oip.PREFIX + "/"):
                route, name, version = oip.route(method, path, self.catalog)
                body = read_body() if method == "POST" else b""
                answer = oip.answer(route, name, version, self.catalog, headers, body, self.options,
                                    self.draining, self.version)
            else:
                raise HTTPError(404, f"no route {path!r}; see GET /v1/models (TensorFlow Serving's API) or "
                                     "GET /v2 (the Open Inference Protocol)")
        except HTTPError as exc:
            answer = error_for(exc)
        except PoolBusyError as exc:
            answer = error_answer(503, exc)
        except InvalidInputError as exc:
            answer = error_answer(400, exc)
        except EdgekitError as exc:  # the model or its backend failed on an accepted input
            answer = error_answer(500, f"model {name!r} failed: {exc}")
            log(f"{method} {target}: 500: {exc}")
        except Exception as exc:
            answer = error_answer(500, f"internal error in {route} ({type(exc).__name__}: {first_line(exc)})")
            log(f"{method} {target}: 500: {type(exc).__name__}: {first_line(exc)}")
        return answer, route, name

    def _health(self) -> Answer:
        state = "draining" if self.draining else "ok"
        return json_answer({"status": state, "models": {n: "AVAILABLE" for n in self.catalog.names}},
                           503 if self.draining else 200)

    def pools(self) -> list[ModelPool]:
        return self.catalog.pools()
