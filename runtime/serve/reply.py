"""What the server sends back: an `Answer` (status, content type, body, extra headers) and the JSON
bodies both protocols share, errors included (`{"error": "one line"}`)."""

from __future__ import annotations

import json
from typing import NamedTuple

from edgekit.runtime.serve.inputs import HTTPError

JSON_TYPE = "application/json"


class Answer(NamedTuple):
    status: int
    content_type: str
    body: bytes
    headers: tuple = ()          # extra (name, value) pairs


def json_body(doc) -> bytes:
    return (json.dumps(doc, separators=(",", ":")) + "\n").encode()


def error_body(message) -> bytes:
    return (json.dumps({"error": " ".join(str(message).split())}) + "\n").encode()


def json_answer(doc, status: int = 200) -> Answer:
    return Answer(status, JSON_TYPE, json_body(doc))


def error_answer(status: int, message) -> Answer:
    return Answer(status, JSON_TYPE, error_body(message))


class MethodNotAllowed(HTTPError):
    """405, with the `Allow` header RFC 9110 asks for."""

    def __init__(self, path: str, method: str, allow: str) -> None:
        super().__init__(405, f"{path} takes {allow}, not {method}")
        self.allow = allow


def error_for(exc: HTTPError) -> Answer:
    answer = error_answer(exc.status, exc)
    return answer._replace(headers=(("Allow", exc.allow),)) if isinstance(exc, MethodNotAllowed) else answer
