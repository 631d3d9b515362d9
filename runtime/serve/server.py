"""`serve(bundles, options)`: start-up checks, loading every bundle (and every version of a folder of
versions) into pools, the HTTP server, and a clean stop: SIGTERM (or SIGINT) stops accepting, closes
idle keep-alive connections, lets requests in flight finish, then returns 0.

Modules, top to bottom: server (this) > httpd (HTTP framing, slow clients, drain) > app (auth rule,
routing, failures as answers) > tfserving (v1 routes), oip (v2 routes) > tensors (v2 wire format),
catalog (models by name and version), inputs (request bodies -> model inputs), auth, metrics, pool,
reply, options.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

from edgekit.runtime.errors import EdgekitError
from edgekit.runtime.serve import reload
from edgekit.runtime.serve.app import App, log
from edgekit.runtime.serve.auth import check_host, read_token
from edgekit.runtime.serve.catalog import versions_of
from edgekit.runtime.serve.httpd import EdgekitHTTPServer
from edgekit.runtime.serve.options import ServeOptions
from edgekit.runtime.serve.pool import ModelPool, default_workers


def bundle_names(bundles: list[str]) -> dict[str, Path]:
    """NAME -> bundle path; NAME is the folder's name (a bare model file: its stem; a fleet's
    NAME/current link: NAME)."""
    names: dict[str, Path] = {}
    for item in bundles:
        path = Path(item).resolve()
        name = reload.served_name(item)
        if name in names:
            raise EdgekitError(f"two bundles would both be served as {name!r}: {names[name]} and {path}; "
                               "rename one folder")
        names[name] = path
    return names


def load_pools(names: dict[str, Path], workers: int, backend: str | None) -> dict[str, dict[str, ModelPool]]:
    """NAME -> version -> pool; a folder of numbered bundle folders gives one pool per version."""
    from edgekit import runtime

    pools: dict[str, dict[str, ModelPool]] = {}
    try:
        for name, folder in names.items():
            pools[name] = {}
            for version, path in versions_of(folder).items():
                pools[name][version] = ModelPool(name, path, workers,
                                                 lambda path=path: runtime.load(path, backend=backend, threads=1))
    except BaseException:
        _close(pools)
        raise
    return pools


def _close(pools: dict[str, dict[str, ModelPool]]) -> None:
    for versions in pools.values():
        for pool in versions.values():
            pool.close()


def serve(bundles: list[str], options: ServeOptions = ServeOptions()) -> int:
    check_host(options.host, options.token_file)
    token = read_token(options.token_file) if options.token_file else None
    names = bundle_names(bundles)
    workers = options.threads or default_workers()
    pools = load_pools(names, workers, options.backend)
    try:
        app = App(pools, options, token)
        try:
            server = EdgekitHTTPServer((options.host, options.port), app)
        except OSError as exc:
            raise EdgekitError(f"cannot listen on {options.host}:{options.port}: {exc.strerror or exc}") from None
        stopping = threading.Event()

        def stop(signum, frame):
            if not stopping.is_set():
                stopping.set()
                log(f"{signal.Signals(signum).name}: finishing requests in flight, then exiting")
                threading.Thread(target=server.drain, daemon=True).start()

        previous = ({sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
                    if threading.current_thread() is threading.main_thread() else {})
        reaper = threading.Thread(target=server.tracker.run_reaper, name="edgekit-serve-reaper", daemon=True)
        reaper.start()
        host, port = server.server_address[:2]
        shown = f"[{host}]" if ":" in host else host
        served = [name + (f" (versions {', '.join(app.catalog.versions(name))})"
                          if len(app.catalog.versions(name)) > 1 else "") for name in names]
        log(f"serving {', '.join(served)} on http://{shown}:{port} ({workers} interpreter"
            f"{'s' if workers > 1 else ''} per model{', bearer token required' if token else ''}; "
            "TensorFlow Serving REST /v1, Open Inference Protocol /v2)")
        # a bundle served through a link (a fleet's NAME/current) follows it: the one pool of its name
        watcher = reload.watch(bundles, {n: next(iter(v.values())) for n, v in pools.items() if len(v) == 1},
                               options.backend, log)
        try:
            server.serve_forever(poll_interval=0.2)
        finally:
            if watcher:
                watcher.stop()
            server.server_close()  # waits for the handler threads: requests in flight finish
            server.tracker.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        log("stopped")
        return 0
    finally:
        _close(pools)
