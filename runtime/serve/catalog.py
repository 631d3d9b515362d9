"""The served models: name -> version -> pool of loaded copies.

A bundle folder is one model with version "1". A folder of numbered bundle folders (TensorFlow
Serving's layout: `spam/1/`, `spam/2/`) is one model with those versions; requests that name no
version get the highest.
"""

from __future__ import annotations

from pathlib import Path

from edgekit.runtime.errors import EdgekitError
from edgekit.runtime.serve.inputs import HTTPError
from edgekit.runtime.serve.pool import ModelPool

MANIFEST = "manifest.json"


def versions_of(path: Path) -> dict[str, Path]:
    """A bundle (or bare model file) -> {"1": path}; a folder of numbered bundles -> {"N": path/N}."""
    if not path.is_dir() or (path / MANIFEST).exists():
        return {"1": path}
    found: dict[str, Path] = {}
    for child in sorted(path.iterdir()):
        if child.is_dir() and child.name.isdigit() and child.name.isascii():
            version = str(int(child.name))
            if version in found:
                raise EdgekitError(f"{path}: folders {found[version].name} and {child.name} are both version "
                                   f"{version}; rename one")
            found[version] = child
    return found or {"1": path}  # no numbered folders: let loading say what is wrong with it


class Catalog:
    def __init__(self, models: dict[str, dict[str, ModelPool]]) -> None:
        self.models = {name: dict(sorted(versions.items(), key=lambda kv: int(kv[0])))
                       for name, versions in models.items()}

    @property
    def names(self) -> list[str]:
        return list(self.models)

    def __contains__(self, name: str) -> bool:
        return name in self.models

    def versions(self, name: str) -> list[str]:
        return list(self.models[name])

    def pool(self, name: str, version: str | None = None) -> tuple[str, ModelPool]:
        """(version, pool) of a served model: the highest version unless one is named; 404 otherwise."""
        versions = self.models.get(name)
        if versions is None:
            raise HTTPError(404, f"no model named {name!r}; this server has {sorted(self.models)}")
        if version is None:
            version = next(reversed(versions))
        if version.isascii() and version.isdigit():
            version = str(int(version))  # "/versions/002" is version 2
        if version not in versions:
            raise HTTPError(404, f"model {name!r} has no version {version!r}; it has {list(versions)}")
        return version, versions[version]

    def pools(self) -> list[ModelPool]:
        return [pool for versions in self.models.values() for pool in versions.values()]
