"""Gates: the one tolerance table (runtime/gates.py), --gate overrides, the elementwise rule, PSNR,
golden-file tolerances, and the reasons a drifted bundle fails."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.core import UserError
from edgekit.runtime import gates
from edgekit.verify.evaluate import EvalData, Task, score
from edgekit.verify.gates import (
    CONFIDENCE_MARGIN_FLOOR,
    DEFAULT_GATES,
    check,
    gate_for,
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
    assert set(DEFAULT_GATES) == {"fp32", "fp16", "dynamic", "int8", "int16x8"} == set(gates.SAME_BUNDLE)
    for table in (DEFAULT_GATES, gates.SAME_BUNDLE):
        for variant, gate in table.items():
            assert gate.reason, variant
    fp32, fp16 = DEFAULT_GATES["fp32"], DEFAULT_GATES["fp16"]
    assert (fp32.atol, fp32.rtol, fp32.min_agreement) == (1e-4, 1e-3, 1.0)
    assert (fp16.atol, fp16.rtol, fp16.min_psnr_db, fp16.min_agreement) == (1e-2, 1e-2, 45.0, 0.99)
    assert fp16.max_failed_fraction == 0.01 and fp32.max_failed_fraction is None
    for variant in ("dynamic", "int8", "int16x8"):
        assert DEFAULT_GATES[variant].max_accuracy_drop == 1.0
        assert DEFAULT_GATES[variant].min_psnr_db == 30.0
        assert DEFAULT_GATES[variant].atol is None          # no parity limit on integer outputs
    assert gates.SAME_BUNDLE["int8"].max_abs_error == 0.12     # 31 steps of 1/256, measured 0.043 and 0.094


def test_measured_float_deviations_pass_their_gates():
    """The deviations measured on the trained models (issue 14) pass: fp32 speech on an unseen
    speaker moves a probability by 1.75e-5; fp16 moves one by 5.6e-3 (image) and 7.5e-3 (speech)."""
    probs, _ = confident_probs()
    for variant, moved in (("fp32", 1.75e-5), ("fp16", 5.6e-3), ("fp16", 7.5e-3)):
        out = probs.copy()
        out[7, 0] += moved
        out[7, 1] -= moved
        assert gates.check(DEFAULT_GATES[variant], probs, out) == [], (variant, moved)


def test_elementwise_rule_fails_only_when_both_limits_are_exceeded():
    gate = gates.Gate(atol=1e-3, rtol=1e-2)
    ref = np.array([[0.9, 0.1], [0.5, 0.5]])
    assert gates.elementwise_failures(gate, ref, ref + [[5e-3, 0], [0, 0]]) == 0    # 5e-3 < 1% of 0.9
    assert gates.elementwise_failures(gate, ref, ref + [[0, 5e-3], [0, 0]]) == 1    # 5e-3 > 1% of 0.1
    assert gates.elementwise_failures(gate, ref, ref + [[0, 5e-4], [0, 0]]) == 0    # below atol
    reasons = gates.check(gate, ref, ref + [[0, 5e-3], [0, 0]])
    assert reasons and reasons[0].startswith("1 of 4 outputs differ by more than atol")
    quantile = gate.with_limits(max_failed_fraction=0.25)       # 1 of 4 allowed, 2 of 4 not
    assert gates.check(quantile, ref, ref + [[0, 5e-3], [0, 0]]) == []
    assert gates.check(quantile, ref, ref + [[0, 5e-3], [0.1, 0]])[0].startswith("2 of 4")


def test_psnr_is_qualcomms_definition():
    ref = np.array([[1.0, 0.0], [0.0, 1.0]])
    out = ref + 0.01                                  # RMSE 0.01, peak 1 -> 40 dB
    assert gates.parity_metrics(ref, out)["psnr_db"] == pytest.approx(40.0)
    assert gates.check(gates.Gate(min_psnr_db=41), ref, out) == ["PSNR 40.0 dB < 41 dB"]


def test_golden_meta_tolerance_old_and_new():
    old = {"tolerance": {"fp32": {"max_abs_error": 1e-5, "min_agreement": 1.0}}}
    gate = gates.from_meta(old, "fp32")
    assert gate.max_abs_error == 1e-5 and gate.atol == DEFAULT_GATES["fp32"].atol
    assert gates.from_meta(old, "int8") == DEFAULT_GATES["int8"]
    flat = {"tolerance": {"max_abs_error": 0.06, "min_agreement": 0.99}}
    assert gates.from_meta(flat, "int8").max_abs_error == 0.06
    assert gates.from_meta({}, None) == DEFAULT_GATES["fp32"]


def test_device_golden_flags():
    from edgekit.runtime.cli import golden_gate

    alone = golden_gate({}, "fp32", atol=0.5)
    assert (alone.atol, alone.rtol) == (0.5, 0.0)        # --atol alone bounds every element
    both = golden_gate({}, "fp16", atol=0.1, rtol=0.2, min_agreement=0.5)
    assert (both.atol, both.rtol, both.min_agreement) == (0.1, 0.2, 0.5)
    assert set(both.overridden) == {"atol", "rtol", "min_agreement"}


def test_overrides_apply_per_variant_then_per_format():
    overrides = parse_overrides(["int8.max_accuracy_drop=2", "onnx-int8.min_agreement=0.9"])
    assert gate_for("tflite", "int8", overrides).max_accuracy_drop == 2.0
    assert gate_for("tflite", "int8", overrides).min_agreement == DEFAULT_GATES["int8"].min_agreement
    onnx = gate_for("onnx", "int8", overrides)
    assert (onnx.max_accuracy_drop, onnx.min_agreement) == (2.0, 0.9)
    assert set(onnx.overridden) == {"max_accuracy_drop", "min_agreement"}
    assert gate_for("tflite", "fp32", overrides) == DEFAULT_GATES["fp32"]
    assert tolerances(overrides)["int8"]["max_accuracy_drop"] == 2.0
    new_keys = parse_overrides(["fp16.atol=0.02", "fp16.min_psnr_db=45", "fp32.rtol=0"])
    assert gate_for("tflite", "fp16", new_keys).atol == 0.02
    assert gate_for("tflite", "fp16", new_keys).min_psnr_db == 45
    assert gate_for("onnx", "fp32", new_keys).rtol == 0


@pytest.mark.parametrize("bad", ["int8", "int8.max_accuracy_drop", "int9.max_accuracy_drop=1",
                                 "int8.speed=1", "int8.max_accuracy_drop=abc",
                                 "int8.min_agreement=1.5", "fp32.max_abs_error=-1", "fp16.atol=nan",
                                 "fp16.max_failed_fraction=2"])
def test_bad_overrides_are_user_errors(bad):
    with pytest.raises(UserError, match="--gate"):
        parse_overrides([bad])


def test_tolerances_round_trip_through_plain_data():
    overrides = parse_overrides(["fp16.max_abs_error=0.002"])
    meta = {"tolerance": tolerances(overrides)}
    assert gate_for("tflite", "fp16", meta=meta).max_abs_error == 0.002
    assert gate_for("tflite", "int8", meta=meta) == DEFAULT_GATES["int8"]


@pytest.mark.parametrize("tolerance, variant, recipe, want", [
    ({"max_abs_error": 0.06}, "int8", None, 0.06),                 # flat: every variant
    ({"max_abs_error": 0.06}, "fp16", None, 0.06),
    ({"int8": {"max_abs_error": 0.2}}, "int8", None, 0.2),          # keyed by variant
    ({"int8": {"max_abs_error": 0.2}}, "fp16", None, DEFAULT_GATES["fp16"].max_abs_error),
    ({"max_abs_error": 0.06}, "int4", "static_wi4_ai8", 0.06),     # an unlisted variant: its recipe's family
    ({}, "int4", "static_wi4_ai8", DEFAULT_GATES["int8"].max_abs_error),
])
def test_the_device_and_verify_golden_read_a_golden_tolerance_alike(tolerance, variant, recipe, want):
    """One reader (runtime/gates.py from_meta) behind `python -m edgekit.runtime golden` and
    `edgekit verify --golden`: a flat {"max_abs_error": 0.06} is 0.06 in both (it was ignored by the
    host's reader), and a variant the table does not list gets its recipe family's gate in both."""
    from edgekit.runtime.cli import golden_gate

    meta = {"tolerance": tolerance}
    device = golden_gate(meta, variant, recipe=recipe)
    host = gate_for("tflite", variant, meta=meta, recipe=recipe)
    assert device == host and device.max_abs_error == want


def test_a_variant_with_no_known_gate_is_refused_alike_on_both_sides():
    from edgekit.runtime.cli import golden_gate
    from edgekit.runtime.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="no gate for variant 'mystery'"):
        golden_gate({}, "mystery", recipe="handmade")
    with pytest.raises(UserError, match="no gate for variant 'mystery'"):
        gate_for("tflite", "mystery", recipe="handmade")


def test_identical_outputs_pass_every_gate():
    probs, y = confident_probs()
    task = Task("image", ["a", "b", "c"])
    metrics = score(probs, probs.copy(), EvalData(np.zeros((len(y), 1)), y), task, float(np.mean(
        np.argmax(probs, 1) == y)))
    for variant, gate in DEFAULT_GATES.items():
        assert check(gate, probs, probs.copy(), metrics["accuracy_delta"]) == [], variant


def test_perturbed_outputs_fail_fp32_with_the_error_reason():
    # Noise of 1e-3 is ~100x below what flips a confident prediction but 10x above fp32's atol.
    probs, y = confident_probs()
    drifted = probs + np.random.default_rng(1).normal(0, 1e-3, probs.shape).astype(np.float32)
    reasons = check(DEFAULT_GATES["fp32"], probs, drifted)
    assert "outputs differ by more than atol 0.0001" in reasons[0]
    assert any(r.startswith("PSNR") for r in reasons)
    assert check(DEFAULT_GATES["fp16"], probs, drifted) == []


def test_flipped_predictions_fail_int8_on_accuracy_and_agreement():
    probs, y = confident_probs(n=500)
    flipped = probs.copy()
    rows = np.arange(0, 500, 10)                   # 50 of 500 rows (10%): rolled to another class
    flipped[rows] = np.roll(flipped[rows], 1, axis=1)
    ref_acc = float(np.mean(np.argmax(probs, 1) == y))
    metrics = score(probs, flipped, EvalData(np.zeros((500, 1)), y), Task("image", list("abc")), ref_acc)
    assert metrics["accuracy_delta"] == pytest.approx(-10.0, abs=1)
    reasons = check(DEFAULT_GATES["int8"], probs, flipped, metrics["accuracy_delta"])
    assert any(r.startswith("accuracy drop") for r in reasons)
    assert any(r.startswith("top-1 agreement") for r in reasons)
    relaxed = gate_for("tflite", "int8", parse_overrides(["int8.max_accuracy_drop=11",
                                                         "int8.min_agreement=0.89", "int8.min_psnr_db=0"]))
    assert check(relaxed, probs, flipped, metrics["accuracy_delta"]) == []


def test_confidence_floor_is_between_uniform_and_trained_outputs():
    from edgekit.runtime.compare import confidence_margin

    probs, _ = confident_probs()
    uniform = np.full_like(probs, 1 / 3) + np.random.default_rng(0).normal(0, 0.005, probs.shape)
    assert confidence_margin(uniform) < CONFIDENCE_MARGIN_FLOOR < confidence_margin(probs)


def test_one_golden_reader_round_trips_and_rejects_bad_files(tmp_path):
    from edgekit.runtime.errors import InvalidInputError
    from edgekit.runtime.golden import Golden, read
    from edgekit.verify.golden import save_golden

    probs, y = confident_probs(n=20)
    meta = {"task": "image", "tolerance": tolerances()}
    save_golden(tmp_path / "g.npz", Golden(np.zeros((20, 4), np.float32), probs, y, None, meta))
    golden = read(tmp_path / "g.npz")
    assert golden.meta["golden_format"] == 1 and golden.task == "image"
    assert np.array_equal(golden.y, y) and golden.utterance_y is None
    assert len(golden.head(5).x) == len(golden.head(5).reference) == len(golden.head(5).y) == 5
    assert gates.from_meta(golden.meta, "fp16") == DEFAULT_GATES["fp16"]
    (tmp_path / "text.npz").write_text("not an archive")
    np.savez(tmp_path / "partial.npz", x=np.zeros(3))
    np.savez(tmp_path / "uneven.npz", x=np.zeros(3), reference=np.zeros((2, 2)))
    for name, message in (("missing.npz", "not found"), ("text.npz", "not an npz"),
                          ("partial.npz", "missing reference"), ("uneven.npz", "3 inputs but 2")):
        with pytest.raises(InvalidInputError, match=message):
            read(tmp_path / name)


def test_labels_must_have_one_class_per_decision(tmp_path):
    """Per-step outputs [N, T, C] need per-step labels [N, T]: a per-sample `y` gets one line, not a
    numpy broadcasting error from deep inside the accuracy code."""
    from edgekit.core import UserError
    from edgekit.verify.reference import _check_label_shape

    path = tmp_path / "samples.npz"
    _check_label_shape(path, (64,), (None, 3))            # one decision per sample
    _check_label_shape(path, (64, 24), (None, 24, 3))     # one per step
    _check_label_shape(path, (64, 24), (None, None, 3))   # any length
    with pytest.raises(UserError, match=r"shape \(64,\).*\(N, 24\)") as info:
        _check_label_shape(path, (64,), (None, 24, 3))
    assert "\n" not in str(info.value)
    with pytest.raises(UserError, match=r"\(N\)"):
        _check_label_shape(path, (64, 24), (None, 3))
