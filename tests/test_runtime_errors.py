"""Error classes stay honest: a model or backend failure on a valid input is an InferenceError, never
reported as the user's input being wrong (InvalidInputError)."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit import runtime
from edgekit.runtime.errors import InferenceError, InvalidInputError


def _onnx_model_that_fails_at_run_time(path):
    """x [N, 4] -> Reshape to a shape computed at run time that cannot hold 4N values."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "bad_shape"], ["y"])], "broken",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [helper.make_tensor("bad_shape", TensorProto.INT64, [1], [3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def test_a_model_failing_on_a_valid_input_is_an_inference_error(tmp_path):
    path = tmp_path / "broken.onnx"
    _onnx_model_that_fails_at_run_time(path)
    with runtime.load(path, sandbox=False) as model:
        with pytest.raises(InferenceError, match="onnxruntime failed running broken.onnx") as caught:
            model.predict_tensors(np.zeros((1, 4), np.float32))
        assert not isinstance(caught.value, InvalidInputError)
        with pytest.raises(InvalidInputError, match="expected float32, got complex64"):  # the input is at fault
            model.predict_tensors(np.zeros((1, 4), np.int64).astype(np.complex64))


def test_tflite_invoke_failures_are_inference_errors():
    from edgekit.runtime.backends.litert import LiteRTRunner

    class Interpreter:
        def set_tensor(self, index, value):
            if value.dtype != np.float32:
                raise ValueError("Cannot set tensor: Got value of type INT32 but expected type FLOAT32")

        def reset_all_variables(self):
            pass

        def invoke(self):
            raise RuntimeError("tensorflow/lite/kernels/concatenation.cc:159 t->dims->data[d] != ...\nNode 3 failed")

    import threading

    runner = LiteRTRunner(b"", name="m.tflite")
    runner._interpreter, runner._lock, runner._stateful = Interpreter(), threading.Lock(), True
    runner._in_idx, runner._out_idx = [0], [1]
    with pytest.raises(InferenceError, match="litert failed running m.tflite: tensorflow/lite/kernels"):
        runner.run_impl([np.zeros((1, 2), np.float32)])
    with pytest.raises(InvalidInputError, match="litert rejected the input"):
        runner.run_impl([np.zeros((1, 2), np.int32)])


def test_a_library_error_with_an_empty_message_is_still_one_line(tmp_path, monkeypatch):
    """verify/golden.py took `str(exc).splitlines()[0]` and raised IndexError on an empty message."""
    from edgekit.runtime import golden

    path = tmp_path / "golden.npz"
    np.savez(path, x=np.zeros((1, 2)))

    def load(*args, **kwargs):
        raise ValueError()  # numpy and zipfile do raise some errors without a message

    monkeypatch.setattr(golden.np, "load", load)
    with pytest.raises(InvalidInputError, match=r"cannot read golden file .*golden.npz: ValueError$"):
        golden.read(path)
