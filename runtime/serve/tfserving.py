"""TensorFlow Serving's REST API (the "v1" routes): routes and answers, independent of sockets.

    GET  /v1/models                    the served models
    GET  /v1/models/NAME               model_version_status plus the manifest's metadata
    GET  /v1/models/NAME/metadata      {"model_spec": ..., "metadata": ...}
    POST /v1/models/NAME:predict       {"instances": [...]} or {"inputs": ...} -> {"predictions": [...]}
    POST /v1/models/NAME:classify      raw photo / WAV / text body (by Content-Type), or JSON
                                       {"instances": [...]} -> labels with probabilities

A model served with several versions answers with its highest one.
"""

from __future__ import annotations

from urllib.parse import unquote

from edgekit.runtime.serve.catalog import Catalog
from edgekit.runtime.serve.inputs import HTTPError, classify_inputs, media_type, parse_json, predict_feed
from edgekit.runtime.serve.reply import JSON_TYPE, Answer, MethodNotAllowed, json_answer

PREFIX = "/v1/models"
POST_ROUTES = ("predict", "classify")


def route(method: str, path: str, catalog: Catalog) -> tuple[str, str | None]:
    """(route, model name) for a path under /v1/models, or HTTPError 404/405."""
    if path == PREFIX:
        name, verb = None, "models"
    elif path.startswith(PREFIX + "/"):
        rest = path[len(PREFIX) + 1:]
        name, verb = rest, "status"
        if rest.endswith("/metadata"):
            name, verb = rest[:-len("/metadata")], "metadata"
        elif ":" in rest:
            head, _, tail = rest.rpartition(":")
            if tail in POST_ROUTES:
                name, verb = head, tail
        name = unquote(name)
        catalog.pool(name)  # 404 for an unknown model
    else:
        raise HTTPError(404, f"no route {path!r}; see GET /v1/models")
    wanted = "POST" if verb in POST_ROUTES else "GET"
    if method != wanted:
        raise MethodNotAllowed(path, method, wanted)
    return verb, name


def answer(route: str, name: str | None, catalog: Catalog, headers, body: bytes, query: dict, options) -> Answer:
    if route == "models":
        return json_answer({"models": [{"name": n, "state": "AVAILABLE"} for n in catalog.names]})
    version, pool = catalog.pool(name)
    if route == "status":
        return json_answer({"name": name, "model_version_status": [
            {"version": v, "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
            for v in catalog.versions(name)], "metadata": pool.metadata})
    if route == "metadata":
        return json_answer({"model_spec": {"name": name, "version": version}, "metadata": pool.metadata})
    max_batch = options.max_batch
    if route == "predict":
        mime, _ = media_type(headers.get("Content-Type"))
        if mime not in ("", JSON_TYPE):
            raise HTTPError(415, f"Content-Type {mime!r}: :predict takes JSON (application/json)")
        doc = parse_json(body)
        with pool.lend(options.timeout) as model:
            feed = predict_feed(model, doc, max_batch)
            outputs = model.predict_outputs(feed)
        return json_answer({"predictions": _rows(outputs)})
    top_k = _top_k(query)
    with pool.lend(options.timeout) as model:
        inputs = classify_inputs(model, headers.get("Content-Type"), body, max_batch)
        predictions = model.predict(inputs)
    if isinstance(predictions, dict):  # a tensor bundle without labels: its outputs by name
        return json_answer({"predictions": _rows(predictions)})
    return json_answer({"predictions": [p.to_dict(top_k) for p in predictions]})


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
