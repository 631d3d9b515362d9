"""Reading a model for export and verify (host side, needs Keras): a model directory written by
`edgekit train`, or a user's own Keras file (`.keras`; legacy `.h5` only with allow_unsafe).

A bare Keras file has no edgekit.json: its metadata is made here (`file_metadata`: the tensor kind,
named after the file's stem) and may carry a kind's pre/post-processing given on the command line.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from edgekit.core import UserError, first_line, quiet_tensorflow, read_json

METADATA = "edgekit.json"
KERAS_SUFFIX = ".keras"
LEGACY_SUFFIXES = (".h5", ".hdf5")


def is_model_file(path: str | Path) -> bool:
    """A Keras model file (as opposed to a model directory)."""
    return Path(path).suffix.lower() in (KERAS_SUFFIX, *LEGACY_SUFFIXES)


def _check_file(path: Path, allow_unsafe: bool) -> Path:
    if not path.is_file():
        raise UserError(f"model file not found: {path}")
    if path.suffix.lower() in LEGACY_SUFFIXES and not allow_unsafe:
        raise UserError(f"{path} is a legacy HDF5 model, which can execute code when loaded; "
                        "re-save it as .keras or pass --allow-unsafe if you trust it")
    return path


def file_metadata(path: str | Path, name: str | None = None) -> dict:
    """edgekit.json for a bare Keras file: the generic tensor kind, named after the file's stem."""
    return {"task": "tensor", "name": name or Path(path).stem, "labels": None, "preprocessing": None,
            "source_file": Path(path).name}


def read_metadata(model: str | Path) -> dict:
    """The model directory's edgekit.json, or the metadata of a bare Keras file."""
    model = Path(model)
    if is_model_file(model):
        if not model.is_file():
            raise UserError(f"model file not found: {model}")
        return file_metadata(model)
    if not model.is_dir():
        raise UserError(f"model not found: {model} (give a .keras file or a model directory from "
                        "`edgekit train`)")
    return read_json(model / METADATA, "model metadata")


def model_file(model: str | Path, allow_unsafe: bool = False) -> Path:
    """The Keras file of a model: the file itself, or a model directory's model.keras (a legacy .h5
    only with allow_unsafe)."""
    model = Path(model)
    if is_model_file(model):
        return _check_file(model, allow_unsafe)
    keras_file = model / "model.keras"
    if keras_file.is_file():
        return keras_file
    legacy = sorted(p for p in model.glob("*") if p.suffix.lower() in LEGACY_SUFFIXES)
    if legacy:
        return _check_file(legacy[0], allow_unsafe)
    raise UserError(f"no model.keras in {model} (create one with `edgekit train`)")


def keras_config(path: str | Path) -> dict | None:
    """The config.json inside a .keras file (a zip), read without TensorFlow; None when unreadable."""
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None
    return config if isinstance(config, dict) else None


def keras_input_shapes(path: str | Path) -> dict[str, list]:
    """Input name -> shape (batch axis first, None where free) of a .keras file's functional or
    Sequential graph; {} when its config does not say."""
    config = keras_config(path) or {}
    shapes = {}
    for layer in (config.get("config") or {}).get("layers") or []:
        if layer.get("class_name") == "InputLayer":
            inner = layer.get("config") or {}
            shape = inner.get("batch_shape") or inner.get("batch_input_shape")
            if shape:
                shapes[inner.get("name") or layer.get("name")] = list(shape)
    return shapes


def keras_layer_names(path: str | Path) -> set[str] | None:
    """Every layer name of a .keras file (nested models included), read from its config.json without
    TensorFlow, so options naming layers are checked before any conversion; None when unreadable."""
    config = keras_config(path)
    if config is None:
        return None
    names: set[str] = set()

    def walk(node) -> None:
        if isinstance(node, dict):
            if "class_name" in node and isinstance(node.get("config"), dict) and node["config"].get("name"):
                names.add(str(node["config"]["name"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    return names


def unloadable_layer(config: dict | None) -> str | None:
    """Why a .keras file's config cannot load here, naming the first layer at fault: a Lambda layer
    (Python code, refused by safe mode) or a custom class (registered in the user's own code)."""

    def walk(node) -> str | None:
        if isinstance(node, dict):
            inner = node.get("config") if isinstance(node.get("config"), dict) else {}
            name = inner.get("name", "?")
            if node.get("class_name") == "Lambda":
                return (f"layer {name!r} is a Lambda layer (Python code, which safe mode does not load): "
                        "replace it with built-in layers or re-save the model without it")
            registered = node.get("registered_name")
            if isinstance(registered, str) and ">" in registered and "layers" not in str(node.get("module")):
                return (f"layer {name!r} is a custom class {registered!r} from your own code, which edgekit "
                        "cannot import: build the model from built-in Keras layers")
            for value in node.values():
                found = walk(value)
                if found:
                    return found
        elif isinstance(node, list):
            for value in node:
                found = walk(value)
                if found:
                    return found
        return None

    return walk(config) if config else None


def load_keras(path: Path):
    """Load one Keras file; `.keras` always in Keras' safe mode. UserError (one line, naming the
    user's file and, where the config says, the layer at fault) when it fails."""
    quiet_tensorflow()
    import keras

    shown = path.resolve()  # the user's file, not a model view's link to it
    try:
        if path.suffix.lower() == KERAS_SUFFIX:
            return keras.saving.load_model(path, compile=False, safe_mode=True)
        return keras.saving.load_model(path, compile=False)
    except Exception as exc:  # corrupt or foreign file: one line, not a Keras traceback
        why = unloadable_layer(keras_config(path)) if path.suffix.lower() == KERAS_SUFFIX else None
        raise UserError(f"cannot load {shown}: {why or first_line(exc)}") from None


def load_model(model: str | Path, allow_unsafe: bool = False):
    """Load (keras_model, metadata) from a model directory or a Keras file."""
    metadata = read_metadata(model)
    return load_keras(model_file(model, allow_unsafe)), metadata
