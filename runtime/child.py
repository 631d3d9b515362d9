"""The one protocol between edgekit and the child processes it starts (numpy-free, stdlib only).

Work that can crash or hang the process running it (a model file probed before it is trusted, a
converter's calibration, MediaPipe in its own environment, a cold start) runs in a child. The child
ends by printing one line on stdout:

    EDGEKIT-RESULT {"ok": true, "result": ...}
    EDGEKIT-RESULT {"ok": false, "error": "one line that says why"}

`child_main(work)` is the child side; `run(argv, ...)` the parent side, which returns the result or
raises `ChildFailed` with one line: the child's own error, its crash signal, or its timeout. A child
running outside edgekit's environment (MediaPipe's) prints the same line itself.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable

from edgekit.runtime.errors import EdgekitError, first_line, last_line

MARKER = "EDGEKIT-RESULT "


class ChildFailed(EdgekitError):
    """A child process failed, crashed or timed out; the message is one line saying which."""

    def __init__(self, message: str, *, crashed: bool = False, signal_name: str | None = None) -> None:
        super().__init__(message)
        self.crashed = crashed
        self.signal_name = signal_name


def emit(ok: bool, result=None, error: str = "") -> None:
    """The child's last line (flushed)."""
    line = {"ok": True, "result": result} if ok else {"ok": False, "error": " ".join(str(error).split())}
    sys.stdout.write(MARKER + json.dumps(line, default=_plain) + "\n")
    sys.stdout.flush()


def child_main(work: Callable[[], object], *, no_core_dumps: bool = True) -> int:
    """Run `work()` in a child: its return value is the result; an exception is one line and exit 1."""
    if no_core_dumps:
        try:
            import resource

            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash must not leave core files
        except (ImportError, ValueError, OSError):
            pass
    try:
        result = work()
    except EdgekitError as exc:
        emit(False, error=str(exc))
        return 1
    except Exception as exc:  # noqa: BLE001 - anything else is still one line for the parent
        emit(False, error=f"{type(exc).__name__}: {first_line(exc)}")
        return 1
    emit(True, result)
    return 0


def parse(stdout: str | bytes) -> dict | None:
    """The child's result line, or None when it printed none."""
    if isinstance(stdout, bytes):
        stdout = stdout.decode("utf-8", "replace")
    for line in reversed(stdout.splitlines()):
        if line.startswith(MARKER):
            try:
                answer = json.loads(line[len(MARKER):])
            except ValueError:
                return None
            return answer if isinstance(answer, dict) else None
    return None


def run(argv: list[str], *, what: str, input: bytes | None = None, timeout: float | None = None,
        env: dict | None = None, cwd=None):
    """Run a child that speaks this protocol; its result, or ChildFailed (one line)."""
    try:
        proc = subprocess.run(argv, input=input, capture_output=True, timeout=timeout, env=env, cwd=cwd,
                              stdin=None if input is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise ChildFailed(f"{what} ran past {timeout:.0f} s") from None
    answer = parse(proc.stdout)
    if answer is not None and answer.get("ok"):
        return answer.get("result")
    if answer is not None:
        raise ChildFailed(str(answer.get("error") or f"{what} failed"))
    if proc.returncode < 0:
        try:
            name = signal.Signals(-proc.returncode).name
        except ValueError:
            name = f"signal {-proc.returncode}"
        raise ChildFailed(f"{what} crashed ({name})", crashed=True, signal_name=name)
    raise ChildFailed(f"{what} failed (exit {proc.returncode}): {last_line(proc.stderr) or 'no output'}")


def _plain(obj):
    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        np = None
    if np is not None and isinstance(obj, np.generic):
        return obj.item()
    if np is not None and isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
