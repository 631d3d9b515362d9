"""Quantization recipes, as data: one entry per variant, registered once.

A recipe says what a quantized model is, not how a converter is told to make it: the type of its
weights and activations, how activation ranges are found (calibrated on representative data, or on
the fly at run time), the granularity of weight scales, the type of a quantized model's inputs and
outputs, and the calibration method. Each format maps a recipe onto its converter's settings (its
host half, export/formats.py) or says why it does not produce it.

Naming scheme (after ai-edge-quantizer), derived from the data: `{mode}_w{kind}{bits}_a{kind}{bits}`
  mode     float   = no quantization (weights stored as the given float type)
           dynamic = int8 weights, activations quantized on the fly at run time (no calibration)
           static  = int weights and activations with scales fixed by calibration on representative data
           qdq     = static, expressed as ONNX QuantizeLinear/DequantizeLinear pairs (the ONNX format's name)
  w, a     weights, activations; kind i = integer, f = float; `afp32` (dynamic) = float activations
So `static_wi8_ai16` = int8 weights, int16 activations, calibrated (the TFLite "16x8" mode). The device
side decodes the same scheme to pick a gate (runtime/gates.py `family_of`).

Adding a recipe: one `Recipe(...)` in RECIPES (or `register(recipe)`); formats that cannot produce it
say why (their `unsupported`), and `edgekit export --variants` offers it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

FLOAT_TYPES = ("float32", "float16")
INT_TYPES = ("int8", "int16")
IO_TYPES = ("float32", "int8", "uint8")
GRANULARITIES = ("per_channel", "per_tensor")
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
_BITS = {"float32": "f32", "float16": "f16", "int8": "i8", "int16": "i16"}


class RecipeRefused(Exception):
    """A format's converter declined a recipe for this model (an op without a kernel for it): the
    variant is SKIPPED with the converter's reason, not failed."""


@dataclass(frozen=True)
class Recipe:
    variant: str                    # the name users choose (`--variants int8`) and bundles carry
    weights: str                    # float32 | float16 | int8
    activations: str                # float32 | int8 | int16
    calibrated: bool                # activation ranges fixed from representative data (static)
    reason: str                     # why this recipe exists / what it is for
    granularity: str = "per_channel"   # weight scales of integer weights: per_channel | per_tensor
    io_type: str = "float32"        # inputs/outputs of an integer model: float32 (quantized inside), int8, uint8
    calibration_method: str = "minmax"  # how calibrated ranges are chosen (a format may offer more)
    # Keras layers this recipe leaves in float inside an otherwise integer model (selective
    # quantization: `export --keep-float-layers`, e.g. the layers verify found most sensitive).
    float_layers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        problems = []
        if self.weights not in FLOAT_TYPES + ("int8",):
            problems.append(f"weights {self.weights!r}")
        if self.activations not in ("float32",) + INT_TYPES:
            problems.append(f"activations {self.activations!r}")
        if self.activations in INT_TYPES and (self.weights != "int8" or not self.calibrated):
            problems.append("integer activations need int8 weights and calibration")
        if self.granularity not in GRANULARITIES or self.io_type not in IO_TYPES \
                or self.calibration_method not in CALIBRATION_METHODS:
            problems.append("granularity / io_type / calibration_method")
        if problems:
            raise ValueError(f"recipe {self.variant!r}: invalid {', '.join(problems)}")

    # -- derived --------------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        if self.weights in FLOAT_TYPES:
            return "float"
        return "static" if self.calibrated else "dynamic"

    @property
    def integer(self) -> bool:
        """Integer arithmetic somewhere (dynamic or static): outputs move by design, gated on decisions."""
        return self.mode != "float"

    @property
    def full_integer(self) -> bool:
        """Integer activations too: the recipes whose float layers can be kept and whose I/O can be integer."""
        return self.activations in INT_TYPES

    @property
    def name(self) -> str:
        return scheme_name(self.mode, self.weights, self.activations)

    def keeping_float(self, layers) -> Recipe:
        """This recipe with `layers` left in float; only int8 activations have float layers to keep."""
        if not layers or self.activations != "int8":
            return self
        return replace(self, float_layers=tuple(layers))

    def with_io_type(self, io_type: str) -> Recipe:
        """This recipe with integer inputs/outputs (`export --int8-io`); full-int8 recipes only."""
        return replace(self, io_type=io_type) if self.activations == "int8" else self

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Recipe:
        known = {f.name for f in fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known})


def scheme_name(mode: str, weights: str, activations: str) -> str:
    """The naming-scheme name; dynamic recipes write their float activations `afp32`."""
    act = "afp32" if mode == "dynamic" else f"a{_BITS[activations]}"
    return f"{mode}_w{_BITS[weights]}_{act}"


RECIPES: dict[str, Recipe] = {r.variant: r for r in (
    Recipe("fp32", "float32", "float32", False,
           "reference: the Keras numbers in edge form; parity baseline for every other variant"),
    Recipe("fp16", "float16", "float32", False,
           "half-size file with float math (weights dequantized at load); for GPU delegates and when "
           "int8 accuracy is not good enough"),
    Recipe("dynamic", "int8", "float32", False,
           "quarter-size weights without calibration data; on x86 CNNs it ran slower than fp32, "
           "so it is a size choice, not a speed choice"),
    Recipe("int8", "int8", "int8", True,
           "full integer: smallest and fastest on ARM CPUs and the only kind integer-only NPUs run; "
           "scales calibrated on training data, per-channel weights"),
    Recipe("int16x8", "int8", "int16", True,
           "int8 weights with int16 activations: closer to float than int8 where activations have a "
           "wide range, at about int8 file size"),
)}


def register(recipe: Recipe) -> Recipe:
    """Add a recipe (a variant every format either produces or refuses with its reason)."""
    if recipe.variant in RECIPES:
        raise ValueError(f"a recipe named {recipe.variant!r} exists already")
    RECIPES[recipe.variant] = recipe
    return recipe


def unregister(variant: str) -> None:
    RECIPES.pop(variant, None)


def variants() -> tuple[str, ...]:
    return tuple(RECIPES)


def get(variant: str) -> Recipe:
    if variant not in RECIPES:
        raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(RECIPES)}")
    return RECIPES[variant]
