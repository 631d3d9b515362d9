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
from pathlib import Path

import numpy as np

from edgekit.runtime import profiles
from edgekit.runtime.backends import FORMAT_BACKENDS, create_runner, is_available
from edgekit.runtime.bundle import Bundle, read_bundle
from edgekit.runtime.errors import EdgekitError, InvalidInputError, ModelFileError
from edgekit.runtime.heads import Prediction
from edgekit.runtime.kinds import flat_outputs, kind_of, make_preprocessor
from edgekit.runtime.settings import make_settings


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
        self.kind = kind_of(bundle.task)
        self._preprocessor = None
        self._input = runner.inputs[0]
        self._output = runner.outputs[0]
        labels = bundle.labels
        classes = self._output.shape[-1] if self._output.shape and len(runner.outputs) == 1 else None
        if labels is not None and classes is not None and len(labels) != classes:
            raise ModelFileError(f"{bundle.path}: manifest lists {len(labels)} labels but the model "
                                 f"outputs {classes} classes; re-export the bundle")
        self.labels = labels or ([str(i) for i in range(classes)] if classes else None)
        manifest = bundle.manifest or {}
        # Public names (the model's own input/output names, as the manifest lists them) of the
        # runner's tensors, whose names in a .tflite file are e.g. "serving_default_x:0".
        self.input_names = _public_names(runner.inputs, manifest.get("inputs"))
        self.output_names = _public_names(runner.outputs, manifest.get("outputs"))
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
        if y.dtype.kind in "iub":  # integer outputs (ids, counts) stay as the model declares them
            return y
        return y.astype(np.float32, copy=False)

    def prepare(self, x) -> list[np.ndarray]:
        """Preprocessed inputs -> the arrays the runner takes (quantized where the model's input is
        integer-quantized), validated against the input metadata."""
        runner = self.runner
        checks = runner.input_checks
        if isinstance(x, dict):
            if len(x) == 1 and len(checks) == 1:
                return [self._to_model_input(next(iter(x.values())), self._input, checks[0])]
            feed = []
            for name, info, check in zip(self.input_names, runner.inputs, checks):
                value = x[name] if name in x else x[info.name] if info.name in x else _missing(name)
                feed.append(self._to_model_input(value, info, check))
            return feed
        if len(checks) != 1:
            raise InvalidInputError(f"the model has {len(checks)} inputs: pass a dict name -> array")
        return [self._to_model_input(x, self._input, checks[0])]

    def predict_outputs(self, x) -> dict[str, np.ndarray]:
        """Already-preprocessed inputs (one array, or a dict input name -> array; batch first) ->
        every output by name, batch first: float32 (dequantized where the model's output is
        integer-quantized), integer outputs as the model declares them."""
        outputs = self.runner.run_checked(self.prepare(x))
        return {name: self._from_model_output(outputs[info.name], info)
                for name, info in zip(self.output_names, self.runner.outputs)}

    def predict_tensors(self, x) -> np.ndarray:
        """Already-preprocessed inputs (batch first; float features, or int token ids; a dict input
        name -> array for several inputs) -> float32 outputs, batch first: the model's output, or for
        several outputs each one flattened per sample and concatenated in name order (the form verify
        and golden files compare; `predict_outputs` gives them by name). Quantizes integer-quantized
        inputs with the model's own scale/zero point and dequantizes outputs."""
        if len(self.runner.outputs) == 1:
            outputs = self.runner.run_checked(self.prepare(x))
            return self._from_model_output(outputs[self._output.name], self._output).astype(np.float32, copy=False)
        return flat_outputs(self.predict_outputs(x))

    def example_tensors(self, batch: int = 1, seed: int = 0) -> np.ndarray | dict:
        """Synthetic preprocessed inputs for benchmarks and smoke tests (edgekit.runtime.synthetic):
        one array for a one-input model, else a dict by input name."""
        from edgekit.runtime.synthetic import synthetic_inputs

        feed = dict(zip(self.input_names, synthetic_inputs(self.runner.inputs, batch, seed).values()))
        return next(iter(feed.values())) if len(feed) == 1 else feed

    # -- raw inputs ------------------------------------------------------------------------------
    @property
    def preprocessor(self):
        if self._preprocessor is None:
            params = self.bundle.preprocessing
            if params is None:
                return None
            self._preprocessor = make_preprocessor(params, self.bundle.path if self.bundle.path.is_dir()
                                                   else self.bundle.path.parent)
        return self._preprocessor

    def preprocess(self, raw_inputs):
        """Raw inputs -> model inputs through the bundle's preprocessing; tensors (one array, or a
        dict input name -> array) pass through for a bundle without preprocessing."""
        preprocessor = self.preprocessor
        if preprocessor is None:  # a tensor model: inputs are already tensors
            if isinstance(raw_inputs, dict):
                return {name: np.asarray(a) for name, a in raw_inputs.items()}
            if raw_inputs is None or (not isinstance(raw_inputs, np.ndarray) and len(raw_inputs) == 0):
                raise InvalidInputError("no inputs given")
            return np.asarray(raw_inputs)
        if isinstance(raw_inputs, (str, bytes, os.PathLike)):
            raw_inputs = [raw_inputs]
        if isinstance(raw_inputs, np.ndarray) and raw_inputs.ndim in (1, 3):
            raw_inputs = [raw_inputs]  # one waveform / one image
        if raw_inputs is None or (not isinstance(raw_inputs, np.ndarray) and len(raw_inputs) == 0):
            raise InvalidInputError("no inputs given")
        return preprocessor(list(raw_inputs))  # each kind's preprocessor refuses bad items (empty texts, ...)

    def predict(self, raw_inputs):
        """Raw inputs (texts, images as uint8 HWC arrays or paths, waveforms or .wav paths; tensors
        for a bundle without preprocessing) -> what the bundle's kind makes of the outputs
        (runtime/kinds.py): one Prediction per input for a classifier, else the outputs by name."""
        return self.kind.postprocess(self, self.predict_outputs(self.preprocess(raw_inputs)))

    def listen(self, source, rate: int | None = None):
        """Words in a recording or stream of any length (speech bundles): a generator of
        `Detection(start, end, label, confidence)`. `source`: a WAV path (any rate and format the
        reader takes), or an iterable of 1-D sample blocks (float in [-1, 1] or int16, mono) at `rate`
        Hz (default: the model's rate). Memory does not grow with the length; see runtime/listen.py."""
        from edgekit.runtime.listen import listen

        return listen(self, source, rate)

    def postprocess(self, probs: np.ndarray) -> list[Prediction]:
        """Float outputs of the (first) output -> Predictions by the bundle's kind."""
        return self.kind.postprocess(self, {self._output.name: probs})


