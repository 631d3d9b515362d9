"""Model kinds, registered once: what a bundle's `task` means on the device side.

A kind holds what differs between text, image, speech and a user's own model (`tensor`):
- `preprocessor(params, assets_dir)`: the numpy twin of the manifest's `preprocessing` block
  (None for a kind whose inputs are already tensors);
- `read_inputs(model, items)`: how `predict` on the command line turns its arguments into inputs;
- `postprocess(model, outputs)`: float outputs by name -> what `EdgeModel.predict` returns;
- `per_frame`: outputs are per frame ([N, T, C]) and judged per utterance;
- `gate_overrides`: limits of the tolerance table (runtime/gates.py) that differ for this kind.

`kind_of(task)` finds a kind; a bundle without a task (a bare .tflite/.onnx file) is a tensor model.
Adding a kind is one class here plus one entry in KINDS (and its training side in train/kinds.py).

Several inputs or outputs: a batch of inputs is one array or a mapping input name -> array
(`batch_size`, `take`); a model's outputs compare as one array, each output flattened per sample and
concatenated in name order (`flat_outputs`), which is what verify and golden files store.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgekit.runtime.errors import InvalidInputError

# --- batches of one or several inputs ---------------------------------------------------------------


def batch_size(x) -> int:
    """Samples in a batch: one array, or a mapping input name -> array (all the same length)."""
    if isinstance(x, dict):
        sizes = {len(a) for a in x.values()}
        if len(sizes) != 1:
            raise InvalidInputError(f"inputs have different numbers of samples: "
                                    f"{', '.join(f'{k} {len(v)}' for k, v in x.items())}")
        return sizes.pop()
    return len(x)


def take(x, start: int, stop: int | None = None):
    """Samples start:stop of a batch (one array, or a mapping name -> array)."""
    if isinstance(x, dict):
        return {name: a[start:stop] for name, a in x.items()}
    return x[start:stop]


def flat_outputs(outputs: dict[str, np.ndarray]) -> np.ndarray:
    """Outputs by name -> one float32 array: the only output as it is, several flattened per sample
    ([N, -1]) and concatenated in name order."""
    if len(outputs) == 1:
        return np.asarray(next(iter(outputs.values())), dtype=np.float32)
    rows = [np.asarray(outputs[name], dtype=np.float32) for name in sorted(outputs)]
    return np.concatenate([r.reshape(len(r), -1) for r in rows], axis=1)


def read_npz_inputs(path: str | Path, names: list[str]) -> dict[str, np.ndarray] | np.ndarray:
    """An .npz of model inputs: `x` for a one-input model, else one array per input name."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"cannot read {path} as an npz of arrays: {exc}") from None
    if len(names) == 1:
        if "x" in arrays:
            return arrays["x"]
        if names[0] in arrays:
            return arrays[names[0]]
        raise InvalidInputError(f"{path} has no 'x' array (or one named {names[0]!r})")
    missing = [n for n in names if n not in arrays]
    if missing:
        raise InvalidInputError(f"{path} lacks input(s) {', '.join(missing)}: the model takes "
                                f"{', '.join(names)} (one array per input name)")
    return {n: arrays[n] for n in names}


# --- the kinds --------------------------------------------------------------------------------------


class ModelKind:
    name = ""
    per_frame = False

    def gate_overrides(self, manifest: dict) -> dict[str, float | None]:
        """Limits of the tolerance table that do not apply to this bundle (None) or differ."""
        return {}

    def preprocessor(self, params: dict, assets_dir) -> Callable[[list], np.ndarray] | None:
        return None

    def read_inputs(self, model, items: list[str]) -> tuple[list | np.ndarray | dict, list[str]]:
        """Command-line inputs -> (what `EdgeModel.predict` takes, one display name per sample)."""
        for item in items:
            if not Path(item).is_file():
                raise InvalidInputError(f"{self.name} input not found: {item}")
        return list(items), list(items)

    def postprocess(self, model, outputs: dict[str, np.ndarray]):
        """Float outputs by name (batch first) -> one Prediction per sample (a classifier)."""
        from edgekit.runtime.model import Prediction

        probs = next(iter(outputs.values()))
        labels = model.labels or [str(i) for i in range(probs.shape[-1])]
        rows = probs.reshape(probs.shape[0], -1)
        return [Prediction(labels[int(np.argmax(r))], int(np.argmax(r)), _as_dict(labels, r)) for r in rows]


