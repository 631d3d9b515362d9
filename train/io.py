"""Reading a model directory written by `edgekit train` (host side, needs Keras)."""

from __future__ import annotations

from pathlib import Path

from edgekit.core import UserError, first_line, quiet_tensorflow, read_json

METADATA = "edgekit.json"


def read_metadata(model_dir: str | Path) -> dict:
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise UserError(f"model directory not found: {model_dir} (create one with `edgekit train`)")
    return read_json(model_dir / METADATA, "model metadata")


def model_file(model_dir: str | Path, allow_unsafe: bool = False) -> Path:
    """The model file of a model directory: model.keras, or a legacy .h5 only with allow_unsafe."""
    model_dir = Path(model_dir)
    keras_file = model_dir / "model.keras"
    if keras_file.is_file():
        return keras_file
    legacy = sorted(model_dir.glob("*.h5"))
    if legacy:
        if not allow_unsafe:
            raise UserError(f"{legacy[0]} is a legacy HDF5 model, which can execute code when loaded; "
                            "re-save it as .keras or pass --allow-unsafe if you trust it")
        return legacy[0]
    raise UserError(f"no model.keras in {model_dir} (create one with `edgekit train`)")


def load_model(model_dir: str | Path, allow_unsafe: bool = False):
    """Load (keras_model, metadata). `.keras` files always load in Keras' safe mode."""
    metadata = read_metadata(model_dir)
    path = model_file(model_dir, allow_unsafe)
    quiet_tensorflow()
    import keras

    try:
        if path.suffix == ".keras":
            model = keras.saving.load_model(path, compile=False, safe_mode=True)
        else:
            model = keras.saving.load_model(path, compile=False)
    except Exception as exc:  # corrupt or foreign file: one line, not a Keras traceback
        first = first_line(exc)
        raise UserError(f"cannot load {path}: {first}") from None
    return model, metadata
