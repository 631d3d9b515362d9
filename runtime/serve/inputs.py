"""Request bodies -> model inputs, with the limits a server needs. Every rejection is an HTTPError
(a 4xx status and one line); what passes goes to `EdgeModel.predict_tensors` / `EdgeModel.predict`,
which check dtypes, shapes and values against the model (their InvalidInputError is a 400 too).

Raw uploads for :classify, by Content-Type, as the bundle's model kind takes them (runtime/kinds.py):
  image/*                          a photo (JPEG, PNG, ...) for an image model
  audio/wav, audio/x-wav, ...      a 16-bit PCM mono WAV for a speech model
  text/plain                       one text for a text model
  application/json                 {"instances": [...]}: texts, or tensors for a bundle without preprocessing
"""

from __future__ import annotations

import json

import numpy as np

from edgekit.runtime.errors import RequestRefused, first_line
from edgekit.runtime.kinds import TENSOR

MAX_RANK = 8


class HTTPError(Exception):
    """A request the server refuses: HTTP status and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(" ".join(str(message).split()))
        self.status = status


def media_type(content_type: str | None) -> tuple[str, dict]:
    """'text/plain; charset=latin-1' -> ('text/plain', {'charset': 'latin-1'})."""
    if not content_type:
        return "", {}
    main, *params = content_type.split(";")
    pairs = {}
    for p in params:
        key, _, value = p.partition("=")
        pairs[key.strip().lower()] = value.strip().strip('"')
    return main.strip().lower(), pairs


def _reject_constant(name: str):
    raise HTTPError(400, f"JSON holds {name}; send finite numbers")


def parse_json(body: bytes):
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPError(400, "body is not UTF-8 JSON") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise HTTPError(400, f"body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise HTTPError(400, "JSON is nested too deeply") from None


def _array(value, what: str, max_batch: int) -> np.ndarray:
    """A JSON list (batch first) -> a numeric numpy array within the limits."""
    if not isinstance(value, list) or not value:
        raise HTTPError(400, f"{what} must be a non-empty list (batch first)")
    if len(value) > max_batch:
        raise HTTPError(413, f"{what} has {len(value)} instances; this server takes at most {max_batch} per request")
    try:
        array = np.asarray(value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise HTTPError(400, f"{what} is not a rectangular array of numbers ({first_line(exc)})") from None
    if array.dtype.kind not in "biuf":
        raise HTTPError(400, f"{what} must hold only numbers (got {array.dtype.kind!r} kind values: "
                             "strings, objects or mixed types)")
    if array.ndim > MAX_RANK:
        raise HTTPError(400, f"{what} has rank {array.ndim}; at most {MAX_RANK}")
    return array


def predict_feed(model, doc, max_batch: int):
    """TensorFlow Serving's :predict body -> the feed `EdgeModel.predict_tensors` takes.

    Row format {"instances": [instance, ...]}: an instance is one sample without the batch axis,
    or {input name: sample} for a model with several inputs. Columnar format {"inputs": batch} or
    {"inputs": {input name: batch}}."""
    if not isinstance(doc, dict):
        raise HTTPError(400, 'body must be a JSON object: {"instances": [...]} or {"inputs": ...}')
    if ("instances" in doc) == ("inputs" in doc):
        raise HTTPError(400, 'give exactly one of "instances" (row format) or "inputs" (columnar format)')
    names = list(model.input_names)
    if "instances" in doc:
        rows = doc["instances"]
        if isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows):
            for i, row in enumerate(rows):
                if set(row) != set(names):
                    raise HTTPError(400, f"instance {i} has inputs {sorted(row)}; the model takes {names}")
            return {n: _array([r[n] for r in rows], f"instances[*].{n}", max_batch) for n in names}
        return _array(rows, "instances", max_batch)
    columns = doc["inputs"]
    if isinstance(columns, dict):
        if set(columns) != set(names):
            raise HTTPError(400, f"inputs has {sorted(columns)}; the model takes {names}")
        return {n: _array(columns[n], f"inputs.{n}", max_batch) for n in names}
    return _array(columns, "inputs", max_batch)


def classify_inputs(model, content_type: str | None, body: bytes, max_batch: int) -> list | np.ndarray:
    """A :classify body -> what `EdgeModel.predict` takes (raw inputs, preprocessed by the model). What
    a model takes is its kind's to say (runtime/kinds.py `decode_upload`, `classify_instances`)."""
    mime, params = media_type(content_type)
    kind = model.kind if model.bundle.preprocessing is not None else TENSOR
    try:
        if mime == "application/json":
            doc = parse_json(body)
            if not isinstance(doc, dict) or set(doc) != {"instances"}:
                raise HTTPError(400, 'a JSON :classify body is {"instances": [...]}')
            raw = kind.classify_instances(doc["instances"])
            if raw is None:  # tensors
                return _array(doc["instances"], "instances", max_batch)
        else:
            if not body:
                raise HTTPError(400, "empty body")
            raw = kind.decode_upload(model, mime, params, body)
    except RequestRefused as exc:
        raise HTTPError(exc.status, str(exc)) from None
    if len(raw) > max_batch:
        raise HTTPError(413, f"{len(raw)} instances; this server takes at most {max_batch} per request")
    return raw


def raw_inputs(model, items: list[bytes]) -> list:
    """The BYTES elements of an Open Inference Protocol request (one raw input each) -> what
    `EdgeModel.preprocess` takes, decoded by the model's kind as for :classify: texts (UTF-8), photos,
    WAV files."""
    kind = model.kind if model.bundle.preprocessing is not None else TENSOR
    try:
        return [kind.decode_bytes(model, item) for item in items]
    except RequestRefused as exc:
        raise HTTPError(exc.status, str(exc)) from None
