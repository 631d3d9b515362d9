"""Latency and memory measurement shared by `python -m edgekit.runtime bench` and `edgekit bench` (stdlib + numpy)."""

from __future__ import annotations

import sys
import time

import numpy as np


def time_calls(fn, runs: int, warmup: int = 0) -> np.ndarray:
    """Call `fn()` `warmup` times untimed, then `runs` times; returns each call's milliseconds."""
    for _ in range(warmup):
        fn()
    out = np.empty(runs, dtype=np.float64)
    clock = time.perf_counter
    for i in range(runs):
        t = clock()
        fn()
        out[i] = clock() - t
    return out * 1e3


def time_interleaved(fns: dict, runs: int, warmup: int = 0) -> dict[str, np.ndarray]:
    """Time several callables alternately (a, b, a, b, ...) so that load from other processes hits
    them alike; returns name -> milliseconds per call."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    out = {name: np.empty(runs, dtype=np.float64) for name in fns}
    clock = time.perf_counter
    items = list(fns.items())
    for i in range(runs):
        for name, fn in items:
            t = clock()
            fn()
            out[name][i] = clock() - t
    return {name: ms * 1e3 for name, ms in out.items()}


def summary(ms: np.ndarray) -> dict[str, float]:
    ms = np.asarray(ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"p50": round(float(p50), 4), "p90": round(float(p90), 4), "p99": round(float(p99), 4),
            "mean": round(float(ms.mean()), 4), "min": round(float(ms.min()), 4), "runs": int(ms.size)}


def peak_rss_mb() -> float | None:
    """Peak resident set size of this process so far (None where it cannot be read). On Linux this is
    /proc/self/status VmHWM: `ru_maxrss` survives exec, so a fresh child of a large process (a test
    runner, Keras loaded for --compare-keras) would report its parent's peak."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024, 1)
