"""Quantization recipes: one table, one row per (format, variant), each with its reason.

Naming scheme (after ai-edge-quantizer): `{mode}_w{kind}{bits}_a{kind}{bits}`
  mode     float   = no quantization (weights stored as the given float type)
           dynamic = int8 weights, activations quantized on the fly at run time (no calibration)
           static  = int weights and activations with scales fixed by calibration on representative data
           qdq     = static, expressed as ONNX QuantizeLinear/DequantizeLinear pairs around float ops
  w, a     weights, activations; kind i = integer, f = float; `afp32` (dynamic) = float activations
So `static_wi8_ai16` = int8 weights, int16 activations, calibrated (the TFLite "16x8" mode).

A variant that cannot apply to a model is SKIPPED with a reason, never a crash: `UNAVAILABLE` holds the
(format, variant) pairs edgekit does not produce, `recipe.refused_layers` the Keras layers a recipe's
converter refuses (checked before converting, so the known refusals cost no time).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

FORMATS = ("tflite", "onnx")
VARIANTS = ("fp32", "fp16", "dynamic", "int8", "int16x8")
INT8_IO_TYPES = ("float32", "int8", "uint8")


@dataclass(frozen=True)
class Recipe:
    format: str
    variant: str
    name: str                      # the naming-scheme name written to manifest.json
    calibrated: bool               # needs representative data (model_dir/calibration.npz)
    reason: str                    # why this recipe exists / what it is for
    refused_layers: tuple[str, ...] = ()   # Keras layer classes the converter refuses for it
    refusal: str = ""              # the reason given when a refused layer is present
    # Keras layers this recipe leaves in float inside an otherwise integer model (selective
    # quantization: `export --keep-float-layers`, e.g. the layers verify found most sensitive).
    float_layers: tuple[str, ...] = ()

    def keeping_float(self, layers) -> Recipe:
        """This recipe with `layers` left in float; only the full-integer recipes have float to keep."""
        if not layers or self.variant != "int8":
            return self
        return replace(self, float_layers=tuple(layers))

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Recipe:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


RECIPES: dict[tuple[str, str], Recipe] = {(r.format, r.variant): r for r in (
    Recipe("tflite", "fp32", "float_wf32_af32", False,
           "reference: the Keras numbers in TFLite form; parity baseline for every other variant"),
    Recipe("tflite", "fp16", "float_wf16_af32", False,
           "half-size file with float math (weights dequantized at load); for GPU delegates and when "
           "int8 accuracy is not good enough"),
    Recipe("tflite", "dynamic", "dynamic_wi8_afp32", False,
           "quarter-size weights without calibration data; on x86 CNNs it ran slower than fp32, "
           "so it is a size choice, not a speed choice"),
    Recipe("tflite", "int8", "static_wi8_ai8", True,
           "full integer: smallest and fastest on ARM CPUs and the only kind integer-only NPUs run; "
           "scales calibrated on training data"),
    Recipe("tflite", "int16x8", "static_wi8_ai16", True,
           "int8 weights with int16 activations: closer to float than int8 where activations have a "
           "wide range, at about int8 file size",
           # (GRU/SimpleRNN are unrolled into ordinary builtin ops, which have 16x8 kernels)
           refused_layers=("LSTM", "Bidirectional"),
           refusal="the TFLite converter has no 16x8 kernel for the fused LSTM ('Quantization to 16x8-bit "
                   "not yet supported for op: UNIDIRECTIONAL_SEQUENCE_LSTM')"),
    Recipe("onnx", "fp32", "float_wf32_af32", False,
           "reference ONNX graph (tf2onnx) for onnxruntime on devices without LiteRT"),
    Recipe("onnx", "int8", "qdq_wi8_ai8", True,
           "onnxruntime static quantization in QDQ form (per-channel weights), calibrated on the same "
           "representative data as TFLite int8"),
)}

UNAVAILABLE: dict[tuple[str, str], str] = {
    ("onnx", "fp16"): "onnxruntime's CPU provider runs most fp16 ops by casting back to float32: no "
                      "speed or accuracy reason to ship it; use onnx fp32",
    ("onnx", "dynamic"): "onnxruntime quantize_dynamic ran CNNs 10x slower than fp32 (ConvInteger "
                         "kernels); use onnx int8 (static QDQ)",
    ("onnx", "int16x8"): "edgekit has no 16-bit-activation ONNX recipe; use tflite int16x8 or onnx int8",
}


def recipe_for(fmt: str, variant: str) -> Recipe | None:
    """The recipe of a (format, variant), or None when that pair is in UNAVAILABLE."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    return RECIPES.get((fmt, variant))


def refusal_reason(recipe: Recipe, layer_classes: set[str]) -> str | None:
    """Why `recipe` cannot apply to a model with these Keras layer classes, or None."""
    refused = sorted(layer_classes.intersection(recipe.refused_layers))
    if refused:
        return f"{recipe.variant} does not apply to {', '.join(refused)} models: {recipe.refusal}"
    return None
