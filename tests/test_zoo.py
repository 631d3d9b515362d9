"""The architecture zoo (tests/zoo.py) through export: every architecture to builtin-only TFLite
(fp32, fp16, dynamic, full int8, int16x8 where the kernels allow) and ONNX fp32/int8, fp32 within
1e-5 of Keras, int8 deciding like Keras; a model that cannot be exported refused with one line.

Slow: trains ~15 small models briefly and converts each several times. The trained models are kept
for the session (and across sessions in EDGEKIT_ZOO_DIR when set). With EDGEKIT_ZOO_README=README.md
the run rewrites the README's "What converts to what" table.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import converted
import numpy as np
import pytest
import zoo

from edgekit.core import file_lock

pytestmark = pytest.mark.slow

# fp32: the same float32 math in another runtime; summation order differs (~1e-7 seen).
FP32_TOLERANCE = 1e-5
# int8: the models are trained to decisive outputs, so quantization should rarely flip a decision;
# 64 held-out samples, at most ~6 flips (accuracy gates on real data live in verify/).
INT8_AGREEMENT = 0.9
# EfficientNetB0's TFLite int8 agreed on 0.88-0.92 of the 64 samples over three trainings (its squeeze-and-
# excitation sigmoid gates quantize coarsely; ONNX int8 0.95); the other entries 0.94-1.0.
INT8_AGREEMENT_FOR = {"efficientnet_b0": 0.85}


@pytest.fixture(scope="session")
def zoo_root(tmp_path_factory) -> Path:
    """Shared by pytest-xdist's workers (their base temp folders have one parent), so that each entry is
    trained and converted once, by whichever worker needs it first."""
    if os.environ.get("EDGEKIT_ZOO_DIR"):
        return Path(os.environ["EDGEKIT_ZOO_DIR"])
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "zoo"
    root.mkdir(exist_ok=True)
    return root


def _selected() -> list[str]:
    heavy = os.environ.get("EDGEKIT_ZOO_HEAVY") == "1"
    return [n for n in zoo.ENTRIES if heavy or n not in zoo.HEAVY]


class ZooResults:
    """zoo_results[name]: the entry trained and put through every conversion, once per session (a file
    lock per entry: a worker that needs an entry another is building waits for its result.json)."""

    def __init__(self, root: Path):
        self.root = root

    def __getitem__(self, name: str) -> zoo.Result:
        with file_lock(self.root / f".{name}.lock"):
            (result,) = zoo.run_zoo([name], self.root)
        return result

    def all(self) -> list[zoo.Result]:
        return [self[name] for name in _selected()]


@pytest.fixture(scope="session")
def zoo_results(zoo_root) -> ZooResults:
    return ZooResults(zoo_root)


def test_zoo_has_every_architecture_the_issue_names():
    covered = " ".join(e.covers for e in zoo.ENTRIES.values())
    for name in ("stacked", "Bidirectional", "Conv1D", "2 inputs", "GRU", "SimpleRNN", "mask_zero",
                 "MultiHeadAttention", "LayerNorm", "GELU", "MobileNetV3", "EfficientNet", "ResNet50",
                 "DenseNet121", "ConvNeXt"):
        assert name in covered
    assert len(zoo.ENTRIES) >= 12 and len(_selected()) >= 12


# Measured gaps, each failing the test below (strict: when one is fixed the test says so). None open:
# ConvNeXt's ONNX conversion (grouped convolutions in an XLA-compiled call) and EfficientNet's ONNX int8
# (52% agreement: BatchNorm after depthwise convs left unfolded) were fixed in export/onnx.py, see
# test_grouped_convolutions_and_batchnorm_through_onnx.
KNOWN_GAPS: dict[str, str] = {}


# Seconds each entry's training and conversions took in a two-worker `make test` (2026-11-26): the run
# starts the longest first (tests/conftest.py).
COST = {"efficientnet_b0": 188, "mobilenet_v3_small": 116, "lstm_stacked": 91, "bilstm": 76, "gru": 60}


def _marks(name: str) -> list:
    marks = [pytest.mark.cost(COST[name])] if name in COST else []
    if name in KNOWN_GAPS:
        marks.append(pytest.mark.xfail(reason=KNOWN_GAPS[name], strict=True))
    return marks


@pytest.mark.parametrize("name", [pytest.param(n, marks=_marks(n)) for n, e in zoo.ENTRIES.items()
                                  if not e.expect_refusal and n in _selected()])
def test_zoo_entry_exports(zoo_results, name):
    result = zoo_results[name]
    assert not result.refusal, result.refusal
    failed = {k: v["reason"] for k, v in result.variants.items() if v["status"] == "failed"}
    assert not failed
    for key, item in result.variants.items():
        if item["status"] == "ok":
            assert item["ops_ok"], f"{key}: {item['problems']}"
            assert "WHILE" not in item["ops"], key
    for key in ("tflite/fp32", "onnx/fp32"):
        assert result.variants[key]["max_abs_err"] <= FP32_TOLERANCE, key
    for key in ("tflite/int8", "onnx/int8"):
        assert result.variants[key]["agreement"] >= INT8_AGREEMENT_FOR.get(name, INT8_AGREEMENT), key
    assert result.train.get("keras_accuracy", 1.0) >= 0.6, "the zoo model did not learn its synthetic task"


def test_grouped_convolutions_and_batchnorm_through_onnx(tmp_path):
    """The two ONNX fixes behind ConvNeXt and EfficientNet, on a model small enough for every run:
    Keras 3 runs grouped convolutions in an XLA-compiled nested function, which tf2onnx cannot convert
    unless inlined; BatchNormalization after a (grouped or depthwise) conv stays a per-channel Mul + Add
    in the float graph, which must be folded into the Conv before int8 quantization."""
    import keras
    import onnx
    from keras import layers as L

    from edgekit.export import onnx as onnx_export

    keras.utils.set_random_seed(0)
    images = keras.Input((zoo.IMAGE, zoo.IMAGE, 3), name="images")
    x = L.Rescaling(1 / 127.5, offset=-1)(images)
    x = L.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="stem")(x)
    x = L.Conv2D(16, 7, padding="same", groups=16, name="grouped_dw")(x)  # groups == channels (ConvNeXt)
    x = L.BatchNormalization(momentum=0.5, name="bn1")(x)
    x = L.DepthwiseConv2D(3, strides=2, padding="same", name="dw")(x)
    x = L.Activation("swish")(L.BatchNormalization(momentum=0.5, name="bn2")(x))
    x = L.Conv2D(24, 1, groups=4, activation="relu", name="grouped")(x)  # 1 < groups < channels
    model = keras.Model(images, L.Dense(zoo.CLASSES, activation="softmax", name="probs")(
        L.GlobalAveragePooling2D()(x)))
    x_train, y_train = zoo.make_data("images", 384, 0)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x_train, y_train, epochs=4, batch_size=32, verbose=0)
    x_test, y_test = zoo.make_data("images", 64, 1)
    reference = np.asarray(model(x_test, training=False))
    assert np.mean(reference.argmax(-1) == y_test) >= 0.6, "the model did not learn its synthetic task"

    fp32, int8 = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    onnx_export.convert_fp32(model, fp32)
    onnx_export.check(fp32)
    groups = sorted(a.i for n in onnx.load(str(fp32)).graph.node if n.op_type == "Conv"
                    for a in n.attribute if a.name == "group")
    assert groups == [1, 4, 16, 16]  # stem, grouped, grouped_dw, dw: all plain ONNX Conv
    assert np.max(np.abs(converted.run(fp32, x_test) - reference)) <= FP32_TOLERANCE

    onnx_export.quantize_int8(fp32, int8, x_train[:128])
    onnx_export.check(int8)
    leftover = [n.name for n in onnx.load(str(int8)).graph.node
                if n.op_type in ("Mul", "Add") and "batchnorm" in n.name]
    assert not leftover, leftover  # folded into the convs' per-channel weights
    agreement = np.mean(converted.run(int8, x_test).argmax(-1) == reference.argmax(-1))
    assert agreement >= INT8_AGREEMENT


def test_recurrent_layers_become_fused_or_unrolled_builtins(zoo_results):
    assert zoo_results["lstm_stacked"].variants["tflite/int8"]["ops"]["UNIDIRECTIONAL_SEQUENCE_LSTM"] == 2
    assert zoo_results["bilstm"].variants["tflite/int8"]["ops"]["UNIDIRECTIONAL_SEQUENCE_LSTM"] == 2
    for name in ("gru", "simple_rnn"):  # unrolled: one FULLY_CONNECTED per step and gate group
        ops = zoo_results[name].variants["tflite/int8"]["ops"]
        assert "UNIDIRECTIONAL_SEQUENCE_LSTM" not in ops and ops["FULLY_CONNECTED"] >= zoo.T


@pytest.mark.parametrize("name", [n for n, e in zoo.ENTRIES.items() if e.expect_refusal])
def test_unexportable_model_gets_one_line_naming_the_layer(zoo_results, name):
    refusal = zoo_results[name].refusal
    assert zoo.ENTRIES[name].expect_refusal in refusal and "\n" not in refusal
    assert "'embedding'" in refusal and "pre-padding" in refusal


@pytest.mark.parametrize("name", _selected())
def test_keras_own_litert_export_reported(zoo_results, name):
    assert zoo_results[name].keras_litert, name


def test_keras_own_litert_export_of_an_lstm_does_not_run_here(zoo_results):
    # The reason this project exists (conversion-facts.md): Keras' export of an LSTM does not run here.
    peer = zoo_results["lstm_stacked"].keras_litert
    assert not peer["exported"] or not peer["runs"] or any(op.startswith("Flex") for op in peer["ops"])


def test_readme_table_from_this_run(zoo_results):
    """The README's "What converts to what" table, from this run's results (written into the file
    named by EDGEKIT_ZOO_README when set)."""
    results = zoo_results.all()
    table = zoo.markdown_table(results)
    assert len(table.splitlines()) == 2 + len(results) and ", nan" not in table and "nan%" not in table, table
    readme = os.environ.get("EDGEKIT_ZOO_README")
    if readme:
        zoo.write_readme(Path(readme), table)


# The user's path with the CLI alone, on one model of each family (the conversions themselves are
# proven above for every entry; this proves export -> verify -> predict of a user's .keras file).
CLI_ENTRIES = ("lstm_two_inputs", "gru", "transformer", "mobilenet_v3_small")


@pytest.mark.parametrize("name", CLI_ENTRIES)
def test_zoo_model_through_the_cli(zoo_root, zoo_results, name):
    zoo_results[name]  # trained (and converted) once, whichever test needs it first
    device = "rpi4" if shutil.which("apt-get") and shutil.which("dpkg-deb") else None
    report = zoo.cli_check(zoo.ENTRIES[name], zoo_root / name, device=device)
    assert report["export"]["code"] == 0, report["export"]["last"]
    # verify ran every bundle through its gates: float bundles must pass; an int8 bundle may fail its gate
    # on these 64 samples (one flipped sample is 1.6 points of accuracy) but must say why. The int8
    # agreement of every entry is asserted on its own in test_zoo_entry_exports.
    assert report["verify"]["code"] in (0, 1), report["verify"]["last"]
    verified = json.loads((zoo_root / name / "verify.json").read_text())
    for entry in verified["artifacts"]:
        if entry["variant"] == "fp32":
            assert entry["passed"], (entry["bundle"], entry["reasons"])
        assert entry["passed"] or entry["reasons"], entry["bundle"]
    assert report["predict"]["code"] == 0, report["predict"]["last"]
    # The int8 bundle decides like Keras (3 samples; at most one int8 flip tolerated).
    same = np.equal(report["predict"]["classes"], report["keras_classes"])
    assert same.sum() >= 2, (report["predict"]["classes"], report["keras_classes"])
    if device:  # the same int8 bundle on the emulated Raspberry Pi 4 computes what the host computes
        assert report["devices"]["code"] == 0, report["devices"]["last"]
        checked = json.loads((zoo_root / name / "devices-rpi4.json").read_text())
        machine = checked["results"][0]["machine"]
        assert checked["passed"] and (machine.get("machine") if isinstance(machine, dict) else machine) == "aarch64"


def test_masked_model_through_the_cli_fails_with_one_line(zoo_root, zoo_results):
    zoo_results["masked_lstm"]
    report = zoo.cli_check(zoo.ENTRIES["masked_lstm"], zoo_root / "masked_lstm", variants=("fp32",), device=None)
    assert report["export"]["code"] == 1
    (line,) = report["export"]["failed"]  # tflite fp32 fails with the reason; ONNX converts the mask
    assert "layer 'embedding' (Embedding) has mask_zero=True" in line and "pre-padding" in line
