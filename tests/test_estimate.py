"""Device latency ESTIMATES (devices/estimate.py) and the bundle to ship per device (verify/recommend.py).

Fast tests price the stored work of the four MobileNets (REFERENCE_WORK, counted once by
`python -m edgekit.devices.estimate --calibrate --recount DIR`) with the profiles' cost models and check
the recommendation logic on hand-built rows; slow tests count and estimate real (tiny, trained) bundles.
"""

from __future__ import annotations

import copy
import json

import pytest

from edgekit.cli import main
from edgekit.devices import estimate as est
from edgekit.devices.estimate import GraphWork, OpWork, calibration
from edgekit.runtime import profiles
from edgekit.runtime.formats.graph import peak_live
from edgekit.verify.recommend import TIE, choose

PUBLISHED_BOARD = {"rpi4": "rpi4", "rpi3-armv7": "rpi3plus"}


def reference_graph(model: str) -> GraphWork:
    """A graph with the counted work of a published model: the cost model is linear in MACs, bytes
    and op count, so one conv op, one depthwise op and zero-work ops price the same as the real graph."""
    w = calibration.REFERENCE_WORK[model]
    ops = [OpWork("CONV_2D", "conv", "fp32", w["conv"], 0, w["bytes"]),
           OpWork("DEPTHWISE_CONV_2D", "depthwise", "fp32", w["dw"], 0, 0)]
    ops += [OpWork("ADD", "elementwise", "fp32") for _ in range(w["ops"] - 2)]
    return GraphWork("tflite", model, 0, ops)


@pytest.mark.parametrize("device", sorted(PUBLISHED_BOARD))
@pytest.mark.parametrize("model", sorted(calibration.REFERENCE_WORK))
def test_the_estimate_band_holds_each_published_figure_the_fit_did_not_see(device, model):
    """Leave-one-out: the figure is dropped from the fit, the rest predict it; the profile's calibrated
    band (the 25% target) must still contain it. The stored profile prices the same work as the pooled fit."""
    held = calibration.held_out_errors(calibration.REFERENCE_WORK)["leave_one_out"]["rows"]
    row = next(r for r in held if r["device"] == PUBLISHED_BOARD[device] and r["model"] == model)
    band = profiles.load(device)["cost_model"]["uncertainty"]["calibrated"]
    assert row["estimate_ms"] / band < row["published_ms"] < row["estimate_ms"] * band
    result = est.estimate(device, work=reference_graph(model), threads=4)
    assert result["estimate"] is True and result["memory"]["estimate"] is True
    assert result["low_ms"] < result["point_ms"] < result["high_ms"]


def test_held_out_error_meets_the_target_and_profiles_match_the_calibration():
    held = calibration.held_out_errors(calibration.REFERENCE_WORK)
    assert len(held["leave_one_out"]["rows"]) == 12 and len(held["cross_device"]["rows"]) == 6
    assert held["leave_one_out"]["max_abs_error"] < 0.25
    assert held["cross_device"]["max_abs_error"] < 0.25
    # The profile files hold exactly what `--calibrate --write` computes from the stored counts.
    for name, model in calibration.cost_models().items():
        stored = profiles.load(name)["cost_model"]
        for key in ("gmacs_per_core", "gbytes_per_s_per_core", "op_overhead_us", "dtype_speedup",
                    "parallel_fraction", "format_factor", "uncertainty"):
            assert stored[key] == model[key], (name, key)


def test_threads_int8_and_lstm_behave_as_documented():
    conv = GraphWork("tflite", "m", 1000, [OpWork("CONV_2D", "conv", "fp32", 50_000_000, 100_000, 400_000)])
    one, four = (est.estimate("rpi4", work=conv, threads=n)["point_ms"] for n in (1, 4))
    assert one / four == pytest.approx(est.thread_speedup(4, 0.9), rel=0.05)
    int8 = copy.deepcopy(conv)
    int8.ops[0].dtype = "int8"
    assert est.estimate("rpi4", work=int8)["point_ms"] < est.estimate("rpi4", work=conv)["point_ms"]
    lstm = GraphWork("tflite", "m", 1000,
                     [OpWork("UNIDIRECTIONAL_SEQUENCE_LSTM", "lstm", "fp32", 2_000_000, 50_000, 9_000)])
    lstm8 = copy.deepcopy(lstm)
    lstm8.ops[0].dtype = "int8"
    # LiteRT's integer LSTM: NEON on ARM (faster than fp32), portable scalar code on x86 (slower).
    assert est.estimate("rpi4", work=lstm8)["point_ms"] < est.estimate("rpi4", work=lstm)["point_ms"]
    assert (est.estimate("x86_64-host", work=lstm8, threads=1)["point_ms"]
            > est.estimate("x86_64-host", work=lstm, threads=1)["point_ms"])
    assert est.estimate("rpi4", work=lstm, threads=1)["point_ms"] == est.estimate("rpi4", work=lstm)["point_ms"]
    result = est.estimate("rpi4", work=lstm)
    assert any("LSTM" in w for w in result["warnings"])
    assert all("estimate" in line for line in est.text_lines(result))


