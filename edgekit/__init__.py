"""edgekit: train, quantize, convert, verify and run Keras models on edge CPUs."""

__version__ = "0.1.0"
