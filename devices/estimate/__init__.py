"""`edgekit devices estimate NAME BUNDLE`: an ESTIMATE of a bundle's latency and memory on a device that
is not at hand, from the work its graph does and a cost model calibrated on published measurements.

1. Count the work (`count_work`, by the format's graph reader in runtime/formats): for every op of the
   TFLite flatbuffer (no TensorFlow) or the ONNX graph (onnx package, shapes by onnx shape inference): its
   class (conv, depthwise, dense, lstm, elementwise, pooling, movement, quantize), the data type it
   computes in (fp32, fp16, dynamic, int8, int16x8), its MACs and the bytes it moves (weights +
   activations read and written). Plus the tensor arena (peak of the live activation tensors, walking
   the ops in order) and the weights.
2. Price it (`estimate`, pricing.py): per op, time = MACs / (class GMAC/s x dtype speed-up) + bytes / (GB/s) +
   per-op overhead, each rate per core and scaled to N threads by Amdahl's law. The numbers live in the
   device profile's `cost_model` (runtime/profiles/*.json), each with its source.
3. Calibrate (calibration.py; `python -m edgekit.devices.estimate --calibrate`): fit the fp32 rates to XNNPACK's
   published Raspberry Pi latencies of four MobileNets (built here with random weights, converted to
   TFLite fp32 and counted with step 1; the counts are stored in REFERENCE_WORK so that tests need
   no conversion), and report the error on figures the fit did not see. docs/estimates.md explains it.

Every result is labelled an estimate ("estimate": true, and the word in every printed line).
"""

from edgekit.devices.estimate.pricing import (
    count_work,
    estimate,
    model_file,
    op_ms,
    op_uncertainty,
    run,
    text_lines,
    thread_speedup,
)
from edgekit.runtime.formats.graph import CLASSES, COMPUTE_CLASSES, GraphWork, OpWork

__all__ = ["CLASSES", "COMPUTE_CLASSES", "GraphWork", "OpWork", "count_work", "estimate", "model_file", "op_ms",
           "op_uncertainty", "run", "text_lines", "thread_speedup"]