class TextKind(ModelKind):
    name = "text"

    @staticmethod
    def params_for(max_len: int, padding: str = "post") -> dict:
        """The `preprocessing` block of an outside model tokenised like keras.layers.TextVectorization
        (its defaults: lower_and_strip_punctuation, whitespace split, padding after the tokens)."""
        return {"type": "text", "max_len": int(max_len), "vocab_file": "assets/vocab.txt",
                "standardize": "lower_and_strip_punctuation", "split": "whitespace",
                "pad_id": 0, "oov_id": 1, "padding": padding, "truncating": "post"}

    def preprocessor(self, params, assets_dir):
        from edgekit.runtime.preprocess.text import from_params

        return from_params(params, assets_dir)

    def read_inputs(self, model, items):
        for i, text in enumerate(items):
            if not text.strip():
                raise InvalidInputError(f"text input {i} is empty")
        return list(items), list(items)


class ImageKind(ModelKind):
    name = "image"
    # `--preprocess` presets for an outside image model: what keras.applications' preprocess_input
    # does for each family, as the image preprocessor's (x[..., order] - mean) / std.
    PRESETS = {
        "mobilenet_v2": {"channel_order": "RGB", "mean": [127.5] * 3, "std": [127.5] * 3},
        "resnet50": {"channel_order": "BGR", "mean": [103.939, 116.779, 123.68], "std": [1.0] * 3},
        "efficientnet": {"channel_order": "RGB", "mean": [0.0] * 3, "std": [1.0] * 3},  # scales inside
    }

    def preprocessor(self, params, assets_dir):
        from edgekit.runtime.preprocess.image import ImagePreprocessor

        return ImagePreprocessor(params)

    @classmethod
    def params_for(cls, preset: str, height: int, width: int) -> dict:
        """The `preprocessing` block for `--preprocess PRESET`: a preset name or `scale:A/B`
        (pixels times A/B, e.g. scale:1/255), bilinear resize to the model's input size."""
        if preset in cls.PRESETS:
            scaling = dict(cls.PRESETS[preset])
        elif preset.startswith("scale:"):
            try:
                top, _, bottom = preset[len("scale:"):].partition("/")
                factor = float(top) / float(bottom or 1)
            except (ValueError, ZeroDivisionError):
                raise InvalidInputError(f"--preprocess {preset!r}: expected scale:A/B, e.g. scale:1/255") from None
            if not np.isfinite(factor) or factor == 0:
                raise InvalidInputError(f"--preprocess {preset!r}: the scale must be finite and not 0")
            scaling = {"channel_order": "RGB", "mean": [0.0] * 3, "std": [1.0 / factor] * 3}
        else:
            raise InvalidInputError(f"unknown --preprocess {preset!r}; choose from "
                                    f"{', '.join(cls.PRESETS)} or scale:A/B")
        return {"type": "image", "height": int(height), "width": int(width), "channels": 3,
                "resize": "bilinear", "antialias": False, "preset": preset, **scaling}


class SpeechKind(ModelKind):
    name = "speech"
    per_frame = True

    def preprocessor(self, params, assets_dir):
        from edgekit.runtime.preprocess.audio import AudioPreprocessor

        return AudioPreprocessor(params)

    def postprocess(self, model, outputs):
        """[N, T, C] per-frame probabilities -> a label per utterance, with the per-frame labels."""
        from edgekit.runtime.model import Prediction
        from edgekit.runtime.preprocess.audio import utterance_probs

        probs = next(iter(outputs.values()))
        if probs.ndim != 3:
            return super().postprocess(model, outputs)
        labels = model.labels or [str(i) for i in range(probs.shape[-1])]
        utterance = np.asarray(utterance_probs(probs, model.bundle.preprocessing or {}), dtype=np.float64)
        results = []
        for frames, row in zip(probs, utterance):
            idx = int(np.argmax(row))
            results.append(Prediction(labels[idx], idx, _as_dict(labels, row),
                                      [labels[int(j)] for j in np.argmax(frames, axis=-1)], frames))
        return results


