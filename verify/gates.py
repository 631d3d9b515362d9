"""Gates, host side: `--gate VARIANT.KEY=VALUE` overrides over the one tolerance table
(edgekit/runtime/gates.py, where every limit is written once with its reason).

Users override one limit of one variant with `--gate VARIANT.KEY=VALUE` (e.g. `int8.max_accuracy_drop=2`);
`VARIANT` may also be `FORMAT-VARIANT` (`onnx-int8.min_agreement=0.97`) to touch one format only.
KEY is one of the runtime's LIMIT_KEYS: atol, rtol, max_failed_fraction, max_abs_error, min_psnr_db,
min_agreement, max_accuracy_drop.
"""

from __future__ import annotations

import math

from edgekit.core import UserError
from edgekit.runtime.gates import CONFIDENCE_MARGIN_FLOOR, GATES, LIMIT_KEYS, Gate, check

DEFAULT_GATES = GATES
__all__ = ["CONFIDENCE_MARGIN_FLOOR", "DEFAULT_GATES", "LIMIT_KEYS", "Gate", "check", "gate_for",
           "gates_from_tolerances", "parse_overrides", "tolerances"]


def parse_overrides(items: list[str] | None) -> dict[str, dict[str, float]]:
    """['int8.max_accuracy_drop=2', 'onnx-int8.min_agreement=0.97'] -> {'int8': {...}, ...}."""
    overrides: dict[str, dict[str, float]] = {}
    for item in items or []:
        target, sep, value_text = item.partition("=")
        variant, dot, key = target.strip().rpartition(".")
        if not sep or not dot or not variant:
            raise UserError(f"--gate {item!r}: expected VARIANT.KEY=VALUE, e.g. int8.max_accuracy_drop=2")
        base_variant = variant.split("-")[-1]
        if base_variant not in DEFAULT_GATES:
            raise UserError(f"--gate {item!r}: unknown variant {base_variant!r}; "
                            f"choose from {', '.join(DEFAULT_GATES)}")
        if key not in LIMIT_KEYS:
            raise UserError(f"--gate {item!r}: unknown key {key!r}; choose from {', '.join(LIMIT_KEYS)}")
        try:
            value = float(value_text)
        except ValueError:
            raise UserError(f"--gate {item!r}: {value_text!r} is not a number") from None
        is_fraction = key in ("min_agreement", "max_failed_fraction")
        is_db = key == "min_psnr_db"
        if not math.isfinite(value) or (value < 0 and not is_db) or (is_fraction and value > 1):
            raise UserError(f"--gate {item!r}: {key} must be a finite number"
                            + ("" if is_db else " >= 0") + (" and <= 1" if is_fraction else ""))
        overrides.setdefault(variant, {})[key] = value
    return overrides


def gate_for(fmt: str, variant: str, overrides: dict[str, dict[str, float]] | None = None,
             base: dict[str, Gate] | None = None) -> Gate:
    """The gate of one bundle: the variant's default (or `base`, e.g. a golden file's tolerances),
    then `variant.*` overrides, then `fmt-variant.*`."""
    gates = base or DEFAULT_GATES
    if variant not in gates:
        raise UserError(f"no gate for variant {variant!r}; known: {', '.join(gates)}")
    gate = gates[variant]
    for target in (variant, f"{fmt}-{variant}"):
        changes = (overrides or {}).get(target)
        if changes:
            gate = gate.with_limits(**changes)
    return gate


def tolerances(overrides: dict[str, dict[str, float]] | None = None,
               base: dict[str, Gate] | None = None) -> dict[str, dict]:
    """Every variant's effective gate as plain data (stored in golden files and the JSON report)."""
    return {variant: gate_for("", variant, overrides, base).to_dict() for variant in base or DEFAULT_GATES}


def gates_from_tolerances(data: dict | None) -> dict[str, Gate]:
    """Gates back from `tolerances()` output (a golden file's meta); unknown keys are ignored; a
    limit the file does not name keeps the table's value."""
    gates = dict(DEFAULT_GATES)
    for variant, limits in (data or {}).items():
        if isinstance(limits, dict):
            gates[variant] = Gate.from_dict(limits, DEFAULT_GATES.get(variant, Gate()))
    return gates
