"""The server's settings and their defaults (the command-line flags in `__init__` read them from here)."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8500
DEFAULT_MAX_BODY_BYTES = 10 << 20     # a phone photo fits; a 100 MB upload does not
DEFAULT_MAX_BATCH = 64                # instances per request
DEFAULT_TIMEOUT_S = 10.0              # to send a whole request (line, headers, body); keep-alive idle time


@dataclass(frozen=True)
class ServeOptions:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    threads: int | None = None            # interpreters per bundle; None: default_workers()
    token_file: str | None = None
    backend: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_batch: int = DEFAULT_MAX_BATCH
    timeout: float = DEFAULT_TIMEOUT_S
