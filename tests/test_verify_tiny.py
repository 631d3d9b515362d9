"""verify end to end on a small TRAINED model and real TFLite bundles (built in a child process by
tests/verify_support.py): gates pass on faithful bundles, fail with the right reason on a drifted
or corrupt one, golden files round-trip without Keras, and --fix re-quantizes with float layers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.cli import main as edgekit_main
from edgekit.verify.golden import load_golden

ROOT = Path(__file__).resolve().parents[1]
FACTORY = "verify_support:build_converter"


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return env


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("verify-tiny")
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "verify_support.py"), str(out)],
                          env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _verify(*args, **kwargs):
    from edgekit.verify.core import verify_with_keras

    return verify_with_keras(*args, **kwargs)


def test_faithful_bundles_pass_on_a_confident_reference(tiny):
    result = _verify(tiny / "model", tiny / "bundles", layer_debug=False)
    assert result["reference"]["confident"], result["reference"]   # a pass means something
    assert result["reference"]["accuracy"] > 0.95
    by_variant = {e["variant"]: e for e in result["artifacts"]}
    assert set(by_variant) == {"fp32", "fp16", "dynamic", "int8"}
    assert result["passed"], [(e["bundle"], e["reasons"]) for e in result["artifacts"]]
    assert by_variant["fp32"]["max_abs_error"] <= 1e-5 and by_variant["fp32"]["agreement"] == 1.0
    assert by_variant["int8"]["max_abs_error"] > by_variant["fp32"]["max_abs_error"]
    assert all(e["latency_ms"] > 0 and e["size_bytes"] > 0 for e in result["artifacts"])


def test_drifted_and_corrupt_bundles_fail_with_reasons_and_exit_1(tiny, tmp_path):
    artifacts = tmp_path / "artifacts"
    shutil.copytree(tiny / "bundles" / "blobs-tflite-fp32", artifacts / "good-fp32")
    shutil.copytree(tiny / "drifted" / "blobs-tflite-fp32", artifacts / "drifted-fp32")
    shutil.copytree(tiny / "bundles" / "blobs-tflite-fp32", artifacts / "corrupt-fp32")
    model_file = artifacts / "corrupt-fp32" / "model.tflite"
    model_file.write_bytes(model_file.read_bytes()[:100])
    json_path, md_path = tmp_path / "r.json", tmp_path / "r.md"
    code = edgekit_main(["verify", str(tiny / "model"), str(artifacts), "--json", str(json_path),
                         "--markdown", str(md_path)])
    assert code == 1
    result = json.loads(json_path.read_text())
    by_name = {e["bundle"]: e for e in result["artifacts"]}
    assert by_name["good-fp32"]["passed"] and by_name["good-fp32"]["reasons"] == []
    assert not by_name["drifted-fp32"]["passed"]
    assert "outputs differ by more than atol" in by_name["drifted-fp32"]["reasons"][0]
    assert not by_name["corrupt-fp32"]["passed"]
    assert by_name["corrupt-fp32"]["reasons"][0].startswith("cannot run")
    assert "drifted-fp32" in md_path.read_text()


def test_gate_override_turns_a_failure_into_a_pass(tiny, tmp_path):
    artifacts = tmp_path / "artifacts"
    shutil.copytree(tiny / "drifted" / "blobs-tflite-fp32", artifacts / "drifted-fp32")
    assert edgekit_main(["verify", str(tiny / "model"), str(artifacts / "drifted-fp32")]) == 1
    # The other model was trained differently; it still makes the same decisions, so only the
    # exact-parity limits are relaxed here.
    assert edgekit_main(["verify", str(tiny / "model"), str(artifacts / "drifted-fp32"),
                         "--gate", "fp32.max_abs_error=1", "--gate", "fp32.atol=1",
                         "--gate", "fp32.min_psnr_db=0", "--gate", "fp32.min_agreement=0.9"]) == 0


def test_golden_round_trip_without_keras(tiny, tmp_path):
    golden = tmp_path / "golden.npz"
    assert edgekit_main(["verify", str(tiny / "model"), str(tiny / "bundles"), "--save-golden",
                         str(golden), "--max-samples", "50"]) == 0
    loaded = load_golden(golden)
    assert loaded.x.shape[0] == loaded.reference.shape[0] == 50 and loaded.y.shape == (50,)
    assert loaded.meta["task"] == "image" and loaded.meta["labels"] == ["a", "b", "c"]
    assert loaded.meta["tolerance"]["fp32"]["atol"] == 1e-4
    # A fresh process, as on a machine without Keras: compare, then prove TF/Keras never loaded.
    json_path = tmp_path / "golden.json"
    script = (
        "import sys; from edgekit.cli import main\n"
        f"code = main(['verify', '--golden', {str(golden)!r}, {str(tiny / 'bundles')!r}, "
        f"'--json', {str(json_path)!r}])\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'tf_keras') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "sys.exit(code)\n")
    proc = subprocess.run([sys.executable, "-c", script], env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(json_path.read_text())
    assert result["passed"] and result["samples"] == 50
    assert result["reference"]["source"].startswith("golden:")
    assert "[1/4]" in proc.stderr and "PASS" in proc.stderr


def test_golden_from_a_different_model_fails(tiny, tmp_path):
    golden = tmp_path / "golden.npz"
    assert edgekit_main(["verify", str(tiny / "model"), str(tiny / "bundles" / "blobs-tflite-fp32"),
                         "--save-golden", str(golden)]) == 0
    assert edgekit_main(["verify", "--golden", str(golden), str(tiny / "drifted")]) == 1


def test_bad_inputs_are_one_line_errors(tiny, tmp_path, capsys):
    assert edgekit_main(["verify", str(tmp_path / "nope"), str(tiny / "bundles")]) == 2
    assert edgekit_main(["verify", str(tiny / "model"), str(tmp_path)]) == 2
    assert edgekit_main(["verify", "--golden", "g.npz", str(tiny / "model"), str(tiny / "bundles")]) == 2
    assert edgekit_main(["verify", str(tiny / "model"), str(tiny / "bundles"), "--gate", "int8.x=1"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 4 and all(line.startswith("edgekit verify: error:") for line in errors)


@pytest.mark.slow
def test_fix_searches_the_fewest_float_layers(tiny, tmp_path):
    from edgekit.verify.fix import MAX_STEPS

    artifacts = tmp_path / "artifacts"
    shutil.copytree(tiny / "bundles" / "blobs-tflite-int8", artifacts / "blobs-tflite-int8")
    # 1. A gate no int8 model meets (exact parity): the search spends its budget, step by step.
    result = _verify(tiny / "model", artifacts, gate_overrides={"int8": {"max_abs_error": 1e-9}},
                     fix=True, converter_factory=FACTORY, debug_samples=32)
    original, fixed = result["artifacts"]
    table = original["layers"]
    ratios = [row["rmse_over_scale"] for row in table["tensors"]]
    assert ratios == sorted(ratios, reverse=True)
    ranking = [row["tensor"] for row in table["tensors"]]
    steps = fixed["search"]["steps"]
    counts = [step["float_tensors"] for step in steps]
    largest = fixed["search"]["max_float_tensors"]
    assert counts[0] == 0                                   # recalibration first: costs no size
    assert counts[1:] == [min(2 ** i, largest) for i in range(len(counts) - 1)]
    assert len(steps) == MAX_STEPS or counts[-1] == largest
    assert not any(step["passed"] for step in steps) and not result["passed"]
    assert fixed["fixed_from"] == "blobs-tflite-int8" and fixed["keep_float"] == ranking[:counts[-1]]
    assert original["fix"]["bundle"] == fixed["bundle"] == "blobs-tflite-int8-keepfloat"
    assert set(fixed["cost"]) == {"size_bytes", "latency_ms", "size_ratio", "estimated_latency_ms"}
    manifest = json.loads((artifacts / fixed["bundle"] / "manifest.json").read_text())
    assert manifest["float_tensors"] == fixed["keep_float"] and manifest["recipe"].endswith("+float_layers")
    assert manifest["size_bytes"] == (artifacts / fixed["bundle"] / "model.tflite").stat().st_size
    assert all(step["size_bytes"] > 0 for step in steps)        # each step reports its cost

    # 2. A PSNR limit that the best candidate meets: the search stops at the smallest passing set.
    limit = max(step["psnr_db"] for step in steps) - 1e-6
    shutil.rmtree(artifacts / fixed["bundle"])
    result = _verify(tiny / "model", artifacts, gate_overrides={"int8": {"min_psnr_db": limit}},
                     fix=True, converter_factory=FACTORY, debug_samples=32)
    original, fixed = result["artifacts"]
    steps = fixed["search"]["steps"]
    passing = [step["float_tensors"] for step in steps if step["passed"]]
    assert not original["passed"] and fixed["passed"] and result["passed"]
    assert len(fixed["keep_float"]) == min(passing)
    assert all(step["passed"] == (step["psnr_db"] >= limit) for step in steps)
    assert all(not step["passed"] for step in steps if step["float_tensors"] < min(passing))


def _small_onnx(path: Path) -> None:
    """A float ONNX graph (Gemm -> Relu -> Gemm) with fixed random weights, built without TensorFlow."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.normal(0, 0.5, shape).astype(np.float32), name)
               for name, shape in (("w1", (8, 16)), ("b1", (16,)), ("w2", (16, 3)), ("b2", (3,)))]
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w1", "b1"], ["hidden"], name="dense1"),
         helper.make_node("Relu", ["hidden"], ["relu"], name="relu1"),
         helper.make_node("Gemm", ["relu", "w2", "b2"], ["logits"], name="dense2")],
        "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])], initializer=weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


