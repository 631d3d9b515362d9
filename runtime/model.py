"""`runtime.load(BUNDLE) -> EdgeModel`: preprocessing, (de)quantization and labels around one Runner.

    with runtime.load("bundles/text-tflite-int8", threads=2) as model:
        model.predict(["free entry, claim your prize now"])     # list[Prediction]
        model.predict_tensors(x)                                # float probabilities, batch first
        model.runner.run({"tokens": x})                         # raw tensors

Thread safety: `predict` / `predict_tensors` may be called from many threads on one model. The
TFLite runners serialise interpreter access with a lock; onnxruntime sessions are thread-safe; the
rest of this class keeps no per-call state.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from edgekit.runtime import profiles
from edgekit.runtime.backends import FORMAT_BACKENDS, create_runner, is_available
from edgekit.runtime.bundle import Bundle, read_bundle
from edgekit.runtime.errors import EdgekitError, InvalidInputError, ModelFileError
from edgekit.runtime.settings import make_settings


@dataclass
class Prediction:
    label: str
    index: int
    probabilities: dict[str, float]                  # label -> probability (per utterance for speech)
    frame_labels: list[str] | None = None            # speech: top-1 label per frame
    frame_probabilities: np.ndarray | None = field(default=None, repr=False)  # speech: [T, C]

    @property
    def score(self) -> float:
        return self.probabilities[self.label]

    def top(self, k: int = 3) -> list[tuple[str, float]]:
        return sorted(self.probabilities.items(), key=lambda kv: -kv[1])[:max(1, int(k))]

    def to_dict(self, top_k: int | None = None) -> dict:
        out = {"label": self.label, "index": self.index, "score": self.score,
               "probabilities": dict(self.top(top_k)) if top_k else self.probabilities}
        if self.frame_labels is not None:
            out["frame_labels"] = self.frame_labels
        return out


def _quantize(x: np.ndarray, scale: float, zero_point: int, dtype: np.dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    q = np.rint(x / np.float32(scale)) + np.float32(zero_point)
    np.clip(q, info.min, info.max, out=q)
    return q.astype(dtype)


class EdgeModel:
    """A loaded bundle: use as a context manager (or call close())."""

    def __init__(self, bundle: Bundle, runner, settings) -> None:
        self.bundle = bundle
        self.runner = runner
        self.settings = settings
        self._preprocessor = None
        self._input = runner.inputs[0]
        self._output = runner.outputs[0]
        classes = self._output.shape[-1] if self._output.shape else None
        labels = bundle.labels
        if labels is not None and classes is not None and len(labels) != classes:
            raise ModelFileError(f"{bundle.path}: manifest lists {len(labels)} labels but the model "
                                 f"outputs {classes} classes; re-export the bundle")
        self.labels = labels or ([str(i) for i in range(classes)] if classes else None)
        self._check_manifest_io()

    def _check_manifest_io(self) -> None:
        """A manifest whose tensor dtypes disagree with the model it vouches for is not trustworthy."""
        declared = (self.bundle.manifest or {}).get("inputs")
        if not isinstance(declared, list) or len(declared) != len(self.runner.inputs):
            return
        for spec, info in zip(declared, self.runner.inputs):
            dtype = spec.get("dtype") if isinstance(spec, dict) else None
            if isinstance(dtype, str) and dtype != info.dtype.name:
                raise ModelFileError(f"{self.bundle.path}: manifest says input {info.name!r} is {dtype} "
                                     f"but the model file has {info.dtype.name}; re-export the bundle")

    # -- lifecycle -------------------------------------------------------------------------------
    def close(self) -> None:
        self.runner.deactivate()

    def __enter__(self) -> EdgeModel:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def backend(self) -> str:
        return self.runner.backend

    def describe(self) -> dict:
        return {"bundle": str(self.bundle.path), "format": self.bundle.format, "variant": self.bundle.variant,
                "task": self.bundle.task, "labels": self.labels, "trusted": self.bundle.trusted,
                **self.runner.describe()}

    # -- tensors ---------------------------------------------------------------------------------
    def _to_model_input(self, x, info, check) -> np.ndarray:
        x = np.asarray(x)
        if info.quantized:
            if x.dtype.kind != "f":
                raise InvalidInputError(f"input {info.name!r}: expected float features (the model "
                                        f"quantizes them to {info.dtype.name}), got {x.dtype.name}")
            x = x.astype(np.float32, copy=False)
            if not np.isfinite(x).all():
                raise InvalidInputError(f"input {info.name!r}: contains NaN or infinity")
            x = _quantize(x, info.scale, info.zero_point, info.dtype)
        elif x.dtype != info.dtype:
            if info.dtype.kind in "iu":
                if x.dtype.kind == "f":
                    if not np.isfinite(x).all() or not np.array_equal(x, np.rint(x)):
                        raise InvalidInputError(f"input {info.name!r}: expected integer ids "
                                                f"({info.dtype.name}), got non-integer {x.dtype.name} values")
                elif x.dtype.kind not in "iub":
                    raise InvalidInputError(f"input {info.name!r}: expected {info.dtype.name}, got {x.dtype.name}")
                limits = np.iinfo(info.dtype)
                if x.size and (x.min() < limits.min or x.max() > limits.max):
                    raise InvalidInputError(f"input {info.name!r}: values outside the {info.dtype.name} range")
            elif x.dtype.kind not in "fiub":
                raise InvalidInputError(f"input {info.name!r}: expected {info.dtype.name}, got {x.dtype.name}")
            x = x.astype(info.dtype)
        return check(x)

    def _from_model_output(self, y: np.ndarray, info) -> np.ndarray:
        if info.quantized:
            return ((y.astype(np.float32) - np.float32(info.zero_point)) * np.float32(info.scale))
        return y.astype(np.float32, copy=False)

    def prepare(self, x) -> list[np.ndarray]:
        """Preprocessed inputs -> the arrays the runner takes (quantized where the model's input is
        integer-quantized), validated against the input metadata."""
        runner = self.runner
        checks = runner.input_checks
        if isinstance(x, dict):
            return [self._to_model_input(x[i.name] if i.name in x else _missing(i.name), i, c)
                    for i, c in zip(runner.inputs, checks)]
        if len(checks) != 1:
            raise InvalidInputError(f"the model has {len(checks)} inputs: pass a dict name -> array")
        return [self._to_model_input(x, self._input, checks[0])]

    def predict_tensors(self, x) -> np.ndarray:
        """Already-preprocessed inputs (batch first; float features, or int token ids) -> float32
        probabilities of the first output, batch first. Quantizes integer-quantized inputs with the
        model's own scale/zero point and dequantizes outputs."""
        outputs = self.runner.run_checked(self.prepare(x))
        return self._from_model_output(outputs[self._output.name], self._output)

    def example_tensors(self, batch: int = 1, seed: int = 0) -> np.ndarray | dict:
        """Synthetic preprocessed inputs for benchmarks and smoke tests: standard-normal features
        (halved), or token ids 0/1 (padding / out-of-vocabulary, valid for any vocabulary)."""
        rng = np.random.default_rng(seed)
        feed = {}
        for info in self.runner.inputs:
            shape = (batch,) + tuple(d if d else 1 for d in info.shape[1:])
            if info.quantized or info.dtype.kind == "f":
                feed[info.name] = (rng.standard_normal(shape) * 0.5).astype(np.float32)
            else:
                feed[info.name] = rng.integers(0, 2, size=shape).astype(info.dtype)
        return next(iter(feed.values())) if len(feed) == 1 else feed

    # -- raw inputs ------------------------------------------------------------------------------
    @property
    def preprocessor(self):
        if self._preprocessor is None:
            params = self.bundle.preprocessing
            if params is None:
                return None
            from edgekit.runtime.preprocess import make_preprocessor  # lazy: only models with raw inputs

            self._preprocessor = make_preprocessor(params, self.bundle.path if self.bundle.path.is_dir()
                                                   else self.bundle.path.parent)
        return self._preprocessor

    def preprocess(self, raw_inputs) -> np.ndarray:
        if isinstance(raw_inputs, (str, bytes, os.PathLike)):
            raw_inputs = [raw_inputs]
        if isinstance(raw_inputs, np.ndarray) and self.preprocessor is not None and raw_inputs.ndim in (1, 3):
            raw_inputs = [raw_inputs]  # one waveform / one image
        if raw_inputs is None or (not isinstance(raw_inputs, np.ndarray) and len(raw_inputs) == 0):
            raise InvalidInputError("no inputs given")
        preprocessor = self.preprocessor
        if preprocessor is None:  # a bare model file: inputs are already tensors
            return np.asarray(raw_inputs)
        for i, item in enumerate(raw_inputs):
            if isinstance(item, str) and self.bundle.task == "text" and not item.strip():
                raise InvalidInputError(f"text input {i} is empty")
        return preprocessor(list(raw_inputs))

    def predict(self, raw_inputs) -> list[Prediction]:
        """Raw inputs (texts, images as uint8 HWC arrays or paths, waveforms or .wav paths; tensors
        for a bundle without preprocessing) -> one Prediction per input."""
        probs = self.predict_tensors(self.preprocess(raw_inputs))
        return self.postprocess(probs)

    def postprocess(self, probs: np.ndarray) -> list[Prediction]:
        labels = self.labels or [str(i) for i in range(probs.shape[-1])]
        if probs.ndim == 3:  # speech: [N, T, C] per-frame probabilities -> per-utterance label
            from edgekit.runtime.preprocess import utterance_probs

            utterance = np.asarray(utterance_probs(probs, self.bundle.preprocessing or {}), dtype=np.float64)
            results = []
            for frames, row in zip(probs, utterance):
                idx = int(np.argmax(row))
                results.append(Prediction(labels[idx], idx, _as_dict(labels, row),
                                          [labels[int(j)] for j in np.argmax(frames, axis=-1)], frames))
            return results
        rows = probs.reshape(probs.shape[0], -1)
        return [Prediction(labels[int(np.argmax(r))], int(np.argmax(r)), _as_dict(labels, r)) for r in rows]


