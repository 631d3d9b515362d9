"""Follow bundles that are served through a symbolic link, such as a fleet release's `current` link
(`~/edgekit/bundles/NAME/current -> releases/HASH`, which `edgekit fleet deploy` moves by renaming
a new link over it).

`serve` names a bundle given as `.../NAME/current` NAME (not the release's hash). A watcher thread
reads each linked bundle's target every POLL_S seconds; when it changed, the new release is loaded
next to the old one and swapped in (`ModelPool.swap`): requests in flight finish on the old copies,
which are closed after the last of them, and no request fails. A release that does not load is
logged in one line and the old one goes on serving (until the link moves again).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from edgekit.runtime.errors import EdgekitError, first_line

POLL_S = 1.0
LINK_NAME = "current"


def served_name(item: str | os.PathLike) -> str:
    """The model name of a served bundle: its folder's name (a bare model file: its stem), or for a
    `NAME/current` link, NAME."""
    given = Path(item)
    if given.name == LINK_NAME and given.is_symlink():
        return given.absolute().parent.name
    path = given.resolve()
    return path.stem if path.is_file() else path.name


def linked(item: str | os.PathLike) -> bool:
    """Whether a symbolic link anywhere in the path decides what `item` is."""
    given = Path(item).absolute()
    return os.path.realpath(given) != os.path.normpath(given)


class Watcher:
    """Polls the targets of linked bundles and swaps new releases into their pools."""

    def __init__(self, links: dict[str, Path], pools: dict, backend: str | None, log, interval: float = POLL_S):
        self.links, self.pools, self.backend, self.log, self.interval = links, pools, backend, log, interval
        self.targets = {name: os.path.realpath(link) for name, link in links.items()}
        self.refused: dict[str, str] = {}   # name -> target that failed to load (not retried)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edgekit-serve-reload", daemon=True)

    def start(self) -> Watcher:
        self._thread.start()
        return self

    def _load(self, path: str):
        from edgekit import runtime

        # what the server loads per worker (server.load_pools): one single-threaded copy
        return lambda: runtime.load(path, backend=self.backend, threads=1)

    def check_once(self) -> None:
        for name, link in self.links.items():
            target = os.path.realpath(link)
            if target in (self.targets[name], self.refused.get(name)) or not os.path.exists(target):
                continue
            try:
                self.pools[name].swap(target, self._load(target))
            except Exception as exc:  # a bad release must not end the watcher (or the server)
                self.refused[name] = target
                why = first_line(exc) if isinstance(exc, EdgekitError) else f"{type(exc).__name__}: {first_line(exc)}"
                self.log(f"{name}: new release {target} not loaded, still serving {self.targets[name]}: {why}")
                continue
            self.log(f"{name}: now serving {target} (was {self.targets[name]})")
            self.targets[name] = target
            self.refused.pop(name, None)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.check_once()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)


def watch(bundles: list[str], pools: dict, backend: str | None, log, interval: float = POLL_S) -> Watcher | None:
    """Start a watcher for the bundles among `bundles` that are reached through a link; None when
    none is."""
    links = {served_name(item): Path(item).absolute() for item in bundles if linked(item)}
    links = {name: link for name, link in links.items() if name in pools}
    return Watcher(links, pools, backend, log, interval).start() if links else None
