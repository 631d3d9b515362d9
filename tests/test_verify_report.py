"""Scores, JSON keys, Markdown and self-contained HTML on hand-built results (no TensorFlow)."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest

from edgekit.core import UserError
from edgekit.verify.command import write_outputs
from edgekit.verify.evaluate import EvalData, Task, find_bundles, reference_summary, score
from edgekit.verify.report import markdown_report, summary_lines

# The key names users' scripts read from --json: a promise, kept exactly.
PROMISED_TOP = {"task", "samples", "reference", "passed", "artifacts"}
PROMISED_ENTRY = {"bundle", "format", "variant", "size_bytes", "accuracy", "accuracy_delta", "agreement",
                  "max_abs_error", "cosine", "latency_ms", "passed", "reasons"}


def entry(name, variant, passed=True, **extra):
    base = {"bundle": name, "path": f"/x/{name}", "format": name.split("-")[1], "variant": variant,
            "recipe": variant, "size_bytes": 12345, "accuracy": 0.97, "accuracy_delta": -0.4,
            "agreement": 0.995, "max_abs_error": 0.02, "mean_abs_error": 0.001, "cosine": 0.9999,
            "snr_db": 35.0, "latency_ms": 0.12, "passed": passed,
            "reasons": [] if passed else ["accuracy drop 1.40 pp > 1 pp"]}
    base.update(extra)
    return base


def sample_result(passed=False):
    layers = {"tensors": [{"tensor": "model/dense/MatMul;model/dense/BiasAdd", "op": "FULLY_CONNECTED",
                           "rmse_over_scale": 0.9, "snr_db": 12.0, "max_abs_error": 0.1, "mean_error": 0.0,
                           "scale": 0.02, "elements": 16, "suspicious": True},
                          {"tensor": "model/probs/Softmax", "op": "SOFTMAX", "rmse_over_scale": 0.3,
                           "snr_db": 40.0, "max_abs_error": 0.01, "mean_error": 0.0, "scale": 0.004,
                           "elements": 3, "suspicious": False}],
              "worst": ["model/dense/MatMul;model/dense/BiasAdd"], "ideal_rmse_over_scale": 0.289}
    return {"task": "text", "samples": 500, "labels": ["ham", "spam"], "data_source": "heldout.npz",
            "reference": {"source": "keras", "accuracy": 0.974, "confident": True,
                          "confidence_margin": 0.93, "confidence_floor": 0.1},
            "artifacts": [entry("text-tflite-fp32", "fp32", max_abs_error=2e-7),
                          entry("text-tflite-int8", "int8", passed=passed, layers=layers,
                                suggestion="rerun with --fix to re-export keeping in float: x"),
                          entry("text-onnx-fp32", "fp32", latency_ms=None, error="boom", passed=False,
                                reasons=["cannot run: boom"], accuracy=None)],
            "warnings": ["a warning <with> markup"], "passed": passed, "written": [],
            "created": "2025-01-01T00:00:00+00:00"}


def test_json_has_the_promised_keys(tmp_path):
    result = sample_result()
    write_outputs([result], json_path=tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert PROMISED_TOP <= set(data)
    assert "accuracy" in data["reference"] and "confident" in data["reference"]
    for item in data["artifacts"]:
        assert PROMISED_ENTRY <= set(item), PROMISED_ENTRY - set(item)
    assert str(tmp_path / "r.json") in data["written"]


def test_markdown_has_a_table_row_per_bundle_and_the_failure_reason():
    text = markdown_report([sample_result()])
    rows = [line for line in text.splitlines() if line.startswith("| text-")]
    assert len(rows) == 3
    header = next(line for line in text.splitlines() if line.startswith("| bundle"))
    assert all(row.count("|") == header.count("|") for row in rows)
    assert "FAIL: accuracy drop 1.40 pp > 1 pp" in text
    assert "Worst int8 tensors of text-tflite-int8" in text
    assert text.startswith("# edgekit verification: FAIL")


def test_html_is_self_contained_with_embedded_plots(tmp_path):
    write_outputs([sample_result()], html_path=tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page)
    assert "http://" not in page and "https://" not in page
    images = re.findall(r'<img[^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 3                     # accuracy vs size, latency, per-layer error
    for data in images:
        assert base64.b64decode(data).startswith(b"\x89PNG")
    assert "&lt;with&gt;" in page               # user-visible text is escaped


def test_summary_has_one_line_per_bundle_then_the_verdict():
    lines = summary_lines(sample_result())
    assert lines[0].startswith("PASS  text-tflite-fp32")
    assert lines[1].startswith("FAIL  text-tflite-int8: accuracy drop")
    assert "--fix" in lines[1]
    assert lines[3].startswith("FAIL: text model, 3 bundles") and "text-onnx-fp32" in lines[3]
    assert lines[-1].startswith("warning:")


def test_speech_agreement_is_reported_per_frame_and_per_utterance():
    # 4 utterances x 5 frames, classes [silence, one, two]. The bundle flips one speech frame of
    # utterance 0 to "two": 1 of 20 frames disagree, but the utterance (summed over frames) still says "one".
    task = Task("speech", ["_silence", "one", "two"], {"silence_index": 0})
    ref = np.zeros((4, 5, 3), np.float32)
    ref[:, :, 0] = 0.9
    ref[:, :, 1:] = 0.05
    ref[:, 1:4, :] = [0.05, 0.85, 0.1]
    out = ref.copy()
    out[0, 2] = [0.05, 0.3, 0.65]
    frame_y = np.argmax(ref, axis=-1)
    data = EvalData(np.zeros((4, 5, 1)), frame_y, np.array([1, 1, 1, 2]))
    metrics = score(ref, out, data, task, reference_accuracy=0.75)
    assert metrics["agreement"] == pytest.approx(19 / 20)
    assert metrics["utterance_agreement"] == 1.0
    assert metrics["accuracy"] == 0.75 and metrics["accuracy_delta"] == 0.0
    assert metrics["frame_accuracy"] == pytest.approx(19 / 20)
    summary = reference_summary(ref, data, task)
    assert summary["accuracy"] == 0.75 and summary["frame_accuracy"] == 1.0


def test_near_uniform_reference_is_not_confident():
    probs = np.full((50, 3), 1 / 3, np.float32)
    summary = reference_summary(probs, EvalData(np.zeros((50, 1)), np.zeros(50, int)), Task("image", list("abc")))
    assert summary["confident"] is False


def test_bad_artifacts_folders_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        find_bundles(tmp_path / "missing")
    with pytest.raises(UserError, match="no bundles"):
        find_bundles(tmp_path)
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "manifest.json").write_text("{}")
    assert find_bundles(tmp_path) == [tmp_path / "one"]
    assert find_bundles(tmp_path / "one") == [tmp_path / "one"]


def with_devices(result):
    """A result as `verify --device rpi4 --device rpi3-armv7` leaves it (hand-built estimates)."""
    for e in result["artifacts"]:
        if e["format"] == "tflite":
            e["device_estimates"] = {"rpi4": {"estimate": True, "point_ms": 3.2 if e["variant"] == "int8" else 7.5,
                                              "low_ms": 2.0, "high_ms": 9.0, "threads": 4, "memory_bytes": 1,
                                              "basis": "cost model"}}
    result["devices"] = {
        "rpi4": {"recommended": "text-tflite-fp32", "estimate": True, "threads": 4,
                 "reason": "passes its gates; fastest by estimate: 7.5 ms (estimate)",
                 "candidates": [{"bundle": "text-tflite-fp32"},
                                {"bundle": "text-tflite-int8", "excluded": "fails its gate (x)"},
                                {"bundle": "text-onnx-fp32", "excluded": "cannot estimate: boom"}]},
        "rpi3-armv7": {"recommended": None, "estimate": True, "threads": 4,
                       "reason": "no bundle passes its gates and runs there (...)",
                       "candidates": [{"bundle": "text-tflite-fp32", "excluded": "fails"},
                                      {"bundle": "text-tflite-int8", "excluded": "fails"},
                                      {"bundle": "text-onnx-fp32", "excluded": "device has no onnx runtime"}]},
    }
    return result


def test_device_recommendations_are_in_json_markdown_html_and_summary(tmp_path):
    result = with_devices(sample_result())
    write_outputs([result], json_path=tmp_path / "r.json", html_path=tmp_path / "r.html")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["devices"]["rpi4"]["recommended"] == "text-tflite-fp32"   # promised keys, exactly
    assert data["devices"]["rpi4"]["reason"] and data["devices"]["rpi3-armv7"]["recommended"] is None
    text = markdown_report([result])
    header = next(line for line in text.splitlines() if line.startswith("| bundle | size | gate"))
    assert "host latency (ms, measured)" in header and "rpi4 latency (ms, ESTIMATE)" in header
    rows = [line for line in text.splitlines() if line.startswith("| text-") and "ESTIMATE" not in line]
    device_rows = rows[3:]
    assert len(device_rows) == 3 and all(r.count("|") == header.count("|") for r in device_rows)
    assert "~7.5 (2-9) ship" in device_rows[0] and "cannot run" in device_rows[2]
    assert "- **rpi4**: ship **text-tflite-fp32**" in text and "ship **nothing**" in text
    page = (tmp_path / "r.html").read_text()
    assert "Device latency (ESTIMATES)" in page and "rpi4 latency (ms, ESTIMATE)" in page
    lines = summary_lines(result)
    assert any(line.startswith("rpi4: ship text-tflite-fp32 (estimate:") for line in lines)
