"""Who may call the server: the loopback-only rule without a token, the token file, and the
`Authorization: Bearer TOKEN` check (constant time)."""

from __future__ import annotations

import hmac
from pathlib import Path

from edgekit.runtime.errors import EdgekitError, first_line
from edgekit.runtime.serve.options import DEFAULT_HOST

MIN_TOKEN_CHARS = 16
# Probes (a load balancer's, Kubernetes' liveness and readiness) send no token and learn nothing
# beyond "up" or "not up".
OPEN_PATHS = frozenset({"/healthz", "/v2/health/live", "/v2/health/ready"})


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


def token_matches(header: str | None, token: str | None) -> bool:
    """`Authorization: Bearer TOKEN` (scheme case-insensitive), compared in constant time."""
    if token is None:
        return True
    scheme, _, given = (header or "").strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def needs_token(path: str) -> bool:
    return path not in OPEN_PATHS
