"""Every registered item has a test case: model kinds (device side runtime/kinds.py, training side
train/__init__.py KINDS), output heads (runtime/heads.py), formats (device half runtime/formats, host
half export/formats.py), recipes (export/recipes.py) and runtime backends (runtime/backends BACKENDS).
Registering an item without adding its case here fails `test_every_registered_item_has_a_case`.
Fast: no training, no conversion (the formats' cases build their tiny model files directly).
"""

from __future__ import annotations

import wave
from types import SimpleNamespace

import numpy as np
import pytest

from edgekit.export import formats, recipes
from edgekit.runtime import backends, gates, heads, samples
from edgekit.runtime import formats as device_formats
from edgekit.runtime.backends.base import TensorInfo
from edgekit.runtime.errors import InvalidInputError, ModelFileError
from edgekit.runtime.kinds import KINDS, flat_outputs, kind_of, make_preprocessor
from edgekit.runtime.model import Prediction
from edgekit.train import KINDS as TRAIN_KINDS
from edgekit.train import OPTIONS

LABELS = ["no", "yes", "maybe"]


def fake_model(kind: str, inputs=(("x", (None, 4), "float32"),), labels=LABELS, preprocessing=None):
    """What a kind's read_inputs/postprocess use of an EdgeModel: labels, bundle, runner, names."""
    infos = [TensorInfo(name=f"serving_default_{n}:0", shape=s, dtype=np.dtype(d)) for n, s, d in inputs]
    return SimpleNamespace(labels=labels, kind=KINDS[kind], input_names=[n for n, _, _ in inputs],
                           output_names=["probs"],
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
        samples.read(tmp_path / "two.npz", ["a", "c"])
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


# --- output heads -----------------------------------------------------------------------------------

def head_classes():
    context = heads.HeadContext(labels=["a", "b"], outputs=1)
    assert heads.infer({"shape": [None, 2]}, context).name == "classes"
    (p,) = heads.HEADS["classes"].results(np.array([[0.2, 0.8]], np.float32), context)
    assert p.label == "b" and p.index == 1
    np.testing.assert_array_equal(heads.HEADS["classes"].decisions(np.array([[0.1, 0.9], [0.7, 0.3]])), [1, 0])
    assert heads.HEADS["classes"].gate_overrides() == {}


def head_frames():
    context = heads.HeadContext(labels=["_silence", "one", "two"], outputs=1, per_frame=True,
                                preprocessing={"silence_index": 0})
    assert heads.infer({"shape": [None, 4, 3]}, context).name == "frames"
    frames = np.array([[[1, 0, 0], [0.1, 0.8, 0.1], [0.1, 0.7, 0.2], [1, 0, 0]]], np.float32)
    (p,) = heads.HEADS["frames"].results(frames, context)
    assert p.label == "one" and p.frame_labels == ["_silence", "one", "one", "_silence"]


def head_values():
    one_of_two = heads.HeadContext(labels=None, outputs=2)
    assert heads.infer({"shape": [None, 3]}, one_of_two).name == "values"      # several outputs
    assert heads.infer({"shape": [None, 1]}, heads.HeadContext()).name == "values"  # one number
    assert heads.HEADS["values"].gate_overrides() == {"min_agreement": None}
    assert heads.HEADS["values"].decisions(np.zeros((2, 3))) is None


HEAD_CASES = {"classes": head_classes, "frames": head_frames, "values": head_values}


# --- formats: both halves, with model files built here -------------------------------------------------

def tiny_tflite() -> bytes:
    """y = x + [0, 1, 2, 3]: one ADD op on float32 [1, 4], written with the flatbuffer schema."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT()
    model.version = 3
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.ADD
    code.version = 1
    model.operatorCodes = [code]
    constant = schema.BufferT()
    constant.data = np.arange(4, dtype=np.float32).tobytes()
    model.buffers = [schema.BufferT(), schema.BufferT(), constant, schema.BufferT()]
    graph = schema.SubGraphT()
    graph.tensors = []
    for name, buffer in (("x", 1), ("c", 2), ("y", 3)):
        tensor = schema.TensorT()
        tensor.name, tensor.shape, tensor.type, tensor.buffer = name, [1, 4], schema.TensorType.FLOAT32, buffer
        graph.tensors.append(tensor)
    graph.inputs, graph.outputs = [0], [2]
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 1], [2]
    op.builtinOptionsType, op.builtinOptions = schema.BuiltinOptions.AddOptions, schema.AddOptionsT()
    graph.operators = [op]
    model.subgraphs = [graph]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def tiny_onnx() -> bytes:
    """y = x + [0, 1, 2, 3]: one Add node on float32 [N, 4]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph([helper.make_node("Add", ["x", "c"], ["y"])], "tiny",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
                              [numpy_helper.from_array(np.arange(4, dtype=np.float32), "c")])
    return onnx.helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


FORMAT_CASES = {"tflite": tiny_tflite, "onnx": tiny_onnx}     # format -> a tiny file of it
BACKEND_CASES = {"litert": "tflite", "tflite_runtime": "tflite", "tensorflow": "tflite",
                 "onnxruntime": "onnx"}                        # backend -> the format it runs
RECIPE_CASES = {    # variant -> (naming-scheme name, gate family)
    "fp32": ("float_wf32_af32", "fp32"), "fp16": ("float_wf16_af32", "fp16"),
    "dynamic": ("dynamic_wi8_afp32", "integer"), "int8": ("static_wi8_ai8", "integer"),
    "int16x8": ("static_wi8_ai16", "integer"),
}


def test_every_registered_item_has_a_case():
    assert set(KIND_CASES) == set(KINDS), "add a case for each runtime/kinds.py kind"
    assert set(HEAD_CASES) == set(heads.HEADS), "add a case for each runtime/heads.py head"
    assert set(TRAIN_CASES) == set(TRAIN_KINDS), "add a case for each train/__init__.py KINDS entry"
    assert set(FORMAT_CASES) == set(device_formats.FORMATS) == set(formats.HOST_MODULES), \
        "a format needs both halves (runtime/formats and export/formats.py) and a case here"
    assert set(RECIPE_CASES) == set(recipes.RECIPES), "add a case for each export/recipes.py recipe"
    assert set(BACKEND_CASES) == set(backends.BACKENDS), "add a case for each runtime backend"


@pytest.mark.parametrize("kind", sorted(KIND_CASES))
def test_model_kind(kind, tmp_path):
    assert KINDS[kind].name == kind
    KIND_CASES[kind](tmp_path)


@pytest.mark.parametrize("head", sorted(HEAD_CASES))
def test_output_head(head):
    assert heads.HEADS[head].name == head
    HEAD_CASES[head]()


@pytest.mark.parametrize("kind", sorted(TRAIN_CASES))
def test_training_kind(kind):
    from edgekit.core import UserError
    from edgekit.train import trainer

    entry, (foreign_option, classes) = TRAIN_KINDS[kind], TRAIN_CASES[kind]
    assert kind in KINDS, "a trainable kind needs its device side in runtime/kinds.py"
    assert set(entry.options) <= set(OPTIONS) and foreign_option not in entry.options
    module = trainer(kind)
    module.check_options({})
    with pytest.raises(UserError, match="does not apply"):
        module.check_options({foreign_option: 1})
    dataset = module.load(None, 0, {})            # the embedded synthetic data
    assert dataset.synthetic and len(dataset.labels) == classes


@pytest.mark.parametrize("fmt", sorted(FORMAT_CASES))
def test_format(fmt, tmp_path):
    """The device half reads and runs a real file of the format and refuses another format's bytes;
    the host half produces the float recipe and names recipes in the scheme the device decodes."""
    device = device_formats.get(fmt)
    data = FORMAT_CASES[fmt]()
    path = tmp_path / device.file_name
    path.write_bytes(data)
    assert device_formats.by_suffix(path) is device and device.file_name.endswith(device.suffix)
    device.check_bytes(data, path)
    for other, make in FORMAT_CASES.items():
        if other != fmt:
            with pytest.raises(ModelFileError, match=f"not an? {'ONNX' if fmt == 'onnx' else 'TFLite'}"):
                device.check_bytes(make(), path)
    graph = device.read_graph(data)
    described = graph.describe()
    assert [i["name"] for i in described["inputs"]] == ["x"] and [o["name"] for o in described["outputs"]] == ["y"]
    assert sum(described["ops"].values()) == 1 and described["op_records"][0]["op"].upper() == "ADD"
    assert device.impl().count_work(data, path).ops[0].op_class == "elementwise"
    with pytest.raises(ModelFileError):
        device.read_graph(b"\x00" * 64)
    from edgekit import runtime

    with runtime.load(path, sandbox=False) as model:          # a backend of the format runs it
        np.testing.assert_allclose(model.predict_tensors(np.ones((1, 4), np.float32)), [[1, 2, 3, 4]])
    host = formats.host(fmt)
    assert host.unsupported(recipes.RECIPES["fp32"]) is None, "every format writes the float reference"
    for recipe in recipes.RECIPES.values():
        if host.unsupported(recipe) is None:
            assert gates.family_of(host.recipe_name(recipe)) == RECIPE_CASES[recipe.variant][1]
        assert host.export_settings(recipe, {})["io_dtype"] in recipes.IO_TYPES
    assert host.op_problems([], {}) == []
    assert set(device.backends) <= set(backends.BACKENDS)


@pytest.mark.parametrize("variant", sorted(RECIPE_CASES))
def test_recipe(variant):
    recipe = recipes.RECIPES[variant]
    name, family = RECIPE_CASES[variant]
    assert recipe.variant == variant and recipe.name == name and gates.family_of(name) == family
    assert recipes.Recipe.from_json(recipe.to_json()) == recipe
    assert any(formats.host(f).unsupported(recipe) is None for f in formats.NAMES), "no format writes it"
    assert gates.gate(variant) is not None and gates.gate("unlisted", recipe=name) == gates.FAMILIES[family]


@pytest.mark.parametrize("name", sorted(BACKEND_CASES))
def test_backend(name):
    from edgekit.runtime.backends.base import Runner

    assert name in backends.FORMAT_BACKENDS[BACKEND_CASES[name]]
    assert issubclass(backends.runner_class(name), Runner)  # imports without its library
    assert backends.INSTALL_HINT[name]
    if backends.is_available(name) and name != "tensorflow":
        assert name in backends.candidates(BACKEND_CASES[name], name)
