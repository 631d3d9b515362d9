"""Bundles for tests that make their model files with their own converter (to stay fast or to stay
out of export/): the manifest is the one export writes (export/manifest.py `build_manifest`, over the
format's graph reader), never a hand-written one, so a change to the bundle contract reaches them."""

from __future__ import annotations

from pathlib import Path


def write_bundle(folder: Path, fmt: str, variant: str, data: bytes, metadata: dict, settings: dict | None = None,
                 **extra) -> Path:
    """`folder`/ = the model file + manifest.json for `data` (a .tflite or .onnx file's bytes) of the
    model described by `metadata` (task, name, labels, preprocessing); `extra` adds manifest keys."""
    from edgekit.core import atomic_dir, atomic_write_json
    from edgekit.export import formats, recipes
    from edgekit.export.manifest import MANIFEST_FILE, build_manifest

    recipe = recipes.get(variant)
    with atomic_dir(folder) as tmp:
        path = tmp / formats.file_name(fmt)
        path.write_bytes(data)
        details = formats.device(fmt).read_graph(data).describe()
        manifest = build_manifest(fmt=fmt, variant=variant, recipe=recipe, recipe_name=formats.recipe_name(fmt, recipe),
                                  model_path=path, details=details, metadata=metadata,
                                  source_sha256="built by a test", settings=settings or {})
        manifest.update(extra)
        atomic_write_json(tmp / MANIFEST_FILE, manifest)
    return Path(folder)
