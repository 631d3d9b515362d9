"""Runtime settings (threads, XNNPACK, onnxruntime thread pools and graph optimisation), with defaults
from a device profile (`edgekit.runtime.profiles`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from edgekit.runtime import profiles
from edgekit.runtime.errors import SettingsError

GRAPH_OPTIMIZATIONS = ("disable", "basic", "extended", "all")


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
    base = RuntimeSettings(**_profile_defaults(profiles.load(device))) if device is not None else RuntimeSettings()
    explicit = {"threads": threads, "xnnpack": xnnpack, "intra_op_threads": intra_op_threads,
                "inter_op_threads": inter_op_threads, "graph_optimization": graph_optimization}
    return replace(base, **{k: v for k, v in explicit.items() if v is not None})
