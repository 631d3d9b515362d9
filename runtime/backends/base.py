"""The `Runner` interface (Polygraphy-style): a context manager that loads a model, describes its
inputs and outputs, runs raw tensors, and closes. Public methods check state and call `*_impl`
methods that each backend overrides; `run` checks the feed against the input metadata first.

Per-call overhead matters (the bench requires the wrapper within 10% of the bare backend call), so
everything the checks need is computed once at activation, and feeds are never copied when they
already have the right dtype and layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgekit.runtime.errors import EdgekitError, InvalidInputError, ModelFileError, first_line


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple            # ints; None for a dynamic dimension
    dtype: np.dtype
    scale: float | None = None        # per-tensor quantization; None when not quantized
    zero_point: int | None = None

    @property
    def quantized(self) -> bool:
        """Integer-quantized activations (int8/uint8/int16 with a scale): never int32 token ids."""
        return self.scale is not None and self.dtype in (np.int8, np.uint8, np.int16)

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype.name,
                "quantization": ({"scale": [self.scale], "zero_point": [self.zero_point]}
                                 if self.scale is not None else None)}


class _Check:
    """Precomputed validation of one input: dtype, rank, fixed dims (batch dim 0 is free)."""

    __slots__ = ("name", "dtype", "rank", "fixed", "floating", "shape_text")

    def __init__(self, info: TensorInfo) -> None:
        self.name = info.name
        self.dtype = info.dtype
        self.rank = len(info.shape)
        self.fixed = tuple((i, d) for i, d in enumerate(info.shape) if i > 0 and d is not None)
        self.floating = info.dtype.kind == "f"
        self.shape_text = "[" + ", ".join("N" if i == 0 else ("?" if d is None else str(d))
                                          for i, d in enumerate(info.shape)) + "]"

    def __call__(self, value) -> np.ndarray:
        if type(value) is not np.ndarray:
            if not hasattr(value, "__array__") and not isinstance(value, (list, tuple)):
                raise InvalidInputError(f"input {self.name!r}: expected an array, got {type(value).__name__}")
            try:
                value = np.asarray(value)
            except (ValueError, TypeError) as exc:
                raise InvalidInputError(f"input {self.name!r}: not a rectangular array ({first_line(exc)})") from None
        if value.dtype != self.dtype:
            raise InvalidInputError(f"input {self.name!r}: expected dtype {self.dtype.name}, got "
                                    f"{value.dtype.name} (convert with .astype(np.{self.dtype.name}))")
        shape = value.shape
        if len(shape) != self.rank:
            raise InvalidInputError(f"input {self.name!r}: expected rank {self.rank} {self.shape_text}, "
                                    f"got shape {list(shape)}")
        for i, d in self.fixed:
            if shape[i] != d:
                raise InvalidInputError(f"input {self.name!r}: expected shape {self.shape_text}, "
                                        f"got {list(shape)} (dimension {i} must be {d})")
        if shape[0] == 0 or value.size == 0:
            raise InvalidInputError(f"input {self.name!r}: empty batch (shape {list(shape)})")
        # NaN/inf propagate through a sum; only a non-finite sum pays for the elementwise check
        # (summing in float64 keeps float32 data from overflowing; the full check clears the rest).
        if self.floating and not np.isfinite(np.add.reduce(value, axis=None, dtype=np.float64)):
            if not np.isfinite(value).all():
                raise InvalidInputError(f"input {self.name!r}: contains NaN or infinity")
        if not value.flags.c_contiguous:
            value = np.ascontiguousarray(value)
        return value


class Runner:
    """Base class. Use as `with Runner(...) as r: r.run({...})`. Subclasses set `backend` and
    implement `activate_impl`, `run_impl` (one batch that the model accepts), `deactivate_impl`."""

    backend = "base"
    thread_safe = False      # True when concurrent run() calls are safe without a lock

    def __init__(self, model: bytes, settings=None, name: str = "model") -> None:
        from edgekit.runtime.settings import RuntimeSettings

        self.model = model
        self.settings = settings or RuntimeSettings()
        self.name = name
        self.is_active = False
        self._inputs: list[TensorInfo] = []
        self._outputs: list[TensorInfo] = []
        self._checks: list[_Check] = []
        self._single_name: str | None = None
        self._batch_one = False

    # -- lifecycle -------------------------------------------------------------------------------
    def activate(self) -> Runner:
        if self.is_active:
            raise EdgekitError(f"{self.backend} runner for {self.name} is already active")
        try:
            self.activate_impl()
        except (EdgekitError, ImportError):
            raise
        except Exception as exc:  # the backend rejected the file: one line, not its traceback
            raise ModelFileError(f"{self.backend} cannot load {self.name}: {first_line(exc)}") from None
        self._inputs = list(self.get_input_metadata_impl())
        self._outputs = list(self.get_output_metadata_impl())
        if not self._inputs or not self._outputs:
            raise ModelFileError(f"{self.name} has no {'inputs' if not self._inputs else 'outputs'}")
        self._checks = [_Check(i) for i in self._inputs]
        self._single_name = self._inputs[0].name if len(self._inputs) == 1 else None
        # Batch-1 models (TFLite conversions) take a larger batch row by row.
        self._batch_one = all(i.shape and i.shape[0] == 1 for i in self._inputs)
        self.is_active = True
        return self

    def deactivate(self) -> None:
        if self.is_active:
            self.is_active = False
            self.deactivate_impl()

    close = deactivate

    def __enter__(self) -> Runner:
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.deactivate()

    def __del__(self) -> None:
        try:
            self.deactivate()
        except Exception:
            pass

    # -- metadata --------------------------------------------------------------------------------
    def _require_active(self) -> None:
        if not self.is_active:
            raise EdgekitError(f"{self.backend} runner for {self.name} is not active: use it in a "
                               "`with` block or call activate() first")

    @property
    def inputs(self) -> list[TensorInfo]:
        self._require_active()
        return self._inputs

    @property
    def outputs(self) -> list[TensorInfo]:
        self._require_active()
        return self._outputs

    @property
    def input_checks(self) -> list:
        """Per-input validators (callable: array -> validated array), in input order."""
        self._require_active()
        return self._checks

    def describe(self) -> dict:
        return {"backend": self.backend, "inputs": [i.to_dict() for i in self.inputs],
                "outputs": [o.to_dict() for o in self.outputs], "settings": self.settings.to_dict()}

    # -- inference -------------------------------------------------------------------------------
    def check_feed(self, feed) -> list[np.ndarray]:
        """Feed (dict name -> array, or one array for a single-input model, or a list in input
        order) as a list of validated arrays in input order."""
        self._require_active()
        if isinstance(feed, dict):
            if len(feed) != len(self._checks) or any(c.name not in feed for c in self._checks):
                raise InvalidInputError(f"feed has inputs {sorted(map(str, feed))}, the model expects "
                                        f"{[c.name for c in self._checks]}")
            arrays = [c(feed[c.name]) for c in self._checks]
        elif isinstance(feed, (list, tuple)) and len(self._checks) > 1:
            if len(feed) != len(self._checks):
                raise InvalidInputError(f"feed has {len(feed)} arrays, the model expects {len(self._checks)}")
            arrays = [c(v) for c, v in zip(self._checks, feed)]
        elif self._single_name is not None:
            arrays = [self._checks[0](feed)]
        else:
            raise InvalidInputError(f"the model has {len(self._checks)} inputs: pass a dict name -> array")
        if len(arrays) > 1 and len({a.shape[0] for a in arrays}) > 1:
            raise InvalidInputError(f"inputs have different batch sizes: {[a.shape[0] for a in arrays]}")
        return arrays

    def run(self, feed) -> dict[str, np.ndarray]:
        """Run raw tensors: returns {output name: array} in output order, batch first."""
        arrays = self.check_feed(feed)
        return self.run_checked(arrays)

    def run_checked(self, arrays: list[np.ndarray]) -> dict[str, np.ndarray]:
        """Run arrays that `check_feed` already validated."""
        n = arrays[0].shape[0]
        if n == 1 or not self._batch_one:
            results = self.run_impl(arrays)
        else:
            rows = [self.run_impl([a[i:i + 1] for a in arrays]) for i in range(n)]
            results = [np.concatenate([r[k] for r in rows]) for k in range(len(self._outputs))]
        return {o.name: r for o, r in zip(self._outputs, results)}

    def bare_call(self, feed):
        """A zero-argument callable doing only the backend's own calls on `feed` (no checks, no
        wrapper): the baseline the bench compares `run` with."""
        arrays = self.check_feed(feed)
        return self.bare_call_impl(arrays)

    # -- for subclasses ----------------------------------------------------------------------------
    def activate_impl(self) -> None:
        raise NotImplementedError

    def get_input_metadata_impl(self) -> list[TensorInfo]:
        raise NotImplementedError

    def get_output_metadata_impl(self) -> list[TensorInfo]:
        raise NotImplementedError

    def run_impl(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    def bare_call_impl(self, arrays: list[np.ndarray]):
        raise NotImplementedError

    def deactivate_impl(self) -> None:
        raise NotImplementedError
