"""Model kinds, registered once: what a bundle's `task` means for its inputs, on every side.

A kind holds what differs between text, image, speech and a user's own model (`tensor`), so that
nothing else branches on a task's name:
- `preprocessor(params, assets_dir)`: the numpy twin of the manifest's `preprocessing` block (None for
  a kind whose inputs are already tensors); `make_preprocessor` dispatches on `params["type"]`;
- `read_inputs(model, items)`: how `predict` on the command line turns its arguments into inputs;
- `decode_upload(model, mime, params, body)`, `decode_bytes(model, data)` and
  `classify_instances(instances)`: the server's request bodies (TF Serving's :classify uploads, the Open
  Inference Protocol's BYTES elements) -> raw inputs (`upload_types`, `upload_wanted` say what it takes);
- `outside_preprocessing(shape, options)`: the `preprocessing` block for a user's own model tagged
  with this kind (`edgekit export --task`), or a one-line refusal;
- `mediapipe_task(metadata, input_spec)`: the MediaPipe Tasks task that can run it, or why none can;
- `heads(manifest)` / `postprocess(model, outputs)`: the output heads (runtime/heads.py) and what
  `EdgeModel.predict` returns;
- `per_frame` (outputs judged per frame and per utterance), `streams` (`listen` applies) and `photos`
  (raw inputs are photo files: verify measures how a second JPEG decoder changes its labels).

`kind_of(task)` finds a kind; a bundle without a task (a bare .tflite/.onnx file) is a tensor model.
Adding a kind is one class here plus one entry in KINDS (and its training side in edgekit/train).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgekit.runtime import heads as heads_registry
from edgekit.runtime.errors import InvalidInputError, RequestRefused
from edgekit.runtime.samples import batch_size, read

MAX_IMAGE_PIXELS = 16_000_000   # an upload: a 12 MP camera frame fits; a decompression bomb does not


def flat_outputs(outputs: dict[str, np.ndarray]) -> np.ndarray:
    """Outputs by name -> one float32 array: the only output as it is, several flattened per sample
    ([N, -1]) and concatenated in name order."""
    if len(outputs) == 1:
        return np.asarray(next(iter(outputs.values())), dtype=np.float32)
    rows = [np.asarray(outputs[name], dtype=np.float32) for name in sorted(outputs)]
    return np.concatenate([r.reshape(len(r), -1) for r in rows], axis=1)


# --- the kinds --------------------------------------------------------------------------------------


class ModelKind:
    name = ""
    per_frame = False
    streams = False                 # `listen` runs it on a stream
    photos = False                  # its raw inputs are photo files (JPEG decoder sensitivity applies)
    outside_models = True           # a user's own model can be tagged with it (`export --task`)
    upload_wanted = 'JSON ({"instances": [...]}, Content-Type: application/json)'

    # -- inputs --
    def preprocessor(self, params: dict, assets_dir) -> Callable[[list], np.ndarray] | None:
        return None

    def read_inputs(self, model, items: list[str]) -> tuple[list | np.ndarray | dict, list[str]]:
        """Command-line inputs -> (what `EdgeModel.predict` takes, one display name per sample)."""
        for item in items:
            if not Path(item).is_file():
                raise InvalidInputError(f"{self.name} input not found: {item}")
        return list(items), list(items)

    upload_types: tuple[str, ...] = ()   # the Content-Types `decode_upload` takes (prefixes end in "/")

    def decode_upload(self, model, mime: str, params: dict, body: bytes) -> list:
        """A raw request body of type `mime` -> raw inputs (RequestRefused 415 for a type it does not take)."""
        if not any(mime == t or (t.endswith("/") and mime.startswith(t)) for t in self.upload_types):
            raise RequestRefused(415, f"Content-Type {mime or '(none)'!r} is not accepted here; this model "
                                      f"takes {self.upload_wanted}")
        return [self.decode_bytes(model, body, params)]

    def decode_bytes(self, model, data: bytes, params: dict | None = None):
        """One raw input from its encoded bytes (an upload, an Open Inference Protocol BYTES element)."""
        raise RequestRefused(400, "this model takes tensors, not raw BYTES inputs")

    def classify_instances(self, instances) -> list | None:
        """A JSON :classify body's instances -> raw inputs; None: they are tensors (the server reads them)."""
        raise RequestRefused(415, f"this {self.name} model takes the raw {self.upload_wanted} as the request body")

    def outside_preprocessing(self, shapes: dict[str, list], options: dict) -> tuple[dict | None, dict[str, Path]]:
        """(preprocessing block, assets to copy) for a user's model of this kind with `export` options;
        `shapes`: the model's input shapes by name (batch axis first; {} when its file does not say)."""
        unused = [k for k in ("preprocess", "vocab", "max_len") if options.get(k)]
        if unused:
            raise InvalidInputError(f"--{unused[0].replace('_', '-')} does not apply to --task {self.name}")
        return None, {}

    def mediapipe_task(self, metadata: dict, input_spec: dict) -> tuple[str | None, str | None]:
        """(MediaPipe Tasks task that runs this model with its metadata, None) or (None, why none can)."""
        return None, f"no MediaPipe task for {self.name!r} models"

    # -- outputs --
    def head_context(self, model) -> heads_registry.HeadContext:
        return heads_registry.HeadContext(model.labels, len(model.output_names), self.per_frame,
                                          model.bundle.preprocessing)

    def heads(self, manifest: dict) -> list[heads_registry.Head]:
        """The head of every output, as the manifest lists them."""
        outputs = manifest.get("outputs") or []
        context = heads_registry.HeadContext(manifest.get("labels"), len(outputs), self.per_frame,
                                             manifest.get("preprocessing"))
        return [heads_registry.infer(spec, context) for spec in outputs]

    def gate_overrides(self, manifest: dict) -> dict[str, float | None]:
        """Limits of the tolerance table that do not apply to this bundle (None) or differ: those of
        its heads (agreement means nothing for a `values` head or several outputs compared as one)."""
        overrides: dict = {}
        for head in self.heads(manifest) or [heads_registry.HEADS["values"]]:
            overrides.update(head.gate_overrides())
        return overrides

    def postprocess(self, model, outputs: dict[str, np.ndarray]):
        """Float outputs by name (batch first) -> one Prediction per sample (a classifier)."""
        values = next(iter(outputs.values()))
        return heads_registry.HEADS["classes"].results(values, self.head_context(model))


