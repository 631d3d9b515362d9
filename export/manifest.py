"""manifest.json of a bundle (fields: docs/design.md, "Bundle")."""

from __future__ import annotations

from pathlib import Path

from edgekit import __version__
from edgekit.core import library_versions, now_iso, sha256_file
from edgekit.export.recipes import Recipe

MANIFEST_FILE = "manifest.json"


def build_manifest(*, fmt: str, variant: str, recipe: Recipe, recipe_name: str, model_path: Path,
                   details: dict, metadata: dict, source_sha256: str, settings: dict) -> dict:
    """The manifest of the model file at `model_path` (already in its bundle folder).

    details: what the worker read back from the file (inputs, outputs, ops, converter_path,
    max_abs_err_vs_keras); settings: the export options that shaped this file."""
    io_fields = ("name", "shape", "dtype", "quantization", "tensor_name", "index")
    return {
        "edgekit_version": __version__,
        "format": fmt,
        "variant": variant,
        "recipe": recipe_name,                      # the naming-scheme name in this format
        "float_layers": list(recipe.float_layers),  # part of the recipe: what it left in float
        "model_file": model_path.name,
        "sha256": sha256_file(model_path),
        "size_bytes": model_path.stat().st_size,
        "task": metadata.get("task"),
        "name": metadata.get("name"),
        "labels": metadata.get("labels"),
        "preprocessing": metadata.get("preprocessing"),
        "inputs": [{k: t[k] for k in io_fields if k in t} for t in details["inputs"]],
        "outputs": [{k: t[k] for k in io_fields if k in t} for t in details["outputs"]],
        "ops": details["ops"],
        "source": {"model_sha256": source_sha256, "metadata": metadata},
        "export": {**settings,
                   "converter_path": details.get("converter_path"),
                   "max_abs_err_vs_keras": details.get("max_abs_err_vs_keras"),
                   "op_check": "passed"},
        "versions": library_versions(),
        "created": now_iso(),
    }
