"""Shared code of the three TFLite backends (ai_edge_litert, tflite_runtime, tensorflow.lite): they
expose the same `Interpreter` API and differ only in where it is imported from.

TFLite interpreters are not thread-safe: one lock serialises set_tensor/invoke/get_tensor, so any
number of threads may call `run` on one runner and get what serial calls would give.

Banners: the TFLite C++ library writes "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." (and
tensorflow.lite its start-up logs) straight to file descriptor 2, and honours no environment variable
for it, so interpreter creation runs with fd 2 pointed at /dev/null unless EDGEKIT_BACKEND_LOGS=1
(what the runtime commands' --verbose sets). While that lasts (milliseconds, once per model load),
other threads' writes to stderr are dropped too.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading

import numpy as np

from edgekit.runtime.backends.base import Runner, TensorInfo
from edgekit.runtime.errors import EdgekitError, InferenceError, InvalidInputError, first_line
from edgekit.runtime.formats import tflite as tflite_format


def _tensor_info(detail: dict) -> TensorInfo:
    q = detail.get("quantization_parameters") or {}
    scales = np.asarray(q.get("scales", ()), dtype=np.float64).ravel()
    zeros = np.asarray(q.get("zero_points", ()), dtype=np.int64).ravel()
    scale = zero = None
    if scales.size == 1 and scales[0] != 0:
        scale, zero = float(scales[0]), int(zeros[0]) if zeros.size else 0
    return TensorInfo(name=str(detail["name"]), shape=tuple(int(d) for d in detail["shape"]),
                      dtype=np.dtype(detail["dtype"]), scale=scale, zero_point=zero)


def backend_logs_shown() -> bool:
    return os.environ.get("EDGEKIT_BACKEND_LOGS", "0") not in ("", "0")


@contextlib.contextmanager
def quiet_stderr():
    """Point fd 2 at /dev/null for the duration (unless EDGEKIT_BACKEND_LOGS=1)."""
    if backend_logs_shown():
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2: nothing to silence
        yield
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


class TFLiteRunner(Runner):
    thread_safe = False

    def load_interpreter_module(self):
        """The module that holds `Interpreter` and `OpResolverType` (imported lazily)."""
        raise NotImplementedError

    def activate_impl(self) -> None:
        with quiet_stderr():
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
        try:  # the one graph reader (runtime/formats/tflite.py) says which tensors carry state
            graph = tflite_format.read_graph(self.model, interpreter)
            self._stateful = tflite_format.stateful(graph)
            self._state_idx = tflite_format.state_inputs(graph) if self._stateful else None
        except (EdgekitError, ImportError, AttributeError, RuntimeError, ValueError):
            self._stateful, self._state_idx = True, None  # resetting before every invoke is always correct

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
        with self._lock:
            try:  # set_tensor checks the array against the tensor: a refusal is about the input
                for idx, a in zip(self._in_idx, arrays):
                    interp.set_tensor(idx, a)
            except ValueError as exc:
                raise InvalidInputError(f"{self.backend} rejected the input: {first_line(exc)}") from None
            try:  # the input passed every check: a failure here is the model's or the backend's
                if self._stateful:
                    interp.reset_all_variables()
                interp.invoke()
                return [interp.get_tensor(i) for i in self._out_idx]  # get_tensor copies
            except (ValueError, RuntimeError) as exc:
                raise InferenceError(f"{self.backend} failed running {self.name}: {first_line(exc)}") from None

    # -- streaming: recurrent state carried from one call to the next ------------------------------
    @property
    def carries_state(self) -> bool:
        """Whether `run_with_state` can continue a sequence across calls (a fused LSTM/RNN model)."""
        self._require_active()
        return bool(self._state_idx)

    def initial_state(self) -> list[np.ndarray]:
        """The recurrent state at the start of a sequence (what reset_all_variables sets: zeros, or
        the zero point of an int8 state tensor)."""
        with self._lock:
            self._interpreter.reset_all_variables()
            return [self._interpreter.get_tensor(i) for i in self._state_idx]

    def run_with_state(self, arrays: list[np.ndarray], state: list[np.ndarray]):
        """Run one batch-1 chunk of a sequence from `state`: (outputs, state after the chunk). The
        caller owns the state, so several streams (and `run` calls) can share one interpreter."""
        interp = self._interpreter
        try:
            with self._lock:
                for idx, a in zip(self._in_idx, arrays):
                    interp.set_tensor(idx, a)
                for idx, value in zip(self._state_idx, state):
                    interp.set_tensor(idx, value)
                interp.invoke()
                outputs = [interp.get_tensor(i) for i in self._out_idx]
                return outputs, [interp.get_tensor(i) for i in self._state_idx]
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
