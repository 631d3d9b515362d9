"""Shared code of the three TFLite backends (ai_edge_litert, tflite_runtime, tensorflow.lite): they
expose the same `Interpreter` API and differ only in where it is imported from.

TFLite interpreters are not thread-safe: one lock serialises set_tensor/invoke/get_tensor, so any
number of threads may call `run` on one runner and get what serial calls would give.
"""

from __future__ import annotations

import threading

import numpy as np

from edgekit.runtime.backends.base import Runner, TensorInfo
from edgekit.runtime.errors import InvalidInputError, first_line


def _tensor_info(detail: dict) -> TensorInfo:
    q = detail.get("quantization_parameters") or {}
    scales = np.asarray(q.get("scales", ()), dtype=np.float64).ravel()
    zeros = np.asarray(q.get("zero_points", ()), dtype=np.int64).ravel()
    scale = zero = None
    if scales.size == 1 and scales[0] != 0:
        scale, zero = float(scales[0]), int(zeros[0]) if zeros.size else 0
    return TensorInfo(name=str(detail["name"]), shape=tuple(int(d) for d in detail["shape"]),
                      dtype=np.dtype(detail["dtype"]), scale=scale, zero_point=zero)


STATEFUL_OPS = {"UNIDIRECTIONAL_SEQUENCE_LSTM", "BIDIRECTIONAL_SEQUENCE_LSTM", "UNIDIRECTIONAL_SEQUENCE_RNN",
                "BIDIRECTIONAL_SEQUENCE_RNN", "SVDF", "VAR_HANDLE", "ASSIGN_VARIABLE"}


def _has_state(interpreter) -> bool:
    try:
        return any(op["op_name"] in STATEFUL_OPS for op in interpreter._get_ops_details())
    except Exception:  # older interpreters lack the op listing: resetting is always correct
        return True


class TFLiteRunner(Runner):
    formats = ("tflite",)
    thread_safe = False

    def load_interpreter_module(self):
        """The module that holds `Interpreter` and `OpResolverType` (imported lazily)."""
        raise NotImplementedError

    def activate_impl(self) -> None:
        module = self.load_interpreter_module()
        kwargs = {"model_content": self.model}
        if self.settings.threads is not None:
            kwargs["num_threads"] = self.settings.threads
        if not self.settings.xnnpack:
            kwargs["experimental_op_resolver_type"] = module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        interpreter = module.Interpreter(**kwargs)
        interpreter.allocate_tensors()
        self._interpreter = interpreter
        self._input_details = interpreter.get_input_details()
        self._output_details = interpreter.get_output_details()
        self._in_idx = [d["index"] for d in self._input_details]
        self._out_idx = [d["index"] for d in self._output_details]
        self._lock = threading.Lock()
        # The fused LSTM ops keep their hidden/cell state in variable tensors that survive an invoke:
        # without a reset, each prediction would continue the previous sequence.
        self._stateful = _has_state(interpreter)

    @property
    def interpreter(self):
        self._require_active()
        return self._interpreter

    def get_input_metadata_impl(self) -> list[TensorInfo]:
        return [_tensor_info(d) for d in self._input_details]

    def get_output_metadata_impl(self) -> list[TensorInfo]:
        return [_tensor_info(d) for d in self._output_details]

    def run_impl(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        interp = self._interpreter
        try:
            with self._lock:
                for idx, a in zip(self._in_idx, arrays):
                    interp.set_tensor(idx, a)
                if self._stateful:
                    interp.reset_all_variables()
                interp.invoke()
                return [interp.get_tensor(i) for i in self._out_idx]  # get_tensor copies
        except (ValueError, RuntimeError) as exc:
            raise InvalidInputError(f"{self.backend} rejected the input: {first_line(exc)}") from None

    def bare_call_impl(self, arrays: list[np.ndarray]):
        interp = self._interpreter
        stateful = self._stateful  # the reset is part of a correct call, so the baseline has it too
        if len(arrays) == 1 and len(self._out_idx) == 1:
            i, a, o = self._in_idx[0], arrays[0][:1], self._out_idx[0]

            def call():
                interp.set_tensor(i, a)
                if stateful:
                    interp.reset_all_variables()
                interp.invoke()
                return interp.get_tensor(o)
            return call
        pairs = [(i, a[:1]) for i, a in zip(self._in_idx, arrays)]
        outs = self._out_idx

        def call_many():
            for i, a in pairs:
                interp.set_tensor(i, a)
            if stateful:
                interp.reset_all_variables()
            interp.invoke()
            return [interp.get_tensor(o) for o in outs]
        return call_many

    def deactivate_impl(self) -> None:
        self._interpreter = None
