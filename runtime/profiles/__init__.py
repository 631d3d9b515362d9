"""Device profiles: one JSON file per target, `NAME.json` beside this module (fields: README.md here).

The one profile loader. It lives in the runtime (the bottom layer) because the device side reads the
same files (`--device rpi4` supplies default threads and backends); the host's `devices`, `export` and
`verify` use it too. `$EDGEKIT_PROFILES` names another folder of profiles.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from edgekit.runtime.errors import SettingsError

PROFILE_DIR = Path(__file__).resolve().parent

REQUIRED = {
    "name": str, "title": str, "arch": str, "cpu": str, "cores": int, "default_threads": int,
    "backends": list, "preferred": dict, "memory_mb": int, "reference_figures": list,
}
ARCHES = ("aarch64", "armv7l", "x86_64")
# The backends that run each bundle format, in order of preference (the runtime's registry agrees).
FORMAT_BACKENDS = {"tflite": ("litert", "tflite_runtime", "tensorflow"), "onnx": ("onnxruntime",)}
BACKENDS = tuple(b for order in FORMAT_BACKENDS.values() for b in order)
QEMU_REQUIRED = {"binary": str, "cpu": str, "debian_arch": str, "debian_suite": str, "python": str,
                 "python_version": str, "python_platform_tags": list, "wheels": list}
FIGURE_REQUIRED = ("model", "latency_ms", "published_by", "source")


def profile_dir() -> Path:
    return Path(os.environ.get("EDGEKIT_PROFILES") or PROFILE_DIR)


def names() -> list[str]:
    return sorted(p.stem for p in profile_dir().glob("*.json"))


def load(device: str | os.PathLike | dict) -> dict:
    """A validated profile: a dict is checked as is; a path to a .json file is read; a name is looked
    up among the profiles. Anything unknown or invalid raises a SettingsError naming the valid ones."""
    if isinstance(device, dict):
        profile, where = device, "device profile"
    else:
        text = str(device)
        path = Path(text)
        if path.suffix != ".json" or not path.is_file():
            path = profile_dir() / f"{text}.json"
            if not text or "/" in text or not path.is_file():
                raise SettingsError(f"unknown device {text!r}; choose from {', '.join(names()) or 'none'}")
        where = f"device profile {path}"
        try:
            profile = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise SettingsError(f"cannot read {where}: {exc}") from None
    if not isinstance(profile, dict):
        raise SettingsError(f"{where} is not a JSON object")
    problems = validate(profile)
    if problems:
        raise SettingsError(f"{where} is invalid: {'; '.join(problems)}")
    return profile


def load_all() -> list[dict]:
    return [load(n) for n in names()]


def validate(profile: dict) -> list[str]:
    """Problems with a profile (empty list = valid)."""
    problems = []
    for key, kind in REQUIRED.items():
        if key not in profile:
            problems.append(f"missing {key!r}")
        elif not isinstance(profile[key], kind) or isinstance(profile[key], bool):
            problems.append(f"{key!r} must be {kind.__name__}")
    if problems:
        return problems
    if profile["arch"] not in ARCHES:
        problems.append(f"arch {profile['arch']!r} not in {ARCHES}")
    bad = [b for b in profile["backends"] if b not in BACKENDS]
    if bad or not profile["backends"]:
        problems.append(f"backends {bad or '[]'} not in {BACKENDS}")
    if not 1 <= profile["default_threads"] <= profile["cores"]:
        problems.append("default_threads must be between 1 and cores")
    pref = profile["preferred"]
    if pref.get("format") not in FORMAT_BACKENDS or not pref.get("variant"):
        problems.append("preferred must be {format: tflite|onnx, variant: ...}")
    qemu = profile.get("qemu")
    if qemu is not None:
        for key, kind in QEMU_REQUIRED.items():
            if not isinstance(qemu.get(key), kind):
                problems.append(f"qemu.{key} missing or not {kind.__name__}")
    for i, fig in enumerate(profile["reference_figures"]):
        missing = [k for k in FIGURE_REQUIRED if not fig.get(k)]
        if missing:
            problems.append(f"reference_figures[{i}] lacks {', '.join(missing)}")
    return problems


def backend_for(profile: dict, fmt: str) -> str | None:
    """The profile's backend that runs a bundle format, or None when it has no wheel there."""
    return next((b for b in FORMAT_BACKENDS[fmt] if b in profile["backends"]), None)


def format_unsupported_by(profile: dict | None, fmt: str) -> str | None:
    """Why the device cannot run `fmt` at all, or None."""
    if profile is None or backend_for(profile, fmt):
        return None
    return f"device {profile['name']!r} has no {fmt} runtime (backends: {', '.join(profile['backends'])})"
