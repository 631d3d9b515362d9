"""Runtime settings (threads, XNNPACK, onnxruntime thread pools and graph optimisation), with defaults
from a device profile (devices/profiles/NAME.json, read as plain JSON: runtime never imports `devices`)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from runtime.errors import SettingsError

GRAPH_OPTIMIZATIONS = ("disable", "basic", "extended", "all")
# Where device profiles live when the runtime runs from a checkout; EDGEKIT_PROFILES overrides.
PROFILES_DIR = Path(__file__).resolve().parents[1] / "devices" / "profiles"


@dataclass(frozen=True)
class RuntimeSettings:
    threads: int | None = None            # TFLite interpreter threads; None: the backend's default
    xnnpack: bool = True                  # TFLite: apply the default XNNPACK delegate
    intra_op_threads: int | None = None   # onnxruntime; None: `threads`, else the backend's default
    inter_op_threads: int | None = None   # onnxruntime (only used by the parallel execution mode)
    graph_optimization: str = "all"       # onnxruntime: disable | basic | extended | all

    def __post_init__(self) -> None:
        for key in ("threads", "intra_op_threads", "inter_op_threads"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise SettingsError(f"{key} must be a positive integer or None, got {value!r}")
        if not isinstance(self.xnnpack, bool):
            raise SettingsError(f"xnnpack must be True or False, got {self.xnnpack!r}")
        if self.graph_optimization not in GRAPH_OPTIMIZATIONS:
            raise SettingsError(f"graph_optimization {self.graph_optimization!r} is unknown; "
                                f"choose from {', '.join(GRAPH_OPTIMIZATIONS)}")

    @property
    def onnx_intra_op_threads(self) -> int | None:
        return self.intra_op_threads if self.intra_op_threads is not None else self.threads

    def to_dict(self) -> dict:
        return asdict(self)


def read_profile(device: str | os.PathLike | dict) -> dict:
    """A device profile as a dict: a dict is returned as is; a path to a .json file is read; a name is
    looked up in $EDGEKIT_PROFILES or devices/profiles/ beside the runtime package."""
    if isinstance(device, dict):
        return device
    text = str(device)
    path = Path(text)
    if path.suffix != ".json" or not path.is_file():
        folder = Path(os.environ.get("EDGEKIT_PROFILES", PROFILES_DIR))
        path = folder / f"{text}.json"
        if not path.is_file():
            known = sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []
            raise SettingsError(f"unknown device profile {text!r}; known profiles: "
                                f"{', '.join(known) or 'none'} (in {folder})")
    try:
        profile = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SettingsError(f"cannot read device profile {path}: {exc}") from None
    if not isinstance(profile, dict):
        raise SettingsError(f"device profile {path} is not a JSON object")
    return profile


def _profile_defaults(profile: dict) -> dict:
    """Runtime defaults a profile supplies: top-level `default_threads` / `xnnpack` / ..., or the
    same keys inside a `runtime` object."""
    section = {**profile, **(profile.get("runtime") or {})}
    mapping = {"default_threads": "threads", "threads": "threads", "xnnpack": "xnnpack",
               "intra_op_threads": "intra_op_threads", "inter_op_threads": "inter_op_threads",
               "graph_optimization": "graph_optimization"}
    out: dict = {}
    for key, field in mapping.items():
        if section.get(key) is not None:
            out[field] = section[key]
    return out


def make_settings(threads=None, xnnpack=None, intra_op_threads=None, inter_op_threads=None,
                  graph_optimization=None, device=None) -> RuntimeSettings:
    """Explicit arguments win over the device profile's defaults, which win over the built-in ones."""
    base = RuntimeSettings(**_profile_defaults(read_profile(device))) if device is not None else RuntimeSettings()
    explicit = {"threads": threads, "xnnpack": xnnpack, "intra_op_threads": intra_op_threads,
                "inter_op_threads": inter_op_threads, "graph_optimization": graph_optimization}
    return replace(base, **{k: v for k, v in explicit.items() if v is not None})
