"""Prometheus text-format metrics (exposition format 0.0.4), kept by hand: three metric families do
not justify a client library on a Pi.

    edgekit_requests_total{model, route, code}     counter: every answered request
    edgekit_request_errors_total{model, route}     counter: answers with a 4xx or 5xx code
    edgekit_request_duration_seconds{model}        histogram: :predict / :classify latency (200s and errors)
    edgekit_in_flight_requests                     gauge

`model` is a served model's name, or "" for requests naming no model or an unknown one (so that
clients cannot grow the label set without bound).
"""

from __future__ import annotations

import bisect
import threading

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def escape_label(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**pairs: str) -> str:
    return "{" + ",".join(f'{k}="{escape_label(v)}"' for k, v in pairs.items()) + "}"


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


class Histogram:
    __slots__ = ("counts", "total", "count")

    def __init__(self) -> None:
        self.counts = [0] * len(BUCKETS)  # per bucket (not cumulative); cumulated when rendered
        self.total = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        i = bisect.bisect_left(BUCKETS, seconds)
        if i < len(BUCKETS):
            self.counts[i] += 1
        self.total += seconds
        self.count += 1


class Metrics:
    def __init__(self, models: list[str]) -> None:
        self._lock = threading.Lock()
        self._models = set(models)
        self._requests: dict[tuple[str, str, int], int] = {}
        self._errors: dict[tuple[str, str], int] = {}
        self._latency: dict[str, Histogram] = {name: Histogram() for name in models}
        self.in_flight = 0

    def label_for(self, model: str | None) -> str:
        return model if model in self._models else ""

    def started(self) -> None:
        with self._lock:
            self.in_flight += 1

    def observe(self, model: str | None, route: str, code: int, seconds: float | None) -> None:
        """One answered request (`seconds` for the model routes' latency histogram, else None)."""
        model = self.label_for(model)
        with self._lock:
            self.in_flight -= 1
            key = (model, route, int(code))
            self._requests[key] = self._requests.get(key, 0) + 1
            if code >= 400:
                self._errors[(model, route)] = self._errors.get((model, route), 0) + 1
            if seconds is not None and model:
                self._latency[model].observe(seconds)

    def render(self) -> str:
        with self._lock:
            requests = sorted(self._requests.items())
            errors = sorted(self._errors.items())
            latency = {name: (list(h.counts), h.total, h.count) for name, h in sorted(self._latency.items())}
            in_flight = self.in_flight
        lines = ["# HELP edgekit_requests_total Requests answered, by model, route and HTTP status code.",
                 "# TYPE edgekit_requests_total counter"]
        lines += [f"edgekit_requests_total{_labels(model=m, route=r, code=str(c))} {n}" for (m, r, c), n in requests]
        lines += ["# HELP edgekit_request_errors_total Requests answered with a 4xx or 5xx status code.",
                  "# TYPE edgekit_request_errors_total counter"]
        lines += [f"edgekit_request_errors_total{_labels(model=m, route=r)} {n}" for (m, r), n in errors]
        lines += ["# HELP edgekit_request_duration_seconds Latency of :predict and :classify requests, "
                  "from the end of the request headers to the answer.",
                  "# TYPE edgekit_request_duration_seconds histogram"]
        for name, (counts, total, count) in latency.items():
            cumulative = 0
            for le, n in zip(BUCKETS, counts):
                cumulative += n
                lines.append(f"edgekit_request_duration_seconds_bucket{_labels(model=name, le=repr(le))} {cumulative}")
            lines.append(f"edgekit_request_duration_seconds_bucket{_labels(model=name, le='+Inf')} {count}")
            lines.append(f"edgekit_request_duration_seconds_sum{_labels(model=name)} {_number(total)}")
            lines.append(f"edgekit_request_duration_seconds_count{_labels(model=name)} {count}")
        lines += ["# HELP edgekit_in_flight_requests Requests being answered now.",
                  "# TYPE edgekit_in_flight_requests gauge", f"edgekit_in_flight_requests {in_flight}"]
        return "\n".join(lines) + "\n"
