"""tflite_runtime: the only TFLite backend for 32-bit ARM (last release 2.14: Python <= 3.11, numpy < 2)."""

from edgekit.runtime.backends._tflite import TFLiteRunner


class TFLiteRuntimeRunner(TFLiteRunner):
    backend = "tflite_runtime"

    def load_interpreter_module(self):
        from tflite_runtime import interpreter

        return interpreter