def _as_dict(labels: list[str], row: np.ndarray) -> dict[str, float]:
    return {label: float(p) for label, p in zip(labels, row)}


def _missing(name: str):
    raise InvalidInputError(f"feed lacks input {name!r}")


def _profile_backends(device, fmt: str) -> list[str]:
    if device is None:
        return []
    listed = profiles.load(device)["backends"]
    return [b for b in listed if b in FORMAT_BACKENDS.get(fmt, ()) and is_available(b)]


def load(path: str | os.PathLike, backend: str | None = None, threads: int | None = None,
         xnnpack: bool | None = None, intra_op_threads: int | None = None,
         inter_op_threads: int | None = None, device=None, sandbox: bool | None = None,
         graph_optimization: str | None = None) -> EdgeModel:
    """Load a bundle folder (or a bare .tflite/.onnx file) and return an EdgeModel.

    backend: None/"auto" (first installed of litert, tflite_runtime, tensorflow for .tflite;
    onnxruntime for .onnx; a device profile's `backends` list goes first), or a name.
    threads/xnnpack/intra_op_threads/inter_op_threads/graph_optimization: None takes the device
    profile's default (`default_threads`, ...), else the backend's (xnnpack on).
    sandbox: None probes the file in a child process only when edgekit did not hash it (no
    manifest); True always; False never.
    """
    settings = make_settings(threads=threads, xnnpack=xnnpack, intra_op_threads=intra_op_threads,
                             inter_op_threads=inter_op_threads, graph_optimization=graph_optimization,
                             device=device)
    bundle = read_bundle(path)  # sha256 checked here, before any backend sees the bytes
    if backend in (None, "auto"):
        preferred = _profile_backends(device, bundle.format)
        backend = preferred[0] if preferred else None
    name = bundle.model_path.name if bundle.manifest is None else f"{bundle.path.name}/{bundle.model_path.name}"
    if sandbox is None:
        sandbox = not bundle.trusted
    if sandbox:
        from edgekit.runtime.sandbox import probe

        probe(bundle.model_bytes, bundle.format, backend, name, settings)
    runner = create_runner(bundle.format, bundle.model_bytes, settings=settings, backend=backend, name=name)
    try:
        return EdgeModel(bundle, runner, settings)
    except EdgekitError:
        runner.deactivate()
        raise
