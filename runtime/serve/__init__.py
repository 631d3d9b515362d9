"""`python -m edgekit.runtime serve BUNDLE...` (and `edgekit serve`): an HTTP inference server for
bundles, speaking TensorFlow Serving's REST API (/v1) and the Open Inference Protocol (KServe's v2
protocol, /v2) side by side. Standard library + numpy + the backends only, so it installs wherever
the `runtime` extra does (aarch64, armv7).

    GET  /healthz                      {"status": "ok", "models": {...}}
    GET  /metrics                      Prometheus text: requests, errors, latency histogram per model
    GET  /v1/models/NAME               status and manifest metadata (NAME = the bundle folder's name)
    POST /v1/models/NAME:predict       {"instances": [...]} or {"inputs": ...} -> {"predictions": [...]}
    POST /v1/models/NAME:classify      raw photo / WAV / text body (by Content-Type), or JSON
                                       {"instances": [...]} -> labels with probabilities
    GET  /v2, /v2/health/live|ready    server metadata, probes
    GET  /v2/models/NAME[/versions/V][/ready]     model metadata (tensors), readiness
    POST /v2/models/NAME[/versions/V]/infer       tensors by name (JSON or binary) -> outputs by name

`server.serve` is the entry point; its docstring lists the modules. This module only declares the
command-line flags, so building the CLI parser stays cheap.
"""

from __future__ import annotations

import argparse

from edgekit.runtime.commandline import BACKEND_CHOICES, positive_int
from edgekit.runtime.serve.options import (
    DEFAULT_HOST,
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_PORT,
    DEFAULT_TIMEOUT_S,
    ServeOptions,
)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0..65535 (0: any free port), got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The `serve` flags, shared by `python -m edgekit.runtime serve` and `edgekit serve`."""
    parser.add_argument("bundles", nargs="+", metavar="BUNDLE",
                        help="bundle folders, each served under its folder's name; a folder of numbered "
                             "bundle folders (NAME/1, NAME/2) is one model with those versions")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help=f"address to listen on (default {DEFAULT_HOST}; any other needs --token-file)")
    parser.add_argument("--port", type=_port, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}; 0 picks a free one")
    parser.add_argument("--threads", type=positive_int,
                        help="requests run in parallel per bundle: that many single-threaded interpreters "
                             "(or sessions) per bundle (default: CPU cores, at most 4)")
    parser.add_argument("--token-file", metavar="FILE",
                        help="file holding the bearer token clients must send (Authorization: Bearer TOKEN)")
    parser.add_argument("--backend", choices=BACKEND_CHOICES, default="auto")
    parser.add_argument("--max-body-bytes", type=positive_int, default=DEFAULT_MAX_BODY_BYTES,
                        help=f"largest request body accepted (default {DEFAULT_MAX_BODY_BYTES})")
    parser.add_argument("--max-batch", type=positive_int, default=DEFAULT_MAX_BATCH,
                        help=f"most instances in one request (default {DEFAULT_MAX_BATCH})")
    parser.add_argument("--timeout", type=_positive_float, default=DEFAULT_TIMEOUT_S,
                        help=f"seconds a client has to send a whole request (default {DEFAULT_TIMEOUT_S:g})")


def serve_command(args) -> int:
    from edgekit.runtime.serve.server import serve

    options = ServeOptions(host=args.host, port=args.port, threads=args.threads, token_file=args.token_file,
                           backend=None if args.backend in (None, "auto") else args.backend,
                           max_body_bytes=args.max_body_bytes, max_batch=args.max_batch, timeout=args.timeout)
    return serve(list(args.bundles), options)
