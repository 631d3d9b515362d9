"""Device profiles: one JSON file per target in devices/profiles/NAME.json (see profiles/README.md).

The runtime reads the same files by name (default threads, preferred format) without importing this
module, so the field names are the contract; `validate` checks them.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgekit.common import UserError

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"

REQUIRED = {
    "name": str, "title": str, "arch": str, "cpu": str, "cores": int, "default_threads": int,
    "backends": list, "preferred": dict, "memory_mb": int, "reference_figures": list,
}
ARCHES = ("aarch64", "armv7l", "x86_64")
BACKENDS = ("litert", "tflite_runtime", "tensorflow", "onnxruntime")
QEMU_REQUIRED = {"binary": str, "cpu": str, "debian_arch": str, "debian_suite": str, "python": str,
                 "python_version": str, "python_platform_tags": list, "wheels": list}
FIGURE_REQUIRED = ("model", "latency_ms", "published_by", "source")


def names() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.json"))


def load(name: str) -> dict:
    """The profile called `name`; an unknown name raises a UserError listing the valid ones."""
    path = PROFILE_DIR / f"{name}.json"
    if not name or "/" in name or not path.is_file():
        raise UserError(f"unknown device {name!r}; choose from {', '.join(names())}")
    profile = json.loads(path.read_text(encoding="utf-8"))
    problems = validate(profile)
    if problems:
        raise UserError(f"device profile {path} is invalid: {'; '.join(problems)}")
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
    if pref.get("format") not in ("tflite", "onnx") or not pref.get("variant"):
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
    order = {"tflite": ("litert", "tflite_runtime", "tensorflow"), "onnx": ("onnxruntime",)}[fmt]
    return next((b for b in order if b in profile["backends"]), None)
