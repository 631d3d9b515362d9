"""Pass/fail gates per quantization variant: every tolerance is written once, here, with its reason.

A gate holds up to three limits; a bundle passes when every limit that is set holds:
- `max_abs_error`: largest |p_bundle - p_keras| over all probabilities,
- `min_agreement`: fraction of rows (samples; frames for speech) with the same top-1 class as Keras,
- `max_accuracy_drop`: task accuracy lost vs Keras, in percentage points.

Users override one limit of one variant with `--gate VARIANT.KEY=VALUE` (e.g. `int8.max_accuracy_drop=2`);
`VARIANT` may also be `FORMAT-VARIANT` (`onnx-int8.min_agreement=0.97`) to touch one format only.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

from edgekit.core import UserError

LIMIT_KEYS = ("max_abs_error", "min_agreement", "max_accuracy_drop")

# A pass only means something when the reference is decisive: random-weight or collapsed models give
# near-uniform softmax rows (median top-1 minus top-2 margin ~0.01) that every variant "matches".
# A trained classifier's median margin is far above 0.1 (0.9+ on the project's three models), so
# below 0.1 the report warns that parity was checked on an indecisive reference.
CONFIDENCE_MARGIN_FLOOR = 0.1


@dataclass(frozen=True)
class Gate:
    max_abs_error: float | None = None
    min_agreement: float | None = None
    max_accuracy_drop: float | None = None   # percentage points
    reason: str = ""
    overridden: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict:
        data = asdict(self)
        data["overridden"] = list(self.overridden)
        return data


# fp32 runs the same float graph: the only differences are kernel summation order and fused ops
# (measured 3e-8 ONNX vs Keras, conversion-facts.md); 1e-5 leaves 300x headroom yet catches a wrong
# op, a wrong constant or a preprocessing mismatch, and a correct fp32 graph never flips a prediction.
_FLOAT_EXACT = Gate(
    max_abs_error=1e-5, min_agreement=1.0,
    reason="same float32 graph: only summation order may differ, so outputs match to 1e-5 "
           "and every top-1 class agrees")

# fp16 stores weights in half precision (10-bit mantissa, relative error ~5e-4 per weight); through a
# few layers probabilities move by up to ~1e-3, which flips only rows whose top-2 are near-tied.
_HALF = Gate(
    max_abs_error=1e-3, min_agreement=0.999,
    reason="float16 weights carry ~5e-4 relative rounding: probabilities may move by 1e-3 and "
           "flip at most 1 row in 1000 (near-ties)")

# Integer variants change the numbers by design (8-bit weights and/or activations): exact parity is
# the wrong question; what users care about is task accuracy, plus a check that the bundle still
# makes the same decisions as Keras on nearly every input (catching a broken calibration whose
# accuracy happens to be similar on a small held-out set).
_INTEGER = Gate(
    min_agreement=0.98, max_accuracy_drop=1.0,
    reason="integer quantization changes outputs by design: gate on task accuracy (at most 1 "
           "percentage point lost) and decisions (>= 98% same top-1 as Keras)")

DEFAULT_GATES: dict[str, Gate] = {
    "fp32": _FLOAT_EXACT,
    "fp16": _HALF,
    "dynamic": _INTEGER,
    "int8": _INTEGER,
    "int16x8": _INTEGER,
}


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
        if not math.isfinite(value) or value < 0 or (key == "min_agreement" and value > 1):
            raise UserError(f"--gate {item!r}: {key} must be a finite number >= 0"
                            + (" and <= 1" if key == "min_agreement" else ""))
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
            gate = replace(gate, **changes,
                           overridden=tuple(dict.fromkeys(gate.overridden + tuple(changes))))
    return gate


def check(gate: Gate, *, max_abs_error: float, agreement: float,
          accuracy_delta: float | None) -> list[str]:
    """Reasons the metrics fail the gate (empty when they pass). accuracy_delta: bundle minus Keras,
    in percentage points (negative = accuracy lost)."""
    reasons = []
    if gate.max_abs_error is not None and not max_abs_error <= gate.max_abs_error:
        reasons.append(f"max abs error {max_abs_error:.3g} > {gate.max_abs_error:g}")
    if gate.min_agreement is not None and not agreement >= gate.min_agreement:
        reasons.append(f"top-1 agreement {100 * agreement:.2f}% < {100 * gate.min_agreement:g}%")
    if gate.max_accuracy_drop is not None and accuracy_delta is not None \
            and not -accuracy_delta <= gate.max_accuracy_drop:
        reasons.append(f"accuracy drop {-accuracy_delta:.2f} pp > {gate.max_accuracy_drop:g} pp")
    return reasons


def tolerances(overrides: dict[str, dict[str, float]] | None = None,
               base: dict[str, Gate] | None = None) -> dict[str, dict]:
    """Every variant's effective gate as plain data (stored in golden files and the JSON report)."""
    return {variant: gate_for("", variant, overrides, base).to_dict() for variant in base or DEFAULT_GATES}


def gates_from_tolerances(data: dict | None) -> dict[str, Gate]:
    """Gates back from `tolerances()` output (a golden file's meta); unknown keys are ignored."""
    gates = dict(DEFAULT_GATES)
    for variant, limits in (data or {}).items():
        if isinstance(limits, dict):
            gates[variant] = Gate(**{k: limits.get(k) for k in LIMIT_KEYS},
                                  reason=str(limits.get("reason", "")),
                                  overridden=tuple(limits.get("overridden") or ()))
    return gates
