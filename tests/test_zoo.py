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
from pathlib import Path

import numpy as np
import pytest
import zoo

pytestmark = pytest.mark.slow

# fp32: the same float32 math in another runtime; summation order differs (~1e-7 seen).
FP32_TOLERANCE = 1e-5
# int8: the models are trained to decisive outputs, so quantization should rarely flip a decision;
# 64 held-out samples, at most ~6 flips (accuracy gates on real data live in verify/).
INT8_AGREEMENT = 0.9


@pytest.fixture(scope="module")
def zoo_root(tmp_path_factory) -> Path:
    return Path(os.environ.get("EDGEKIT_ZOO_DIR") or tmp_path_factory.mktemp("zoo"))


def _selected() -> list[str]:
    heavy = os.environ.get("EDGEKIT_ZOO_HEAVY") == "1"
    return [n for n in zoo.ENTRIES if heavy or n not in zoo.HEAVY]


@pytest.fixture(scope="module")
def zoo_results(zoo_root):
    results = {r.name: r for r in zoo.run_zoo(_selected(), zoo_root)}
    readme = os.environ.get("EDGEKIT_ZOO_README")
    if readme:
        zoo.write_readme(Path(readme), zoo.markdown_table(list(results.values())))
    return results


def test_zoo_has_every_architecture_the_issue_names():
    covered = " ".join(e.covers for e in zoo.ENTRIES.values())
    for name in ("stacked", "Bidirectional", "Conv1D", "2 inputs", "GRU", "SimpleRNN", "mask_zero",
                 "MultiHeadAttention", "LayerNorm", "GELU", "MobileNetV3", "EfficientNet", "ResNet50",
                 "DenseNet121", "ConvNeXt"):
        assert name in covered
    assert len(zoo.ENTRIES) >= 12 and len(_selected()) >= 12


# Measured gaps (2026-11-26), each failing the test below on its ONNX side only; strict: when one
# is fixed the test says so. TFLite passes for both.
KNOWN_GAPS = {
    "convnext_tiny": "tf2onnx 1.17 cannot convert the StatefulPartitionedCall that Keras 3's TF backend "
                     "wraps grouped (depthwise 7x7) convolutions in",
    "efficientnet_b0": "onnxruntime static QDQ int8 agreed with Keras on 52% of samples (TFLite int8: 92%)",
}


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.xfail(reason=KNOWN_GAPS[n], strict=True)) if n in KNOWN_GAPS else n
    for n, e in zoo.ENTRIES.items() if not e.expect_refusal and n in _selected()])
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
        assert result.variants[key]["agreement"] >= INT8_AGREEMENT, key
    assert result.train.get("keras_accuracy", 1.0) >= 0.6, "the zoo model did not learn its synthetic task"


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


def test_keras_own_litert_export_reported(zoo_results):
    for result in zoo_results.values():
        assert result.keras_litert, result.name
    # The reason this project exists (conversion-facts.md): Keras' export of an LSTM does not run here.
    peer = zoo_results["lstm_stacked"].keras_litert
    assert not peer["exported"] or not peer["runs"] or any(op.startswith("Flex") for op in peer["ops"])


# The user's path with the CLI alone, on one model of each family (the conversions themselves are
# proven above for every entry; this proves export -> verify -> predict of a user's .keras file).
CLI_ENTRIES = ("lstm_two_inputs", "gru", "transformer", "mobilenet_v3_small")


@pytest.mark.parametrize("name", CLI_ENTRIES)
def test_zoo_model_through_the_cli(zoo_root, zoo_results, name):
    report = zoo.cli_check(zoo.ENTRIES[name], zoo_root / name)
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


def test_masked_model_through_the_cli_fails_with_one_line(zoo_root, zoo_results):
    report = zoo.cli_check(zoo.ENTRIES["masked_lstm"], zoo_root / "masked_lstm", variants=("fp32",))
    assert report["export"]["code"] == 1
    (line,) = report["export"]["failed"]  # tflite fp32 fails with the reason; ONNX converts the mask
    assert "layer 'embedding' (Embedding) has mask_zero=True" in line and "pre-padding" in line
