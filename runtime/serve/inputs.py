"""Request bodies -> model inputs, with the limits a server needs. Every rejection is an HTTPError
(a 4xx status and one line); what passes goes to `EdgeModel.predict_tensors` / `EdgeModel.predict`,
which check dtypes, shapes and values against the model (their InvalidInputError is a 400 too).

Raw uploads for :classify (by Content-Type):
  image/*                          a photo (JPEG, PNG, ...) for a bundle with image preprocessing
  audio/wav, audio/x-wav, ...      a 16-bit PCM mono WAV for a bundle with speech preprocessing
  text/plain                       one text for a bundle with text preprocessing
  application/json                 {"instances": [...]}: texts, or tensors for a bundle without preprocessing
"""

from __future__ import annotations

import json
import re

import numpy as np

from edgekit.runtime.errors import first_line

IMAGE_TYPES = {"image/jpeg": ".jpg", "image/jpg": ".jpg", "image/png": ".png", "image/bmp": ".bmp",
               "image/gif": ".gif", "image/webp": ".webp"}
WAV_TYPES = ("audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave")
MAX_IMAGE_PIXELS = 16_000_000   # a 12 MP camera frame fits; a decompression bomb does not
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
    """A :classify body -> what `EdgeModel.predict` takes (raw inputs, preprocessed by the model)."""
    mime, params = media_type(content_type)
    kind = (model.bundle.preprocessing or {}).get("type")  # text | image | speech | None (tensors)
    if mime == "application/json":
        doc = parse_json(body)
        if not isinstance(doc, dict) or set(doc) != {"instances"}:
            raise HTTPError(400, 'a JSON :classify body is {"instances": [...]}')
        if kind == "text":
            texts = doc["instances"]
            if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
                raise HTTPError(400, "instances must be a non-empty list of texts for this text model")
            if len(texts) > max_batch:
                raise HTTPError(413, f"{len(texts)} texts; this server takes at most {max_batch} per request")
            return texts
        if kind is None:
            return _array(doc["instances"], "instances", max_batch)
        raise HTTPError(415, f"this {kind} model takes the raw {_WANTS[kind]} as the request body")
    if not body:
        raise HTTPError(400, "empty body")
    if kind == "text" and mime.startswith("text/"):
        try:
            text = body.decode(params.get("charset") or "utf-8")
        except (UnicodeDecodeError, LookupError):
            raise HTTPError(400, f"body is not text in {params.get('charset') or 'utf-8'}") from None
        return [text]
    if kind == "image" and mime in IMAGE_TYPES:
        return [decode_image(body, IMAGE_TYPES[mime])]
    if kind == "speech" and mime in WAV_TYPES:
        return [decode_wav(body, model.bundle.preprocessing.get("sample_rate"))]
    wants = _WANTS.get(kind, 'JSON ({"instances": [...]}, Content-Type: application/json)')
    raise HTTPError(415, f"Content-Type {mime or '(none)'!r} is not accepted here; this model takes {wants}")


def raw_inputs(model, items: list[bytes]) -> list:
    """The BYTES elements of an Open Inference Protocol request (one raw input each) -> what
    `EdgeModel.preprocess` takes, decoded as for :classify: UTF-8 texts, photos, WAV files."""
    kind = (model.bundle.preprocessing or {}).get("type")
    if kind == "text":
        try:
            return [item.decode("utf-8") for item in items]
        except UnicodeDecodeError:
            raise HTTPError(400, "a BYTES text element is not UTF-8") from None
    if kind == "image":
        return [decode_image(item, "") for item in items]
    if kind == "speech":
        return [decode_wav(item, model.bundle.preprocessing.get("sample_rate")) for item in items]
    raise HTTPError(400, "this model takes tensors, not raw BYTES inputs")


_WANTS = {"text": "text (Content-Type: text/plain)",
          "image": "a photo (Content-Type: image/jpeg or image/png)",
          "speech": "a 16-bit mono WAV (Content-Type: audio/wav)"}


# -------------------------------------------------------------------------------- raw uploads
# Uploads are decoded in memory by the runtime's own readers, exactly as `predict` decodes a file.


def _check_pixels(data: bytes) -> None:
    """Read only the image header: refuse a small file that decodes to a huge image."""
    try:
        import io

        from PIL import Image
    except ImportError:
        return  # the reader says that decoding needs Pillow
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
    except Exception as exc:  # Pillow raises many types for corrupt data
        why = re.sub(r"<_io\.BytesIO object at 0x[0-9a-f]+>", "the upload", first_line(exc))
        raise HTTPError(400, f"cannot decode the image: {why}") from None
    if width * height > MAX_IMAGE_PIXELS:
        raise HTTPError(413, f"image is {width}x{height} pixels; at most {MAX_IMAGE_PIXELS} pixels")


def decode_image(data: bytes, suffix: str) -> np.ndarray:
    from edgekit.runtime.preprocess.image import read_image_bytes

    _check_pixels(data)
    return read_image_bytes(data, "the upload")


def decode_wav(data: bytes, sample_rate: int | None) -> np.ndarray:
    import io

    from edgekit.runtime.preprocess.audio import read_wav

    return read_wav(io.BytesIO(data), sample_rate, name="the upload")
