"""Every registered item has a test case: model kinds (device side runtime/kinds.py, training side
train/__init__.py KINDS), export formats (export/formats.py) and runtime backends
(runtime/backends BACKENDS). Registering an item without adding its case here fails
`test_every_registered_item_has_a_case`. Fast: no training, no conversion.
"""

from __future__ import annotations

import inspect
import wave
from types import SimpleNamespace

import numpy as np
import pytest

from edgekit.export import formats, recipes
from edgekit.runtime import backends, bundle
from edgekit.runtime.backends.base import TensorInfo
from edgekit.runtime.errors import InvalidInputError
from edgekit.runtime.kinds import KINDS, flat_outputs, kind_of, read_npz_inputs
from edgekit.runtime.model import Prediction
from edgekit.runtime.preprocess import make_preprocessor
from edgekit.train import KINDS as TRAIN_KINDS
from edgekit.train import OPTIONS

LABELS = ["no", "yes", "maybe"]


def fake_model(kind: str, inputs=(("x", (None, 4), "float32"),), labels=LABELS, preprocessing=None):
    """What a kind's read_inputs/postprocess use of an EdgeModel: labels, bundle, runner, names."""
    infos = [TensorInfo(name=f"serving_default_{n}:0", shape=s, dtype=np.dtype(d)) for n, s, d in inputs]
    return SimpleNamespace(labels=labels, kind=KINDS[kind], input_names=[n for n, _, _ in inputs],
                           runner=SimpleNamespace(inputs=infos),
                           bundle=SimpleNamespace(labels=labels, preprocessing=preprocessing, task=kind))


# --- device side: one case per model kind -----------------------------------------------------------

def case_text(tmp_path):
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "vocab.txt").write_text("\n[UNK]\nfree\nprize\n", encoding="utf-8")
    params = KINDS["text"].params_for(5)          # what `export --task text --max-len 5` stores
    ids = make_preprocessor(params, tmp_path)(["Free prize!", "hello"])
    np.testing.assert_array_equal(ids, [[2, 3, 0, 0, 0], [1, 0, 0, 0, 0]])
    model = fake_model("text", preprocessing=params)
    assert KINDS["text"].read_inputs(model, ["a text"]) == (["a text"], ["a text"])
    with pytest.raises(InvalidInputError, match="empty"):
        KINDS["text"].read_inputs(model, ["  "])
    predictions = KINDS["text"].postprocess(model, {"probs": np.array([[0.1, 0.7, 0.2]], np.float32)})
    assert [p.label for p in predictions] == ["yes"] and not KINDS["text"].per_frame


def case_image(tmp_path):
    params = KINDS["image"].params_for("scale:1/255", 4, 4)
    image = np.full((8, 6, 3), 255, np.uint8)
    np.testing.assert_allclose(make_preprocessor(params)([image]), np.ones((1, 4, 4, 3)), rtol=1e-6)
    bgr = make_preprocessor(KINDS["image"].params_for("resnet50", 2, 2))([np.zeros((2, 2, 3), np.uint8)])
    np.testing.assert_allclose(bgr[0, 0, 0], [-103.939, -116.779, -123.68], rtol=1e-5)
    with pytest.raises(InvalidInputError, match="unknown --preprocess"):
        KINDS["image"].params_for("vgg99", 4, 4)
    model = fake_model("image", preprocessing=params)
    with pytest.raises(InvalidInputError, match="not found"):
        KINDS["image"].read_inputs(model, [str(tmp_path / "missing.jpg")])
    predictions = KINDS["image"].postprocess(model, {"probs": np.array([[0.2, 0.1, 0.7]], np.float32)})
    assert predictions[0].label == "maybe"


def case_speech(tmp_path):
    from edgekit.train.speech import feature_params

    params = {**feature_params(8000, "log_mel"), "mean": 0.0, "std": 1.0}   # unstandardised
    path = tmp_path / "tone.wav"
    tone = (np.sin(np.arange(4000) * 0.3) * 8000).astype(np.int16)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1), out.setsampwidth(2), out.setframerate(8000), out.writeframes(tone.tobytes())
    features = make_preprocessor(params)([str(path)])
    assert features.shape[:2] == (1, params["num_frames"]) and np.isfinite(features).all()
    frames = np.zeros((1, 4, 3), np.float32)
    frames[0, :, 0] = 1.0                         # silence on every frame ...
    frames[0, 1:3] = [[0.1, 0.8, 0.1], [0.1, 0.2, 0.7]]
    model = fake_model("speech", preprocessing={"type": "speech", "silence_index": 0})
    (prediction,) = KINDS["speech"].postprocess(model, {"probs": frames})
    assert KINDS["speech"].per_frame and prediction.probabilities["no"] == 0  # silence never wins
    assert prediction.frame_labels == ["no", "yes", "maybe", "no"]