@pytest.mark.slow
@pytest.mark.parametrize("method", ["MinMax", "Percentile", "Entropy"])
def test_fix_search_quantizes_onnx_through_export(tmp_path, method):
    """verify --fix's ONNX candidates come from export/onnx.py's quantize_int8 (the one ONNX quantizer):
    every calibration method builds, and a node named by itself or by the tensor it produces stays float."""
    import numpy as np
    import onnx

    from edgekit.export.onnx_quantize import quantize_int8

    fp32 = tmp_path / "fp32.onnx"
    _small_onnx(fp32)
    x = np.random.default_rng(1).normal(size=(64, 8)).astype(np.float32)

    def quantized_weights(path: Path) -> set[str]:
        """The weights that reach their Gemm through a DequantizeLinear (stored as `w1_quantized`...)."""
        graph = onnx.load(str(path)).graph
        return {name for n in graph.node if n.op_type == "DequantizeLinear" for name in ("w1", "w2")
                if n.input[0].startswith(f"{name}_")}

    quantize_int8(fp32, tmp_path / "all.onnx", x, calibration_method=method)
    assert {"w1", "w2"} <= quantized_weights(tmp_path / "all.onnx")
    for keep in (["dense1"], ["hidden"]):           # the node's name, or the tensor it produces
        out = tmp_path / f"keep-{keep[0]}.onnx"
        quantize_int8(fp32, out, x, keep_float_nodes=keep, calibration_method=method)
        assert "w1" not in quantized_weights(out) and "w2" in quantized_weights(out)
