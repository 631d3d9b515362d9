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

Layer attribution: TensorFlow op and tensor names carry the Keras layer scopes
(`functional_1/lstm_1/...`, `model/lstm/...`), so each op's tensor names are matched against the
model's layer names (Keras 3 appends `_1` to scope names, which is stripped).
"""

from __future__ import annotations

import re

from edgekit.runtime import profiles

FUSED_LSTM = "UNIDIRECTIONAL_SEQUENCE_LSTM"
_SCOPE_SUFFIX = re.compile(r"_\d+$")


def layers_of(names: list[str], layer_names: set[str]) -> list[str]:
    """Keras layers named in op/tensor `names` ("a/b/c;d/e" parts), innermost scope first per name."""
    found: list[str] = []
    for name in names:
        for part in str(name).split(";"):
            hits = []
            for scope in part.split("/"):
                scope = scope.split(":")[0]
                for candidate in (scope, _SCOPE_SUFFIX.sub("", scope)):
                    if candidate in layer_names:
                        hits.append(candidate)
                        break
            if hits and hits[-1] not in found:
                found.append(hits[-1])
    return found


def _device_denied_ops(profile: dict | None, fmt: str) -> set[str]:
    if not profile:
        return set()
    denied = profile.get("unsupported_ops") or []
    if isinstance(denied, dict):
        keys = {fmt, *profiles.FORMAT_BACKENDS[fmt]}
        return {str(op) for key, ops in denied.items() if key in keys for op in ops}
    return {str(op) for op in denied}


def check_ops(fmt: str, op_records: list[dict], layer_classes: dict[str, str],
              profile: dict | None = None) -> list[str]:
    """Problems of one artifact, as one-line messages (empty = passes).

    op_records: [{"op": "FULLY_CONNECTED", "names": [tensor/node names]}] in graph order;
    layer_classes: Keras layer name -> class name (e.g. {"lstm": "LSTM"}).
    """
    layer_names = set(layer_classes)
    problems: list[str] = []
    seen: set[tuple[str, str]] = set()

    def report(op: str, names: list[str], why: str) -> None:
        layers = layers_of(names, layer_names)
        where = f" (from layer {', '.join(repr(l) for l in layers)})" if layers else ""
        key = (op, where)
        if key not in seen:
            seen.add(key)
            problems.append(f"op {op}{where} {why}")

    recurrent = [n for n, cls in layer_classes.items() if cls in ("LSTM", "GRU", "SimpleRNN", "Bidirectional")]
    denied = _device_denied_ops(profile, fmt)
    for record in op_records:
        op, names = record["op"], record.get("names", [])
        if fmt == "tflite":
            if op.startswith("Flex"):
                report(op, names, "is a TensorFlow (Flex / SELECT_TF_OPS) op: edge runtimes do not ship it")
            elif record.get("custom"):
                report(op, names, "is a custom op, outside the TFLite builtin set")
            elif op == "WHILE" and recurrent:
                report(op, names, "is an unfused recurrent loop: an LSTM must become "
                                  f"{FUSED_LSTM} (the LiteRT int8 LSTM kernels) and a GRU/SimpleRNN be "
                                  "unrolled; full-int8 calibration of such loops crashes the converter")
        if op in denied:
            report(op, names, f"is not supported by device {profile['name']!r}")
    if fmt == "tflite":
        lstms = [n for n in recurrent if layer_classes[n] == "LSTM"]
        fused = sum(1 for r in op_records if r["op"] == FUSED_LSTM)
        if lstms and fused < len(lstms):
            problems.append(f"LSTM layer(s) {', '.join(lstms)} were not fused into {FUSED_LSTM} "
                            f"({fused} found)")
    return problems