def case_tensor(tmp_path):
    inputs = (("a", (None, 3), "float32"), ("b", (None, 2), "int32"))
    model = fake_model("tensor", inputs=inputs, labels=None)
    np.savez(tmp_path / "two.npz", a=np.zeros((2, 3), np.float32), b=np.ones((2, 2), np.int32))
    np.savez(tmp_path / "one.npz", a=np.zeros(3, np.float32), b=np.ones(2, np.int32))   # one sample
    feed, names = KINDS["tensor"].read_inputs(model, [str(tmp_path / "two.npz"), str(tmp_path / "one.npz")])
    assert names == [f"{tmp_path / 'two.npz'}[0]", f"{tmp_path / 'two.npz'}[1]", str(tmp_path / "one.npz")]
    assert feed["a"].shape == (3, 3) and feed["b"].dtype == np.int32
    np.save(tmp_path / "x.npy", np.zeros((1, 3), np.float32))
    with pytest.raises(InvalidInputError, match="2 inputs"):
        KINDS["tensor"].read_inputs(model, [str(tmp_path / "x.npy")])
    with pytest.raises(InvalidInputError, match="lacks input"):
        read_npz_inputs(tmp_path / "two.npz", ["a", "c"])
    outputs = {"value": np.array([[0.5], [1.5]], np.float32), "cls": np.eye(2, 3, dtype=np.float32)}
    assert KINDS["tensor"].postprocess(model, outputs) is outputs          # several outputs: by name
    np.testing.assert_array_equal(flat_outputs(outputs), [[1, 0, 0, 0.5], [0, 1, 0, 1.5]])  # name order
    labelled = fake_model("tensor", labels=["p", "q", "r"])
    (one,) = KINDS["tensor"].postprocess(labelled, {"probs": np.array([[0.1, 0.2, 0.7]], np.float32)})
    assert isinstance(one, Prediction) and one.label == "r"  # one output with labels: a classifier
    assert kind_of(None) is KINDS["tensor"]
    from edgekit.runtime.gates import Gate
    from edgekit.runtime.kinds import kind_gate

    two = {"task": "tensor", "outputs": [{"name": "cls", "shape": [None, 3]}, {"name": "value", "shape": [None, 1]}]}
    one = {"task": "tensor", "outputs": [{"name": "probs", "shape": [None, 3]}]}
    assert kind_gate(Gate(min_agreement=0.95), two).min_agreement is None   # no class to agree on
    assert kind_gate(Gate(min_agreement=0.95), one).min_agreement == 0.95   # a classifier
    user = Gate(min_agreement=0.95).with_limits(min_agreement=0.9)
    assert kind_gate(user, two).min_agreement == 0.9                        # the user's limit wins


KIND_CASES = {"text": case_text, "image": case_image, "speech": case_speech, "tensor": case_tensor}


# --- training side: the built-in kinds ------------------------------------------------------------------

TRAIN_CASES = {
    # kind -> (an option of another kind that its check_options refuses, classes of its synthetic data)
    "text": ("input_size", 3),
    "image": ("text_column", 4),
    "speech": ("input_size", 4),
}


# --- export formats and runtime backends ----------------------------------------------------------------

FORMAT_CASES = {"tflite": ".tflite", "onnx": ".onnx"}          # format -> the model file suffix
BACKEND_CASES = {"litert": "tflite", "tflite_runtime": "tflite", "tensorflow": "tflite",
                 "onnxruntime": "onnx"}                        # backend -> the format it runs


def test_every_registered_item_has_a_case():
    assert set(KIND_CASES) == set(KINDS), "add a case for each runtime/kinds.py kind"
    assert set(TRAIN_CASES) == set(TRAIN_KINDS), "add a case for each train/__init__.py KINDS entry"
    assert set(FORMAT_CASES) == set(formats.FORMAT_MODULES), "add a case for each export format"
    assert set(BACKEND_CASES) == set(backends.BACKENDS), "add a case for each runtime backend"


@pytest.mark.parametrize("kind", sorted(KIND_CASES))
def test_model_kind(kind, tmp_path):
    assert KINDS[kind].name == kind
    KIND_CASES[kind](tmp_path)


@pytest.mark.parametrize("kind", sorted(TRAIN_CASES))
def test_training_kind(kind):
    from edgekit.core import UserError
    from edgekit.train import trainer

    entry, (foreign_option, classes) = TRAIN_KINDS[kind], TRAIN_CASES[kind]
    assert kind in KINDS, "a trainable kind needs its device side in runtime/kinds.py"
    assert set(entry.options) <= set(OPTIONS) and foreign_option not in entry.options
    module = trainer(kind)
    for name in ("check_options", "load", "fit"):
        assert callable(getattr(module, name)), f"{entry.module} lacks {name}"
    module.check_options({})
    with pytest.raises(UserError, match="does not apply"):
        module.check_options({foreign_option: 1})
    dataset = module.load(None, 0, {})            # the embedded synthetic data
    assert dataset.synthetic and len(dataset.labels) == classes


@pytest.mark.parametrize("fmt", sorted(FORMAT_CASES))
def test_export_format(fmt):
    module = formats.module(fmt)
    assert module.FILE_NAME == formats.FILE_NAMES[fmt] and module.FILE_NAME.endswith(FORMAT_CASES[fmt])
    for name, params in (("export_variant", 7), ("describe", 1), ("run", 2), ("conversion_path", 2)):
        function = getattr(module, name)
        assert len(inspect.signature(function).parameters) == params, f"{fmt}.{name} signature"
    assert bundle.FORMATS[FORMAT_CASES[fmt]] == fmt, "the runtime must read the format's files"
    assert backends.FORMAT_BACKENDS[fmt], "some backend must run the format"
    assert any(recipes.recipe_for(fmt, v) for v in recipes.VARIANTS), "the format needs a recipe"


@pytest.mark.parametrize("name", sorted(BACKEND_CASES))
def test_backend(name):
    from edgekit.runtime.backends.base import Runner

    assert name in backends.FORMAT_BACKENDS[BACKEND_CASES[name]]
    assert issubclass(backends.runner_class(name), Runner)  # imports without its library
    assert backends.INSTALL_HINT[name]
    if backends.is_available(name) and name != "tensorflow":
        assert name in backends.candidates(BACKEND_CASES[name], name)
