"""Export formats, host half, registered once (the device half of each format, its suffix, backends
and graph reader, is edgekit/runtime/formats).

Each host-half module maps recipes (export/recipes.py) onto its converter and knows what only the host
does with its files:

    unsupported(recipe) -> str | None           why this format does not produce a recipe at all
    refusal(recipe, layer_classes) -> str | None   why it cannot apply to a model with these layers
    recipe_name(recipe) -> str                  the naming-scheme name the manifest records
    export_variant(recipe, model, metadata, request, calibration, staging, cache) -> Path
    conversion_path(model, recipe) -> str
    export_settings(recipe, settings) -> dict   the export options that shaped this file (manifest `export`)
    op_problems(op_records, layer_classes) -> list[str]    the format's own op rules (export/opcheck.py)
    write_metadata(model_path, metadata, input_spec, label) -> dict | None   phone-app metadata, if any
    layer_errors(entry, bundles, model_dir, x, samples, factory) -> dict      per-layer int8 error
    fix_candidates(entry, context) -> object    what verify --fix tries for a failing integer bundle

Adding a format: its device half in runtime/formats, its host half here, one line in HOST_MODULES.
"""

from __future__ import annotations

import importlib

from edgekit.export import recipes
from edgekit.runtime import formats as device_formats

HOST_MODULES = {"tflite": "edgekit.export.tflite", "onnx": "edgekit.export.onnx"}
NAMES = tuple(HOST_MODULES)


def host(fmt: str):
    """The host-half module of format `fmt` (imported on demand: each pulls in its converter)."""
    if fmt not in HOST_MODULES:
        raise ValueError(f"unknown format {fmt!r}; formats: {', '.join(HOST_MODULES)}")
    return importlib.import_module(HOST_MODULES[fmt])


def device(fmt: str) -> device_formats.Format:
    return device_formats.get(fmt)


def file_name(fmt: str) -> str:
    return device_formats.get(fmt).file_name


def recipe_for(fmt: str, variant: str) -> recipes.Recipe | None:
    """The recipe of `variant` if format `fmt` produces it, else None (see `unavailable`)."""
    recipe = recipes.get(variant)
    return None if host(fmt).unsupported(recipe) else recipe


def unavailable(fmt: str, variant: str) -> str | None:
    """Why format `fmt` does not produce `variant` (None when it does)."""
    return host(fmt).unsupported(recipes.get(variant))


def recipe_name(fmt: str, recipe: recipes.Recipe) -> str:
    return host(fmt).recipe_name(recipe)
