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
from edgekit.export import recipes
from edgekit.runtime import gates as table
from edgekit.runtime.gates import CONFIDENCE_MARGIN_FLOOR, GATES, LIMIT_KEYS, Gate, check

DEFAULT_GATES = GATES
__all__ = ["CONFIDENCE_MARGIN_FLOOR", "DEFAULT_GATES", "LIMIT_KEYS", "Gate", "check", "gate_for",
           "parse_overrides", "tolerances", "variants"]


def variants() -> list[str]:
    """Every variant a gate can be asked for: the registered recipes (export/recipes.py) and the table's."""
    return list(dict.fromkeys([*recipes.variants(), *GATES]))


def _recipe_name(variant: str) -> str | None:
    return recipes.RECIPES[variant].name if variant in recipes.RECIPES else None


def parse_overrides(items: list[str] | None) -> dict[str, dict[str, float]]:
    """['int8.max_accuracy_drop=2', 'onnx-int8.min_agreement=0.97'] -> {'int8': {...}, ...}."""
    overrides: dict[str, dict[str, float]] = {}
    known = variants()
    for item in items or []:
        target, sep, value_text = item.partition("=")
        variant, dot, key = target.strip().rpartition(".")
        if not sep or not dot or not variant:
            raise UserError(f"--gate {item!r}: expected VARIANT.KEY=VALUE, e.g. int8.max_accuracy_drop=2")
        base_variant = variant.split("-")[-1]
        if base_variant not in known:
            raise UserError(f"--gate {item!r}: unknown variant {base_variant!r}; choose from {', '.join(known)}")
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
             meta: dict | None = None, recipe: str | None = None) -> Gate:
    """The gate of one bundle: the table's (runtime/gates.py `from_meta`: a golden file's `tolerance`
    over the variant's row, or its recipe family's), then `variant.*` overrides, then `fmt-variant.*`."""
    gate = table.from_meta(meta or {}, variant, recipe=recipe or _recipe_name(variant))
    if gate is None:
        raise UserError(f"no gate for variant {variant!r} (recipe {recipe!r}); known: {', '.join(variants())}")
    for target in (variant, f"{fmt}-{variant}"):
        changes = (overrides or {}).get(target)
        if changes:
            gate = gate.with_limits(**changes)
    return gate


def tolerances(overrides: dict[str, dict[str, float]] | None = None, meta: dict | None = None) -> dict[str, dict]:
    """Every variant's effective gate as plain data (stored in golden files and the JSON report)."""
    return {variant: gate_for("", variant, overrides, meta).to_dict() for variant in variants()}
