"""Several loaded copies of one bundle, so that requests run in parallel.

A TFLite interpreter runs one call at a time (the runner holds a lock around invoke), so one
interpreter per bundle would serialise every request. The pool loads N single-threaded copies and
lends each to one request at a time: N requests run at once on N cores, and each answer is what a
serial call on that bundle gives (same file, same settings, no state kept between calls).
"""

from __future__ import annotations

import os
import queue
from contextlib import contextmanager
from pathlib import Path

from edgekit.runtime.errors import EdgekitError


class PoolBusyError(EdgekitError):
    """Every copy of the model stayed busy for the whole wait: the server is overloaded."""


def default_workers() -> int:
    """One interpreter per core, at most 4 (a Raspberry Pi 4/5 has 4 cores)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


class ModelPool:
    """`workers` copies of one bundle made by `load()`; `with pool.lend(timeout) as model: ...`."""

    def __init__(self, name: str, path: str | Path, workers: int, load) -> None:
        self.name = name
        self.path = Path(path)
        self.workers = workers
        self._models = []
        try:
            for _ in range(workers):
                self._models.append(load())
        except BaseException:
            self.close()
            raise
        self._free: queue.LifoQueue = queue.LifoQueue()  # last returned = warmest caches first
        for model in self._models:
            self._free.put(model)
        self.metadata = _metadata(self._models[0], workers)

    @contextmanager
    def lend(self, timeout: float):
        try:
            model = self._free.get(timeout=timeout)
        except queue.Empty:
            raise PoolBusyError(f"model {self.name!r}: all {self.workers} workers stayed busy for "
                                f"{timeout:g} s; try again later") from None
        try:
            yield model
        finally:
            self._free.put(model)

    def close(self) -> None:
        for model in self._models:
            try:
                model.close()
            except Exception:
                pass
        self._models = []


def _metadata(model, workers: int) -> dict:
    """What `GET /v1/models/NAME` shows: the manifest's facts and the model's tensors, no file paths."""
    manifest = model.bundle.manifest or {}
    runner = model.runner
    preprocessing = model.bundle.preprocessing
    return {
        "task": model.bundle.task, "format": model.bundle.format, "variant": model.bundle.variant,
        "backend": model.backend, "labels": model.labels, "workers": workers,
        "preprocessing": preprocessing.get("type") if preprocessing else None,
        "sha256": model.bundle.sha256, "edgekit_version": manifest.get("edgekit_version"),
        "created": manifest.get("created"),
        "inputs": [i.to_dict() for i in runner.inputs], "outputs": [o.to_dict() for o in runner.outputs],
    }
