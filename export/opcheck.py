"""Op check of every exported artifact: edge-grade ops only, and only ops the target device runs.

Rules (each failure names the op and the Keras layer it came from):
- TFLite: no CUSTOM ops (Flex* = TensorFlow ops that need the Select-TF-ops delegate, which edge
  runtimes do not ship). For recurrent models also no WHILE and a fused UNIDIRECTIONAL_SEQUENCE_LSTM
  per LSTM: a WHILE loop means an LSTM was not fused (the LiteRT int8 LSTM kernels cannot run it) or
  a GRU/SimpleRNN was not unrolled (export/lstm.py); the converter's int8 calibration of a WHILE
  loop segfaults.
- With a device profile (`edgekit.runtime.profiles`): ops listed in its `unsupported_ops` fail. That
  field may be a list (any format) or a mapping from format or backend name to a list. A profile whose
  `backends` list has no runtime for a format makes that format SKIPPED (checked before converting).

Layer attribution: export/keras_layers.py `layers_of`.
"""

from __future__ import annotations

from edgekit.export import formats
from edgekit.export.keras_layers import layers_of
from edgekit.runtime import profiles


def _device_denied_ops(profile: dict | None, fmt: str) -> set[str]:
    if not profile:
        return set()
    denied = profile.get("unsupported_ops") or []
    if isinstance(denied, dict):
        keys = {fmt, *profiles.FORMAT_BACKENDS.get(fmt, ())}
        return {str(op) for key, ops in denied.items() if key in keys for op in ops}
    return {str(op) for op in denied}


def check_ops(fmt: str, op_records: list[dict], layer_classes: dict[str, str],
              profile: dict | None = None) -> list[str]:
    """Problems of one artifact, as one-line messages (empty = passes): the format's own op rules (its
    host half's `op_problems`) and the ops the device profile does not run.

    op_records: [{"op": "FULLY_CONNECTED", "names": [tensor/node names]}] in graph order;
    layer_classes: Keras layer name -> class name (e.g. {"lstm": "LSTM"}).
    """
    layer_names = set(layer_classes)
    problems: list[str] = []
    seen: set[tuple[str, str]] = set()

    def report(op: str, names: list[str], why: str) -> None:
        if not op:   # a rule about the whole graph
            problems.append(why)
            return
        layers = layers_of(names, layer_names)
        where = f" (from layer {', '.join(repr(l) for l in layers)})" if layers else ""
        key = (op, where)
        if key not in seen:
            seen.add(key)
            problems.append(f"op {op}{where} {why}")

    for op, names, why in formats.host(fmt).op_problems(op_records, layer_classes):
        report(op, names, why)
    denied = _device_denied_ops(profile, fmt)
    for record in op_records:
        if record["op"] in denied:
            report(record["op"], record.get("names", []), f"is not supported by device {profile['name']!r}")
    return problems
