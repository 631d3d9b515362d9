"""A cached Python environment with MediaPipe 0.10.21, for the code that must run inside MediaPipe:
writing TFLite Model Metadata at export and the phone check (devices/phone.py).

Why a separate environment: mediapipe 0.10.21 pins numpy<2 while TensorFlow here needs numpy 2, and
newer MediaPipe releases (0.10.35, 1.2.x) fail to import their Python metadata writer
(docs/conversion-facts.md). The environment is a venv made from the host's Python under
($XDG_CACHE_HOME or ~/.cache)/edgekit/mediapipe/<key>/, built once (a pip download of ~100 MB from
the configured package index) under a temporary name and renamed into place when complete, so an
interrupted build leaves nothing half-made; afterwards everything runs offline.

Only what the Tasks API and the metadata writer import is installed: mediapipe with --no-deps, then
numpy<2, protobuf 4, OpenCV (headless) and matplotlib (imported by `mediapipe/__init__`), without
jax/jaxlib/sentencepiece/sounddevice that the wheel also lists but these APIs never import.

The scripts run there (export/mediapipe_tasks.py) take a JSON request and print one JSON line.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edgekit.core import UserError, atomic_dir, file_lock, log
from edgekit.runtime import child
from edgekit.runtime.errors import last_line

MEDIAPIPE_VERSION = "0.10.21"
# Installed with --no-deps: its own requirements pull jax, jaxlib, sentencepiece, sounddevice.
MAIN_PACKAGE = f"mediapipe=={MEDIAPIPE_VERSION}"
# What mediapipe's Tasks API and metadata writer import, at versions measured to work with 0.10.21.
PACKAGES = ["numpy==1.26.4", "protobuf==4.25.9", "absl-py==2.5.1", "attrs==26.1.0",
            "flatbuffers==25.12.19", "opencv-python-headless==4.10.0.84", "matplotlib==3.9.4"]
SCRIPT = Path(__file__).with_name("mediapipe_tasks.py")
DISABLE_VARIABLE = "EDGEKIT_MEDIAPIPE"   # "off": never build or use the environment
RUN_TIMEOUT_S = 900


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "edgekit" / "mediapipe"


def env_dir() -> Path:
    key = hashlib.sha256(repr([MAIN_PACKAGE, PACKAGES]).encode()).hexdigest()[:10]
    return cache_dir() / f"{MEDIAPIPE_VERSION}-py{sys.version_info[0]}{sys.version_info[1]}-{key}"


def disabled() -> bool:
    return os.environ.get(DISABLE_VARIABLE, "").lower() in ("off", "0", "no", "false")


def python_path(directory: Path) -> Path:
    return directory / "bin" / "python"


def find() -> Path | None:
    """The environment's Python when it is already built (never downloads)."""
    final = env_dir()
    return python_path(final) if (final / ".complete").is_file() else None


def _locked():
    return file_lock(cache_dir() / ".build.lock")


def _pip(python: Path, args: list[str], what: str) -> None:
    argv = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
            "--no-input", *args]
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        errors = [l for l in (proc.stderr + proc.stdout).splitlines() if l.startswith("ERROR")]
        raise UserError(f"installing {what} into the MediaPipe environment failed (the first run needs "
                        f"the package index): {(errors[-1] if errors else last_line(proc.stderr)).strip()}")


def ensure() -> Path:
    """The environment's Python, building the environment on first use (UserError when it cannot)."""
    if disabled():
        raise UserError(f"the MediaPipe environment is turned off ({DISABLE_VARIABLE}=off)")
    found = find()
    if found:
        return found
    final = env_dir()
    with _locked():
        if not (final / ".complete").is_file():
            log(f"mediapipe: building a MediaPipe {MEDIAPIPE_VERSION} environment in {final} (first run only)")
            start = time.perf_counter()
            with atomic_dir(final) as staging:
                proc = subprocess.run([sys.executable, "-m", "venv", str(staging)], capture_output=True,
                                      text=True)
                if proc.returncode != 0:
                    raise UserError(f"python -m venv failed: {last_line(proc.stderr)}")
                _pip(python_path(staging), ["--no-deps", MAIN_PACKAGE], MAIN_PACKAGE)
                _pip(python_path(staging), PACKAGES, ", ".join(PACKAGES))
            # The venv's scripts hold the path it was built at: rewritten after the rename, and only
            # then marked complete (find() trusts nothing else).
            _rewrite_paths(final, str(staging), str(final))
            (final / ".complete").write_text(" ".join([MAIN_PACKAGE, *PACKAGES]) + "\n")
            log(f"  MediaPipe environment ready in {time.perf_counter() - start:.0f} s")
    return python_path(final)


def _rewrite_paths(final: Path, old: str, new: str) -> None:
    """Rewrite the absolute build path in a moved venv's scripts and pyvenv.cfg."""
    for path in [final / "pyvenv.cfg", *(final / "bin").iterdir()]:
        if path.is_file() and not path.is_symlink():
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue
            if old in text:
                path.write_text(text.replace(old, new), encoding="utf-8")


def run(action: str, request: dict, timeout: float = RUN_TIMEOUT_S) -> dict:
    """Run `action` of export/mediapipe_tasks.py in the environment; return its answer (the child
    protocol of edgekit/runtime/child.py). Raises UserError with one line when the environment or the
    action fails."""
    python = ensure()
    with tempfile.TemporaryDirectory(prefix="edgekit-mediapipe-") as tmp:
        request_path = Path(tmp) / "request.json"
        request_path.write_text(json.dumps(request), encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
        env.update(PYTHONNOUSERSITE="1", GLOG_minloglevel="2", TF_CPP_MIN_LOG_LEVEL="2")
        try:
            return child.run([str(python), str(SCRIPT), action, str(request_path)], cwd=tmp, env=env,
                             timeout=timeout, what=f"MediaPipe {action}")
        except child.ChildFailed as exc:
            raise UserError(f"MediaPipe {action} failed: {exc}") from None
