"""Device profiles: one JSON file per target, `NAME.json` beside this module (fields: README.md here).

The one profile loader. It lives in the runtime (the bottom layer) because the device side reads the
same files (`--device rpi4` supplies default threads and backends); the host's `devices`, `export` and
`verify` use it too. `$EDGEKIT_PROFILES` names another folder of profiles.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from edgekit.runtime import formats
from edgekit.runtime.errors import SettingsError

PROFILE_DIR = Path(__file__).resolve().parent

REQUIRED = {
    "name": str, "title": str, "arch": str, "cpu": str, "cores": int, "default_threads": int,
    "backends": list, "preferred": dict, "memory_mb": int, "reference_figures": list,
}
ARCHES = ("aarch64", "armv7l", "x86_64")
# The backends that run each bundle format, in order of preference (runtime/formats, the one registry).
FORMAT_BACKENDS = {f.name: f.backends for f in formats.FORMATS.values()}
BACKENDS = tuple(dict.fromkeys(b for order in FORMAT_BACKENDS.values() for b in order))
# cost_model.format_factor of a format the profile does not name: priced like the format the rates were
# fitted on (a factor of 1), with the profile's `format` uncertainty band (devices/estimate.py).
DEFAULT_FORMAT_FACTOR = 1.0
QEMU_REQUIRED = {"binary": str, "cpu": str, "debian_arch": str, "debian_suite": str, "python": str,
                 "python_version": str, "python_platform_tags": list, "wheels": list}
FIGURE_REQUIRED = ("model", "latency_ms", "published_by", "source")
# `cost_model` (optional; edgekit.devices.estimate): every number with its source in `sources`.
COST_MODEL_NUMBERS = ("gmacs_per_core", "gbytes_per_s_per_core", "op_overhead_us", "parallel_fraction",
                      "dtype_speedup", "uncertainty")
COST_DTYPES = ("fp32", "fp16", "dynamic", "int8", "int16x8")


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
        problems.append(f"preferred must be {{format: {'|'.join(FORMAT_BACKENDS)}, variant: ...}}")
    qemu = profile.get("qemu")
    if qemu is not None:
        for key, kind in QEMU_REQUIRED.items():
            if not isinstance(qemu.get(key), kind):
                problems.append(f"qemu.{key} missing or not {kind.__name__}")
    for i, fig in enumerate(profile["reference_figures"]):
        missing = [k for k in FIGURE_REQUIRED if not fig.get(k)]
        if missing:
            problems.append(f"reference_figures[{i}] lacks {', '.join(missing)}")
    if profile.get("cost_model") is not None:
        problems += validate_cost_model(profile["cost_model"])
    return problems


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def validate_cost_model(model) -> list[str]:
    """Problems with a profile's latency cost model (see devices/estimate.py and docs/estimates.md)."""
    if not isinstance(model, dict):
        return ["cost_model must be an object"]
    problems = []
    sources = model.get("sources") if isinstance(model.get("sources"), dict) else {}
    for key in COST_MODEL_NUMBERS:
        if key not in model:
            problems.append(f"cost_model lacks {key!r}")
        elif not isinstance(sources.get(key), str) or not sources[key].strip():
            problems.append(f"cost_model.sources lacks a source for {key!r}")
    if not isinstance(model.get("basis"), str) or not model.get("basis"):
        problems.append("cost_model.basis must say what the numbers rest on")
    if problems:
        return problems
    rates = model["gmacs_per_core"]
    if not isinstance(rates, dict) or not all(_positive(rates.get(k)) for k in ("conv", "dense")) \
            or not all(_positive(v) for v in rates.values()):
        problems.append("cost_model.gmacs_per_core needs positive conv and dense rates (GMAC/s per core)")
    for key in ("gbytes_per_s_per_core", "op_overhead_us"):
        if not _positive(model[key]):
            problems.append(f"cost_model.{key} must be a positive number")
    parallel = model["parallel_fraction"]
    if not isinstance(parallel, dict) or "default" not in parallel or not all(
            isinstance(v, (int, float)) and 0 <= v <= 1 for v in parallel.values()):
        problems.append("cost_model.parallel_fraction must map classes (and 'default') to 0..1")
    speed = model["dtype_speedup"]
    default = speed.get("default") if isinstance(speed, dict) else None
    if not isinstance(default, dict) or any(not _positive(default.get(d)) for d in COST_DTYPES) or any(
            not isinstance(v, dict) or not all(k in COST_DTYPES and _positive(x) for k, x in v.items())
            for v in speed.values()):
        problems.append(f"cost_model.dtype_speedup.default needs positive factors for {', '.join(COST_DTYPES)}")
    factors = model.get("format_factor", {})
    if "format_factor" in model and not (isinstance(sources.get("format_factor"), str) and sources["format_factor"]):
        problems.append("cost_model.sources lacks a source for 'format_factor'")
    if not isinstance(factors, dict) or any(not _positive(v) for v in factors.values()):
        problems.append("cost_model.format_factor must map formats to positive factors")
    elif set(factors) - set(FORMAT_BACKENDS):
        problems.append(f"cost_model.format_factor names unknown formats {sorted(set(factors) - set(FORMAT_BACKENDS))}")
    band = model["uncertainty"]
    if not isinstance(band, dict) or any(not (_positive(band.get(k)) and band[k] >= 1)
                                         for k in ("calibrated", "dtype", "lstm", "format")):
        problems.append("cost_model.uncertainty needs calibrated, dtype, lstm and format factors >= 1")
    return problems


def format_factor(model: dict, fmt: str) -> float:
    """A cost model's factor for a format (DEFAULT_FORMAT_FACTOR when the profile does not name it)."""
    return float((model.get("format_factor") or {}).get(fmt, DEFAULT_FORMAT_FACTOR))


def backend_for(profile: dict, fmt: str) -> str | None:
    """The profile's backend that runs a bundle format, or None when it has no wheel there."""
    return next((b for b in FORMAT_BACKENDS.get(fmt, ()) if b in profile["backends"]), None)


def format_unsupported_by(profile: dict | None, fmt: str) -> str | None:
    """Why the device cannot run `fmt` at all, or None."""
    if profile is None or backend_for(profile, fmt):
        return None
    return f"device {profile['name']!r} has no {fmt} runtime (backends: {', '.join(profile['backends'])})"
