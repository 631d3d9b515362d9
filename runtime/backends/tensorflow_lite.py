"""tensorflow.lite: the last-resort TFLite backend, imported only when chosen (it loads all of TensorFlow)."""

import os
import warnings
from types import SimpleNamespace

from edgekit.runtime.backends._tflite import TFLiteRunner


class TensorFlowLiteRunner(TFLiteRunner):
    backend = "tensorflow"

    def load_interpreter_module(self):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import tensorflow as tf

        def interpreter(**kwargs):
            with warnings.catch_warnings():  # "tf.lite.Interpreter is deprecated" on every creation
                warnings.simplefilter("ignore")
                return tf.lite.Interpreter(**kwargs)

        return SimpleNamespace(Interpreter=interpreter, OpResolverType=tf.lite.experimental.OpResolverType)