class TextKind(ModelKind):
    name = "text"
    upload_wanted = "text (Content-Type: text/plain)"

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

    upload_types = ("text/",)

    def decode_bytes(self, model, data, params=None):
        charset = (params or {}).get("charset") or "utf-8"
        try:
            return data.decode(charset)
        except (UnicodeDecodeError, LookupError):
            raise InvalidInputError(f"the text is not in {charset}") from None

    def classify_instances(self, instances):
        if not isinstance(instances, list) or not instances or not all(isinstance(t, str) for t in instances):
            raise InvalidInputError("instances must be a non-empty list of texts for this text model")
        return instances

    def outside_preprocessing(self, shapes, options):
        vocab, max_len = options.get("vocab"), options.get("max_len")
        shape = next(iter(shapes.values())) if len(shapes) == 1 else None
        if options.get("preprocess"):
            raise InvalidInputError("--preprocess applies with --task image; --vocab and --max-len with --task text")
        if not vocab:
            raise InvalidInputError("--task text needs --vocab vocab.txt (one token per line: padding, [UNK], "
                                    "then the tokens, as keras.layers.TextVectorization.get_vocabulary() lists them)")
        length = max_len or (shape[1] if shape and len(shape) == 2 else None)
        if not length:
            raise InvalidInputError("--task text needs --max-len N (the model's token sequence length)")
        return self.params_for(length), {"vocab.txt": Path(vocab)}

    def mediapipe_task(self, metadata, input_spec):
        return None, ("MediaPipe's RegexTokenizer cannot express our text preprocessing: it does not "
                      "lowercase, it splits on a delimiter regex where we delete punctuation inside words, it "
                      "prepends <START> and pads after the tokens where our LSTM was trained on pre-padded ids")


IMAGE_TYPES = ("image/jpeg", "image/jpg", "image/png", "image/bmp", "image/gif", "image/webp")