def test_onnx_counting_on_a_hand_built_graph(tmp_path):
    """Conv (+ batch-norm Mul/Add + Clip, which onnxruntime fuses), depthwise Conv, pooling, Gemm."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=shape).astype(np.float32), name) for name, shape in
             [("w1", (4, 3, 3, 3)), ("scale", (1, 4, 1, 1)), ("shift", (1, 4, 1, 1)), ("w2", (4, 1, 3, 3)),
              ("w3", (4, 2))]]
    inits += [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in [("lo", 0.0), ("hi", 6.0)]]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Mul", ["c1", "scale"], ["m"]), helper.make_node("Add", ["m", "shift"], ["a"]),
             helper.make_node("Clip", ["a", "lo", "hi"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["c2"], pads=[1, 1, 1, 1], group=4),
             helper.make_node("GlobalAveragePool", ["c2"], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "w3"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, tmp_path / "m.onnx")
    work = est.count_work(tmp_path / "m.onnx")
    assert [o.op_class for o in work.ops] == ["conv", "depthwise", "pooling", "movement", "dense"]
    assert [o.macs for o in work.ops] == [256 * 27, 256 * 9, 0, 0, 8]
    assert work.weights_bytes == 4 * (108 + 4 + 4 + 36 + 8 + 2)
    assert work.arena_bytes >= 2 * 256 * 4          # two 4x8x8 float maps live at once
    assert est.estimate("rpi4", tmp_path / "m.onnx")["format"] == "onnx"


def test_peak_live_memory_walks_lifetimes():
    # a (100 B) lives for ops 0-1, b (50 B) for 1-2, c (10 B) for 2-3: peak is a + b.
    assert peak_live({"a": ([0, 1], 100), "b": ([1, 2], 50), "c": ([2, 3], 10)}) == 150
    assert peak_live({}) == 0


def test_cost_model_validation_names_the_missing_source_and_bad_numbers():
    profile = profiles.load("rpi4")
    assert profiles.validate(profile) == []
    broken = copy.deepcopy(profile)
    del broken["cost_model"]["sources"]["op_overhead_us"]
    broken["cost_model"]["gbytes_per_s_per_core"] = -1
    problems = profiles.validate(broken)
    assert any("source for 'op_overhead_us'" in p for p in problems)
    broken["cost_model"]["sources"]["op_overhead_us"] = "x"
    assert any("gbytes_per_s_per_core" in p for p in profiles.validate(broken))
    broken = copy.deepcopy(profile)
    broken["cost_model"]["dtype_speedup"]["default"].pop("int8")
    assert any("dtype_speedup" in p for p in profiles.validate(broken))


def row(name, ms, size, excluded=None):
    r = {"bundle": name, "point_ms": ms, "low_ms": ms / 1.5, "high_ms": ms * 1.5, "threads": 4,
         "size_bytes": size, "passed": excluded is None}
    if excluded:
        r["excluded"] = excluded
    return r


def test_recommendation_is_the_fastest_passing_bundle_and_size_breaks_ties():
    best, reason = choose([row("m-fp32", 40.0, 4000), row("m-int8", 15.0, 1000),
                           row("m-fp16", 10.0, 2000, "fails its gate (max abs error)")])
    assert best["bundle"] == "m-int8"
    assert "fastest by estimate" in reason and "m-fp16 (fails its gate)" in reason and "estimate" in reason
    tied_ms = 15.0 * (1 + TIE / 2)
    best, reason = choose([row("m-int8", 15.0, 3000), row("m-dyn", tied_ms, 1000)])
    assert best["bundle"] == "m-dyn" and "smaller file" in reason
    best, reason = choose([row("m-onnx", 5.0, 10, "device 'x' has no onnx runtime")])
    assert best is None and "no bundle passes" in reason and "no onnx runtime" in reason


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["devices", "estimate", "rpi9", str(tmp_path)]) == 2
    assert main(["devices", "estimate", "rpi4", str(tmp_path / "missing")]) == 2
    (tmp_path / "notes.txt").write_text("x")
    assert main(["devices", "estimate", "rpi4", str(tmp_path / "notes.txt")]) == 2
    (tmp_path / "bad.tflite").write_bytes(b"not a flatbuffer")
    assert main(["devices", "estimate", "rpi4", str(tmp_path / "bad.tflite")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and "unknown device" in err[0] and "not found" in err[1]
    assert "Traceback" not in "\n".join(err)


# Slow: real bundles (tests/bundles.py: tiny models, briefly trained, converted) -------------------------

EXPECTED_MACS = {"dense": 8 * 16 + 16 * 3, "image": 16 * 16 * 8 * 27 + 16 * 16 * 8 * 72 + 8 * 3}


@pytest.mark.parametrize("name", ["dense", "image"])
def test_counts_real_bundles_in_both_formats(rt_bundles, name, capsys):
    fp32 = est.count_work(rt_bundles / f"{name}-tflite-fp32")
    int8 = est.count_work(rt_bundles / f"{name}-tflite-int8")
    onnx = est.count_work(rt_bundles / f"{name}-onnx-fp32")
    assert fp32.macs == int8.macs == onnx.macs == EXPECTED_MACS[name]
    assert {o.dtype for o in fp32.ops if o.op_class in est.COMPUTE_CLASSES} == {"fp32"}
    assert {o.dtype for o in int8.ops if o.op_class in est.COMPUTE_CLASSES} == {"int8"}
    assert int8.weights_bytes < fp32.weights_bytes and fp32.arena_bytes > 0
    assert main(["devices", "estimate", "rpi4", str(rt_bundles / f"{name}-tflite-int8"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["estimate"] is True and 0 < result["low_ms"] < result["point_ms"] < result["high_ms"]
    assert result["file_size_bytes"] == (rt_bundles / f"{name}-tflite-int8" / "model.tflite").stat().st_size
    assert {"arena_bytes", "weights_bytes", "total_bytes"} <= set(result["memory"])
    assert "cost model of rpi4" in result["basis"]
    assert main(["devices", "estimate", "rpi3-armv7", str(rt_bundles / f"{name}-tflite-fp32"),
                 "--threads", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out and all("estimate" in line for line in out)


def test_recommend_on_real_bundles_excludes_what_the_device_cannot_run(rt_bundles):
    from edgekit.verify.recommend import recommend

    artifacts = [{"bundle": b.name, "path": str(b), "format": b.name.split("-")[1],
                  "variant": b.name.split("-")[2], "passed": True, "reasons": [],
                  "size_bytes": (b / ("model.onnx" if "onnx" in b.name else "model.tflite")).stat().st_size}
                 for b in sorted(rt_bundles.glob("image-*"))]
    result = {"artifacts": artifacts}
    devices = recommend(result, ["rpi4", "rpi3-armv7"])
    assert devices["rpi4"]["recommended"] and devices["rpi4"]["estimate"] is True
    armv7 = devices["rpi3-armv7"]
    assert armv7["recommended"].startswith("image-tflite")
    onnx = next(c for c in armv7["candidates"] if c["format"] == "onnx")
    assert "no onnx runtime" in onnx["excluded"]
    assert all("rpi4" in a["device_estimates"] for a in artifacts)


def test_a_phone_recommendation_excludes_bundles_that_fail_the_mediapipe_check(monkeypatch):
    """`verify --device android-arm64` runs the phone check (MediaPipe Tasks) on the TFLite bundles
    still in the running; one that disagrees with edgekit's runtime cannot be the one to ship."""
    from edgekit.verify import recommend as rec

    profile = rec.profiles.load("android-arm64")
    result = {"artifacts": [{"bundle": "m-tflite-int8", "path": "/b/int8", "format": "tflite"},
                            {"bundle": "m-tflite-fp32", "path": "/b/fp32", "format": "tflite"}]}
    candidates = [{"bundle": "m-tflite-int8", "point_ms": 1.0, "low_ms": 0.8, "high_ms": 1.2, "threads": 4},
                  {"bundle": "m-tflite-fp32", "point_ms": 2.0, "low_ms": 1.6, "high_ms": 2.4, "threads": 4}]
    seen = []

    def fake_check(name, bundles, **kwargs):
        seen.append((name, bundles))
        return {"results": [{"bundle": "m-tflite-int8", "status": "fail", "passed": False,
                             "overall": {"agreement_edgekit": 0.912}},
                            {"bundle": "m-tflite-fp32", "status": "pass", "passed": True}]}

    monkeypatch.setattr(rec.phone, "check", fake_check)
    assert rec.phone.is_phone(profile)
    rec._phone_check(result, profile, candidates)
    assert seen == [("android-arm64", ["/b/int8", "/b/fp32"])]
    best, reason = rec.choose(candidates)
    assert best["bundle"] == "m-tflite-fp32"
    assert "MediaPipe Tasks phone check" in candidates[0]["excluded"] and "91.2%" in candidates[0]["excluded"]