class TensorKind(ModelKind):
    """A user's own model without known pre/post-processing: inputs and outputs by name, dtypes as
    the model declares. `predict` takes tensors (.npy for one input, .npz with one array per input
    name) and returns one Prediction per sample for a one-output classifier with labels, else the
    outputs as a dict name -> array (batch first)."""
    name = "tensor"

    def read_inputs(self, model, items):
        names = list(model.input_names)
        batches, shown = [], []
        for item in items:
            path = Path(item)
            if not path.is_file():
                raise InvalidInputError(f"input file not found: {item}")
            suffix = path.suffix.lower()
            if suffix == ".npz":
                batch = read_npz_inputs(path, names)
            elif suffix == ".npy" and len(names) == 1:
                try:
                    batch = np.load(path, allow_pickle=False)
                except (OSError, ValueError) as exc:
                    raise InvalidInputError(f"cannot read {path} as a numpy array: {exc}") from None
            elif suffix == ".npy":
                raise InvalidInputError(f"{item}: the model takes {len(names)} inputs "
                                        f"({', '.join(names)}); give an .npz with one array per input name")
            else:
                raise InvalidInputError(f"{item}: this bundle takes tensors; give .npy or .npz files")
            batch = _with_batch_axis(batch, names, model.runner.inputs)
            count = batch_size(batch)
            batches.append(batch)
            shown += [item] if count == 1 else [f"{item}[{i}]" for i in range(count)]
        try:
            if isinstance(batches[0], dict):
                return {n: np.concatenate([b[n] for b in batches]) for n in names}, shown
            return np.concatenate(batches), shown
        except ValueError as exc:
            raise InvalidInputError(f"input arrays do not stack into one batch: {exc}") from None

    def gate_overrides(self, manifest):
        """Top-1 agreement means something only for one [N, C] output (a classifier): not for
        several outputs compared as one concatenated row, nor for a regression or sequence output."""
        outputs = manifest.get("outputs") or []
        if len(outputs) != 1 or len(outputs[0].get("shape") or []) != 2 or (outputs[0]["shape"][-1] or 0) < 2:
            return {"min_agreement": None}
        return {}

    def postprocess(self, model, outputs):
        single = next(iter(outputs.values()))
        if len(outputs) == 1 and model.bundle.labels and single.ndim == 2:
            return super().postprocess(model, outputs)
        return outputs


def _with_batch_axis(batch, names: list[str], inputs):
    """One sample (the input's rank minus the batch axis) gets a batch axis of 1."""
    if isinstance(batch, dict):
        return {n: (batch[n] if batch[n].ndim == len(i.shape) else batch[n][None]) for n, i in zip(names, inputs)}
    return batch if batch.ndim == len(inputs[0].shape) else batch[None]


def _as_dict(labels: list[str], row: np.ndarray) -> dict[str, float]:
    return {label: float(p) for label, p in zip(labels, row)}


KINDS: dict[str, ModelKind] = {kind.name: kind for kind in (TextKind(), ImageKind(), SpeechKind(), TensorKind())}


def kind_gate(gate, manifest: dict):
    """`gate` (runtime/gates.py) with the bundle's kind's overrides, except limits the user set."""
    try:
        limits = kind_of(manifest.get("task")).gate_overrides(manifest)
    except InvalidInputError:
        return gate
    limits = {k: v for k, v in limits.items() if k not in gate.overridden}
    return gate.with_limits(**limits) if limits else gate


def kind_of(task: str | None) -> ModelKind:
    """The kind of a bundle's `task` (a bundle without one is a tensor model)."""
    if task is None or task == "":
        return KINDS["tensor"]
    if task not in KINDS:
        raise InvalidInputError(f"unknown model kind {task!r}; known: {', '.join(KINDS)}")
    return KINDS[task]
