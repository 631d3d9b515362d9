"""ai_edge_litert (LiteRT): the preferred TFLite backend (x86-64 and aarch64 wheels)."""

from edgekit.runtime.backends._tflite import TFLiteRunner


class LiteRTRunner(TFLiteRunner):
    backend = "litert"

    def load_interpreter_module(self):
        from ai_edge_litert import interpreter

        return interpreter
