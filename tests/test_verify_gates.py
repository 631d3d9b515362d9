"""Gates: defaults per variant, --gate overrides, and the reasons a drifted bundle fails."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.core import UserError
from edgekit.verify.evaluate import EvalData, Task, score
from edgekit.verify.gates import (
    CONFIDENCE_MARGIN_FLOOR,
    DEFAULT_GATES,
    check,
    gate_for,
    gates_from_tolerances,
    parse_overrides,
    tolerances,
)


def confident_probs(n: int = 400, classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    logits = rng.normal(0, 0.3, (n, classes))
    logits[np.arange(n), y] += 5.0
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return probs.astype(np.float32), y


def test_every_variant_has_a_gate_with_a_reason():
    assert set(DEFAULT_GATES) == {"fp32", "fp16", "dynamic", "int8", "int16x8"}
    for variant, gate in DEFAULT_GATES.items():
        assert gate.reason, variant
    assert DEFAULT_GATES["fp32"].max_abs_error == 1e-5 and DEFAULT_GATES["fp32"].min_agreement == 1.0
    assert DEFAULT_GATES["fp16"].max_abs_error == 1e-3 and DEFAULT_GATES["fp16"].min_agreement == 0.999
    for variant in ("dynamic", "int8", "int16x8"):
        assert DEFAULT_GATES[variant].max_accuracy_drop == 1.0
        assert DEFAULT_GATES[variant].min_agreement == 0.98


def test_overrides_apply_per_variant_then_per_format():
    overrides = parse_overrides(["int8.max_accuracy_drop=2", "onnx-int8.min_agreement=0.9"])
    assert gate_for("tflite", "int8", overrides).max_accuracy_drop == 2.0
    assert gate_for("tflite", "int8", overrides).min_agreement == 0.98
    onnx = gate_for("onnx", "int8", overrides)
    assert (onnx.max_accuracy_drop, onnx.min_agreement) == (2.0, 0.9)
    assert set(onnx.overridden) == {"max_accuracy_drop", "min_agreement"}
    assert gate_for("tflite", "fp32", overrides) == DEFAULT_GATES["fp32"]
    assert tolerances(overrides)["int8"]["max_accuracy_drop"] == 2.0


@pytest.mark.parametrize("bad", ["int8", "int8.max_accuracy_drop", "int9.max_accuracy_drop=1",
                                 "int8.speed=1", "int8.max_accuracy_drop=abc",
                                 "int8.min_agreement=1.5", "fp32.max_abs_error=-1"])
def test_bad_overrides_are_user_errors(bad):
    with pytest.raises(UserError, match="--gate"):
        parse_overrides([bad])


def test_tolerances_round_trip_through_plain_data():
    overrides = parse_overrides(["fp16.max_abs_error=0.002"])
    gates = gates_from_tolerances(tolerances(overrides))
    assert gates["fp16"].max_abs_error == 0.002
    assert gates["int8"] == DEFAULT_GATES["int8"]


def test_identical_outputs_pass_every_gate():
    probs, y = confident_probs()
    task = Task("image", ["a", "b", "c"])
    metrics = score(probs, probs.copy(), EvalData(np.zeros((len(y), 1)), y), task, float(np.mean(
        np.argmax(probs, 1) == y)))
    for variant, gate in DEFAULT_GATES.items():
        assert check(gate, max_abs_error=metrics["max_abs_error"], agreement=metrics["agreement"],
                     accuracy_delta=metrics["accuracy_delta"]) == [], variant


def test_perturbed_outputs_fail_fp32_with_the_error_reason():
    # Noise of 1e-4 is ~10x below what flips a confident prediction but 10x above the fp32 tolerance.
    probs, y = confident_probs()
    drifted = probs + np.random.default_rng(1).normal(0, 1e-4, probs.shape).astype(np.float32)
    metrics = score(probs, drifted, EvalData(np.zeros((len(y), 1)), y), Task("image", list("abc")), None)
    reasons = check(DEFAULT_GATES["fp32"], max_abs_error=metrics["max_abs_error"],
                    agreement=metrics["agreement"], accuracy_delta=metrics["accuracy_delta"])
    assert len(reasons) == 1 and reasons[0].startswith("max abs error")
    assert check(DEFAULT_GATES["fp16"], max_abs_error=metrics["max_abs_error"],
                 agreement=metrics["agreement"], accuracy_delta=None) == []


def test_flipped_predictions_fail_int8_on_accuracy_and_agreement():
    probs, y = confident_probs(n=500)
    flipped = probs.copy()
    rows = np.arange(0, 500, 25)                   # 20 of 500 rows (4%): rolled to another class
    flipped[rows] = np.roll(flipped[rows], 1, axis=1)
    ref_acc = float(np.mean(np.argmax(probs, 1) == y))
    metrics = score(probs, flipped, EvalData(np.zeros((500, 1)), y), Task("image", list("abc")), ref_acc)
    assert metrics["accuracy_delta"] == pytest.approx(-4.0, abs=0.5)
    reasons = check(DEFAULT_GATES["int8"], max_abs_error=metrics["max_abs_error"],
                    agreement=metrics["agreement"], accuracy_delta=metrics["accuracy_delta"])
    assert any(r.startswith("accuracy drop") for r in reasons)
    assert any(r.startswith("top-1 agreement") for r in reasons)
    relaxed = gate_for("tflite", "int8", parse_overrides(["int8.max_accuracy_drop=5",
                                                         "int8.min_agreement=0.95"]))
    assert check(relaxed, max_abs_error=metrics["max_abs_error"], agreement=metrics["agreement"],
                 accuracy_delta=metrics["accuracy_delta"]) == []


def test_confidence_floor_is_between_uniform_and_trained_outputs():
    from edgekit.runtime.compare import confidence_margin

    probs, _ = confident_probs()
    uniform = np.full_like(probs, 1 / 3) + np.random.default_rng(0).normal(0, 0.005, probs.shape)
    assert confidence_margin(uniform) < CONFIDENCE_MARGIN_FLOOR < confidence_margin(probs)