def _public_names(infos, declared) -> list[str]:
    """The manifest's name of each runner tensor (matched by tensor name, else by name), else its own."""
    by_tensor = {}
    for spec in declared if isinstance(declared, list) else []:
        if isinstance(spec, dict) and isinstance(spec.get("name"), str):
            by_tensor[str(spec.get("tensor_name") or spec["name"])] = spec["name"]
    return [by_tensor.get(info.name, info.name) for info in infos]


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


def load_converted(path: str | os.PathLike, manifest: dict, threads: int | None = 1) -> EdgeModel:
    """A model file that is not a bundle yet, with the manifest it will get (at least its `inputs` and
    `outputs` with their public names): what export's after-conversion check runs, through the same
    runner, settings and kernels as a device (the format's first backend, XNNPACK on for TFLite).
    No sandbox probe: export converts and checks in a child process already."""
    import hashlib

    from edgekit.runtime import formats

    path = Path(path)
    fmt = formats.by_suffix(path)
    if fmt is None:
        raise ModelFileError(f"{path}: not a model file ({formats.suffixes()})")
    data = path.read_bytes()
    fmt.check_bytes(data, path)
    bundle = Bundle(path, path, fmt.name, data, hashlib.sha256(data).hexdigest(), manifest, trusted=True)
    settings = make_settings(threads=threads)
    runner = create_runner(fmt.name, data, settings=settings, name=path.name)
    try:
        return EdgeModel(bundle, runner, settings)
    except EdgekitError:
        runner.deactivate()
        raise
