"""onnxruntime: the ONNX backend (CPU execution provider). `InferenceSession.run` is thread-safe,
so concurrent `run` calls need no lock."""

from __future__ import annotations

import numpy as np

from edgekit.runtime.backends.base import Runner, TensorInfo
from edgekit.runtime.errors import InferenceError, InvalidInputError, first_line

ONNX_DTYPES = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int16)": np.int16,
    "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_,
}
GRAPH_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
                "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


def _tensor_info(node) -> TensorInfo:
    dtype = ONNX_DTYPES.get(node.type)
    if dtype is None:
        raise InvalidInputError(f"tensor {node.name!r} has type {node.type}, which edgekit does not feed")
    shape = tuple(d if isinstance(d, int) and d > 0 else None for d in node.shape)
    return TensorInfo(name=node.name, shape=shape, dtype=np.dtype(dtype))


class OnnxRuntimeRunner(Runner):
    backend = "onnxruntime"
    thread_safe = True

    def activate_impl(self) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel,
                                                   GRAPH_LEVELS[self.settings.graph_optimization])
        if self.settings.onnx_intra_op_threads is not None:
            options.intra_op_num_threads = self.settings.onnx_intra_op_threads
        if self.settings.inter_op_threads is not None:
            options.inter_op_num_threads = self.settings.inter_op_threads
        self._session = ort.InferenceSession(self.model, sess_options=options,
                                             providers=["CPUExecutionProvider"])
        self._in_names = [i.name for i in self._session.get_inputs()]
        self._out_names = [o.name for o in self._session.get_outputs()]

    @property
    def session(self):
        self._require_active()
        return self._session

    def get_input_metadata_impl(self) -> list[TensorInfo]:
        return [_tensor_info(i) for i in self._session.get_inputs()]

    def get_output_metadata_impl(self) -> list[TensorInfo]:
        return [_tensor_info(o) for o in self._session.get_outputs()]

    def run_impl(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        try:
            return self._session.run(self._out_names, dict(zip(self._in_names, arrays)))
        except Exception as exc:  # onnxruntime's own exception classes (InvalidArgument, Fail, ...)
            if type(exc).__name__ == "InvalidArgument":  # the feed does not fit the graph's inputs
                raise InvalidInputError(f"onnxruntime rejected the input: {first_line(exc)}") from None
            raise InferenceError(f"onnxruntime failed running {self.name}: {first_line(exc)}") from None

    def bare_call_impl(self, arrays: list[np.ndarray]):
        session, outs = self._session, self._out_names
        feed = dict(zip(self._in_names, (a[:1] for a in arrays)))
        return lambda: session.run(outs, feed)

    def deactivate_impl(self) -> None:
        self._session = None
