"""Several loaded copies of one bundle, so that requests run in parallel.

A TFLite interpreter runs one call at a time (the runner holds a lock around invoke), so one
interpreter per bundle would serialise every request. The pool loads N single-threaded copies and
lends each to one request at a time: N requests run at once on N cores, and each answer is what a
serial call on that bundle gives (same file, same settings, no state kept between calls).

A pool can swap in a new release of its bundle while serving (`swap`, used by reload.py): while
the new copies load, both releases are in memory.
"""

from __future__ import annotations

import os
import queue
import threading
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


class _Copies:
    """The loaded copies of one release of a bundle, and how many requests hold or wait for one."""

    def __init__(self, path: Path, models: list) -> None:
        self.path = path
        self.models = models
        self.free: queue.LifoQueue = queue.LifoQueue()  # last returned = warmest caches first
        for model in models:
            self.free.put(model)
        self.lent = 0          # requests holding or waiting for a copy (under ModelPool._lock)
        self.retired = False   # replaced by a newer release: closed when `lent` drops to 0

    def close(self) -> None:
        for model in self.models:
            try:
                model.close()
            except Exception:
                pass
        self.models = []


def _load_copies(path: Path, workers: int, load) -> _Copies:
    models = []
    try:
        for _ in range(workers):
            models.append(load())
    except BaseException:
        _Copies(path, models).close()
        raise
    return _Copies(path, models)


class ModelPool:
    """`workers` copies of one bundle made by `load()`; `with pool.lend(timeout) as model: ...`.

    `swap(path, load)` replaces the copies with those of a new release of the bundle (reload.py
    calls it when a served `current` link moves): requests that already hold or wait for an old copy
    finish on it, new requests get the new ones, and the old copies are closed when the last of
    those requests is done. No request fails or waits for the load: the new copies are made first.
    """

    def __init__(self, name: str, path: str | Path, workers: int, load) -> None:
        self.name = name
        self.workers = workers
        self._lock = threading.Lock()
        self._copies = _load_copies(Path(path), workers, load)
        self.metadata = _metadata(self._copies.models[0], workers)

    @property
    def path(self) -> Path:
        return self._copies.path

    @contextmanager
    def lend(self, timeout: float):
        with self._lock:
            copies = self._copies
            copies.lent += 1
        try:
            try:
                model = copies.free.get(timeout=timeout)
            except queue.Empty:
                raise PoolBusyError(f"model {self.name!r}: all {self.workers} workers stayed busy for "
                                    f"{timeout:g} s; try again later") from None
            try:
                yield model
            finally:
                copies.free.put(model)
        finally:
            with self._lock:
                copies.lent -= 1
                finished = copies.retired and copies.lent == 0
            if finished:
                copies.close()

    def swap(self, path: str | Path, load) -> Path:
        """Serve the release at `path` (copies made by `load()`) from now on; returns the old path.
        A release that fails to load raises, and the pool goes on serving the old one."""
        new = _load_copies(Path(path), self.workers, load)
        metadata = _metadata(new.models[0], self.workers)
        with self._lock:
            old, self._copies = self._copies, new
            self.metadata = metadata
            old.retired = True
            idle = old.lent == 0
        if idle:
            old.close()
        return old.path

    def close(self) -> None:
        with self._lock:
            copies = self._copies
        copies.close()


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
