"""The float gates catch real defects: a wrong op, a wrong constant and a preprocessing mismatch,
injected into the fp32 and fp16 TFLite bundles of a trained image model, each FAIL their gate, while
the untouched bundles pass (the control without which the failures would prove nothing).

Injection sizes (the limits' reasons in edgekit/runtime/gates.py and docs/design.md name them):
- wrong op: the first residual ADD of the MobileNetV2 graph becomes a SUB (opcode swapped in the
  flatbuffer),
- wrong constant: the largest weight tensor scaled by 1.01 (fp32) or 1.10 (fp16: a 1-3% change of one
  tensor is within what fp16 rounding of every weight already does to the outputs; x1.05 measured
  43.9 dB on one trained model, under the 45 dB limit, and passed on another (the CIFAR model trained
  with MediaPipe's resize), so the test injects a change the fp16 gate must always see),
- preprocessing mismatch: features normalised with std 128 (fp32: x * 0.996) or 130 (fp16: x * 0.98)
  instead of the model's 127.5; std 128 measured 40 dB on one model and 55 dB (a pass) on another under
  the fp16 gate, whose own rounding is of that size.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edgekit.runtime.gates import GATES
from edgekit.verify.evaluate import EvalData, Task, evaluate_bundle

pytestmark = pytest.mark.slow

SAMPLES = 200
WEIGHT_SCALE = {"fp32": 1.01, "fp16": 1.10}
WRONG_STD = {"fp32": 128.0, "fp16": 130.0}
DEFECTS = ("wrong_op", "wrong_constant", "preprocessing")


@pytest.fixture(scope="module")
def image(trained_dir, tmp_path_factory):
    from edgekit.export import export_model
    from edgekit.verify.reference import load_reference

    model_dir = trained_dir("image")
    out = tmp_path_factory.mktemp("inject-bundles")
    results = export_model(model_dir, out, formats=("tflite",), variants=("fp32", "fp16"))
    bundles = {r.variant: Path(r.bundle) for r in results if r.ok}
    assert set(bundles) == {"fp32", "fp16"}, [r.reason for r in results]
    model, metadata = load_reference(model_dir)
    with np.load(model_dir / "heldout.npz") as data:
        x, y = data["x"][:SAMPLES], data["y"][:SAMPLES]
    reference = np.asarray(model.predict(x, verbose=0), dtype=np.float32)
    task = Task("image", list(metadata["labels"]), dict(metadata["preprocessing"]))
    accuracy = float(np.mean(np.argmax(reference, -1) == y))
    return SimpleNamespace(bundles=bundles, x=x, y=y, reference=reference, task=task,
                           accuracy=accuracy, work=tmp_path_factory.mktemp("injected"),
                           preprocessing=metadata["preprocessing"])


def _verify(image, bundle: Path, variant: str, x: np.ndarray) -> dict:
    return evaluate_bundle(bundle, EvalData(x, image.y), image.reference, image.task, image.accuracy,
                           GATES[variant])


@pytest.mark.parametrize("variant", ["fp32", "fp16"])
def test_untouched_bundles_pass(image, variant):
    entry = _verify(image, image.bundles[variant], variant, image.x)
    assert entry["passed"], entry["reasons"]


@pytest.mark.parametrize("defect", DEFECTS)
@pytest.mark.parametrize("variant", ["fp32", "fp16"])
def test_injected_defect_fails_its_gate(image, variant, defect):
    bundle, x = image.bundles[variant], image.x
    if defect == "preprocessing":
        std = float(np.mean(image.preprocessing["std"]))
        assert std == 127.5, "the mismatch below assumes the model's std of 127.5"
        x = x * (std / WRONG_STD[variant])
    else:
        data = (bundle / "model.tflite").read_bytes()
        edited = _add_to_sub(data) if defect == "wrong_op" else _scale_largest_weight(data, WEIGHT_SCALE[variant])
        bundle = _bundle_with_model(bundle, image.work / f"{variant}-{defect}", edited)
    entry = _verify(image, bundle, variant, x)
    assert not entry["passed"], (entry.get("max_abs_error"), entry.get("psnr_db"), entry.get("agreement"))
    assert entry["reasons"] and not entry["reasons"][0].startswith("cannot run")


# --- flatbuffer editing (TensorFlow's own schema and object API) ---------------------------------

def _read(data: bytes):
    from tensorflow.lite.tools import flatbuffer_utils

    return flatbuffer_utils.read_model_from_bytearray(bytearray(data))


def _write(model) -> bytes:
    from tensorflow.lite.tools import flatbuffer_utils

    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _scale_largest_weight(data: bytes, factor: float) -> bytes:
    from tensorflow.lite.python import schema_py_generated as schema

    model = _read(data)
    dtypes = {schema.TensorType.FLOAT32: np.float32, schema.TensorType.FLOAT16: np.float16}
    weights = [t for t in model.subgraphs[0].tensors if t.type in dtypes and len(t.shape) >= 2
               and model.buffers[t.buffer].data is not None and len(model.buffers[t.buffer].data)]
    tensor = max(weights, key=lambda t: len(model.buffers[t.buffer].data))
    values = np.frombuffer(bytes(model.buffers[tensor.buffer].data), dtype=dtypes[tensor.type])
    scaled = (values.astype(np.float32) * factor).astype(dtypes[tensor.type])
    model.buffers[tensor.buffer].data = np.frombuffer(scaled.tobytes(), dtype=np.uint8)
    return _write(model)


def _add_to_sub(data: bytes) -> bytes:
    from tensorflow.lite.python import schema_py_generated as schema

    model = _read(data)
    code_of = lambda op: max(model.operatorCodes[op.opcodeIndex].builtinCode,  # noqa: E731
                             model.operatorCodes[op.opcodeIndex].deprecatedBuiltinCode)
    op = next(op for op in model.subgraphs[0].operators if code_of(op) == schema.BuiltinOperator.ADD)
    sub = schema.OperatorCodeT()
    sub.builtinCode = sub.deprecatedBuiltinCode = schema.BuiltinOperator.SUB
    sub.version = 1
    model.operatorCodes.append(sub)
    op.opcodeIndex = len(model.operatorCodes) - 1
    options = schema.SubOptionsT()
    options.fusedActivationFunction = op.builtinOptions.fusedActivationFunction
    op.builtinOptionsType, op.builtinOptions = schema.BuiltinOptions.SubOptions, options
    return _write(model)


def _bundle_with_model(original: Path, target: Path, model_bytes: bytes) -> Path:
    """A copy of the bundle with another model file and a manifest that vouches for it (sha256), so
    the runtime's integrity check does not stop it before the gate can."""
    shutil.copytree(original, target)
    manifest = json.loads((target / "manifest.json").read_text())
    (target / manifest["model_file"]).write_bytes(model_bytes)
    manifest.update(sha256=hashlib.sha256(model_bytes).hexdigest(), size_bytes=len(model_bytes))
    (target / "manifest.json").write_text(json.dumps(manifest))
    return target