class ImageKind(ModelKind):
    name = "image"
    photos = True
    upload_wanted = "a photo (Content-Type: image/jpeg or image/png)"
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

    upload_types = IMAGE_TYPES

    def decode_bytes(self, model, data, params=None):
        from edgekit.runtime.preprocess.image import image_size, read_image_bytes

        width, height = image_size(data, "the upload")  # the header only: refuse a decompression bomb
        if width * height > MAX_IMAGE_PIXELS:
            raise RequestRefused(413, f"image is {width}x{height} pixels; at most {MAX_IMAGE_PIXELS} pixels")
        return read_image_bytes(data, "the upload")

    def outside_preprocessing(self, shapes, options):
        if options.get("vocab") or options.get("max_len"):
            raise InvalidInputError("--preprocess applies with --task image; --vocab and --max-len with --task text")
        if len(shapes) != 1:
            raise InvalidInputError(f"--task image needs a one-input model; this one has "
                                    f"{len(shapes) or 'unknown'} inputs")
        shape = next(iter(shapes.values()))
        if len(shape) != 4 or shape[-1] != 3 or not shape[1] or not shape[2]:
            raise InvalidInputError(f"--task image needs an input of shape (batch, height, width, 3), the model "
                                    f"takes {tuple(shape)}")
        return self.params_for(options.get("preprocess") or "scale:1/1", shape[1], shape[2]), {}

    def mediapipe_task(self, metadata, input_spec):
        params = metadata.get("preprocessing") or {}
        if params.get("channel_order", "RGB") != "RGB":
            return None, (f"the model takes {params.get('channel_order')} input ({params.get('mode')} mode); "
                          "MediaPipe feeds RGB")
        if not metadata.get("labels") or not params.get("mean") or not params.get("std"):
            return None, "the model has no labels or no normalization mean/std to describe"
        if input_spec.get("dtype") != "float32":
            return None, (f"the model's input is {input_spec.get('dtype')}: MediaPipe would feed raw 0..255 "
                          "pixels; export with --int8-io float32 (the default)")
        return "ImageClassifier", None


WAV_TYPES = ("audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave")


class SpeechKind(ModelKind):
    name = "speech"
    per_frame = True
    streams = True
    outside_models = False      # its features come from edgekit's own front end and training
    upload_wanted = "a 16-bit mono WAV (Content-Type: audio/wav)"

    def preprocessor(self, params, assets_dir):
        from edgekit.runtime.preprocess.audio import AudioPreprocessor

        return AudioPreprocessor(params)

    upload_types = WAV_TYPES

    def decode_bytes(self, model, data, params=None):
        import io

        from edgekit.runtime.preprocess.audio import read_wav

        return read_wav(io.BytesIO(data), (model.bundle.preprocessing or {}).get("sample_rate"), name="the upload")

    def mediapipe_task(self, metadata, input_spec):
        return None, ("MediaPipe's AudioClassifier feeds raw waveform samples to the model; this model "
                      "takes log-mel/MFCC frames from edgekit's numpy front end")

    def postprocess(self, model, outputs):
        """[N, T, C] per-frame probabilities -> a label per utterance, with the per-frame labels."""
        values = next(iter(outputs.values()))
        return heads_registry.HEADS["frames"].results(values, self.head_context(model))


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
                batch = read(path, names, "input", batched=False).x
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

    def classify_instances(self, instances):
        return None  # tensors: the server reads them as arrays

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


KINDS: dict[str, ModelKind] = {kind.name: kind for kind in (TextKind(), ImageKind(), SpeechKind(), TensorKind())}
TENSOR = KINDS["tensor"]


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
        return TENSOR
    if task not in KINDS:
        raise InvalidInputError(f"unknown model kind {task!r}; known: {', '.join(KINDS)}")
    return KINDS[task]


def make_preprocessor(params: dict, assets_dir: str | Path | None = None) -> Callable[[list], np.ndarray]:
    """The `preprocessing` block of edgekit.json / a manifest as a callable: raw inputs -> model inputs.
    assets_dir: the model directory or bundle folder (holding assets/vocab.txt), or its assets/."""
    if not isinstance(params, dict) or "type" not in params:
        raise InvalidInputError("preprocessing parameters are missing their 'type'")
    kind = KINDS.get(params["type"])
    preprocessor = kind.preprocessor(params, assets_dir) if kind is not None else None
    if preprocessor is None:
        with_preprocessing = [name for name, k in KINDS.items() if type(k).preprocessor is not ModelKind.preprocessor]
        raise InvalidInputError(f"unknown preprocessing type {params['type']!r}; expected "
                                f"{', '.join(with_preprocessing)}")
    return preprocessor
