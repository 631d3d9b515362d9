"""The host core, below train, export, verify and devices (and above the runtime, which never imports
it): the error a user can fix, atomic writes, progress lines, library versions, JSON reading.

There is one error root, `edgekit.runtime.errors.EdgekitError`: every error edgekit raises on purpose
is one, with a one-line message; the CLIs print it and exit 2."""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from edgekit.runtime.errors import EdgekitError, first_line, last_line
from edgekit.runtime.units import format_bytes

__all__ = ["EdgekitError", "UserError", "error_reason", "first_line", "format_bytes", "last_line", "now_iso",
           "log", "Progress", "sha256_file", "atomic_write_bytes", "atomic_write_text", "atomic_write_json",
           "atomic_dir", "file_lock", "library_versions", "read_json", "quiet_tensorflow"]

class UserError(EdgekitError):
    """A mistake the user can fix on the host (missing file, bad option, bad data): one line, exit 2."""


def error_reason(exc: BaseException, limit: int = 500) -> str:
    """`Type: the line that says why` for an exception a library raised: the innermost exception of an
    explicit chain (`raise ... from exc`: what a wrapper's message hides), and of a multi-line message
    the line after "error:" (the TFLite converter starts with a location line) or the first line."""
    seen = set()
    while exc.__cause__ is not None and id(exc) not in seen:
        seen.add(id(exc))
        exc = exc.__cause__
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = next((line.split("error:", 1)[1].strip() for line in lines if "error:" in line), None)
    return f"{type(exc).__name__}: {useful or first_line(exc)}"[:limit]


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


def log(message: str) -> None:
    """Progress and summaries go to stderr, so stdout stays clean for --json output."""
    print(message, file=sys.stderr, flush=True)


class Progress:
    """Progress of a job of `total` steps, one line per finished step on stderr:
    `[3/10] text-tflite-int8: 200 samples ... PASS`. The one way long jobs (export's conversions,
    verify's bundles) report where they are; `elapsed` is the seconds since the job started."""

    def __init__(self, total: int, prefix: str = "") -> None:
        self.total, self.prefix, self.done = total, prefix, 0
        self.started = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def step(self, message: str) -> None:
        self.done += 1
        log(f"{self.prefix}[{self.done}/{self.total}] {message}")


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary name in the same folder, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj):
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing) across processes: builds of a shared cache
    (emulator sysroots, the MediaPipe environment) and work that parallel test workers share."""
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Build a directory under a temporary name next to `final`; rename it into place on success.

    An interrupted or failed run leaves no half-written `final` (the temporary folder is removed).
    The one way edgekit writes a folder: bundles, model directories, caches, fixed bundles.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; the result is an ordinary folder
    try:
        yield tmp
        if final.exists():
            if not overwrite:
                raise UserError(f"{final} already exists; remove it or choose another --out")
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def library_versions(names: Iterable[str] = ("numpy", "tensorflow", "keras", "tf_keras", "tf2onnx",
                                               "onnx", "onnxruntime", "ai-edge-litert")) -> dict:
    """Installed versions, read from package metadata (imports nothing heavy)."""
    from importlib import metadata

    versions = {"python": sys.version.split()[0]}
    for name in names:
        for candidate in (name, name.replace("_", "-"), name + "-cpu"):
            try:
                versions[name] = metadata.version(candidate)
                break
            except metadata.PackageNotFoundError:
                continue
    return versions


def read_json(path: str | os.PathLike, what: str) -> dict:
    """Read a JSON file or raise a UserError naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{what} {path} is not valid JSON ({exc})") from None


def quiet_tensorflow() -> None:
    """Silence TensorFlow's C++ start-up chatter before it is imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
