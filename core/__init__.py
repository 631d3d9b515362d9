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
from typing import TypeVar

from edgekit.runtime.errors import EdgekitError, first_line, last_line

__all__ = ["EdgekitError", "UserError", "first_line", "last_line", "now_iso", "log", "progress", "sha256_file",
           "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_dir", "library_versions",
           "read_json", "quiet_tensorflow"]

T = TypeVar("T")


class UserError(EdgekitError):
    """A mistake the user can fix on the host (missing file, bad option, bad data): one line, exit 2."""


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


def log(message: str) -> None:
    """Progress and summaries go to stderr, so stdout stays clean for --json output."""
    print(message, file=sys.stderr, flush=True)


def progress(items: Iterable[T], desc: str, total: int | None = None, every: int = 1) -> Iterator[T]:
    """Yield items while printing `desc: i/total (elapsed)` lines."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    start = time.perf_counter()
    i = 0
    for i, item in enumerate(items, 1):
        yield item
        if i % every == 0 or i == total:
            of = f"/{total}" if total else ""
            log(f"  {desc}: {i}{of} ({time.perf_counter() - start:.1f} s)")


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
def atomic_dir(final: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Build a directory under a temporary name next to `final`; rename it into place on success.

    An interrupted or failed run leaves no half-written `final` (the temporary folder is removed).
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
