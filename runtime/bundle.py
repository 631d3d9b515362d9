"""Reading a bundle (model file + manifest.json + assets, docs/design.md) or a bare model file.

The model file is read into memory once, its sha256 is checked against the manifest on those bytes,
and the backend later loads the same bytes: what was checked is what runs (no re-read in between).
A file whose hash the manifest vouches for is `trusted`; anything else (a bare .tflite/.onnx path, a
bundle without a manifest) is not, and `runtime.load` probes it in a child process first.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from edgekit.runtime import formats
from edgekit.runtime.errors import IntegrityError, ModelFileError

MANIFEST = "manifest.json"
MAX_MODEL_BYTES = 2 << 30  # 2 GiB: flatbuffers and protobufs cannot be larger anyway


@dataclass
class Bundle:
    path: Path                    # bundle folder, or the bare model file
    model_path: Path
    format: str                   # a name in edgekit.runtime.formats.FORMATS
    model_bytes: bytes = field(repr=False)
    sha256: str
    manifest: dict | None         # None for a bare model file
    trusted: bool                 # sha256 verified against a manifest

    @property
    def assets_dir(self) -> Path:
        return (self.path if self.path.is_dir() else self.path.parent) / "assets"

    @property
    def labels(self) -> list[str] | None:
        labels = (self.manifest or {}).get("labels")
        return [str(x) for x in labels] if isinstance(labels, list) and labels else None

    @property
    def preprocessing(self) -> dict | None:
        params = (self.manifest or {}).get("preprocessing")
        return params if isinstance(params, dict) and params else None

    @property
    def task(self) -> str | None:
        return (self.manifest or {}).get("task")

    @property
    def variant(self) -> str | None:
        return (self.manifest or {}).get("variant")

    @property
    def name(self) -> str:
        return str((self.manifest or {}).get("name") or self.model_path.stem)


def _read_model(path: Path) -> bytes:
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    size = path.stat().st_size
    if size == 0:
        raise ModelFileError(f"model file {path} is empty")
    if size > MAX_MODEL_BYTES:
        raise ModelFileError(f"model file {path} is {size} bytes, larger than any TFLite/ONNX model can be")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"cannot read model file {path}: {exc.strerror or exc}") from None


def check_format(data: bytes, fmt: str, path: Path) -> None:
    """Cheap structural checks before any backend sees the bytes (the format's own)."""
    formats.get(fmt).check_bytes(data, path)


def read_manifest(folder: str | os.PathLike) -> dict:
    """A bundle folder's manifest.json: the one reader (runtime, verify, devices). Raises a
    ModelFileError naming the file when it is missing, unreadable, or lacks the keys every reader needs."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise ModelFileError(f"{folder} has no {MANIFEST}: not an edgekit bundle (export one with "
                             "`edgekit export`, or load the model file itself)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    except ValueError as exc:
        raise ModelFileError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict):
        raise ModelFileError(f"{path} is not a JSON object")
    missing = [k for k in ("format", "model_file", "sha256") if not isinstance(manifest.get(k), str)]
    if missing:
        raise ModelFileError(f"{path} lacks {', '.join(missing)}; re-export the bundle with `edgekit export`")
    return manifest


def _model_in_bundle(folder: Path, manifest: dict) -> Path:
    name = manifest["model_file"]
    if os.path.basename(name) != name or name in ("", ".", ".."):
        raise ModelFileError(f"manifest model_file {name!r} must be a file name inside the bundle")
    return folder / name


def read_bundle(path: str | os.PathLike) -> Bundle:
    """Read a bundle folder (with manifest.json) or a bare .tflite/.onnx file and check its integrity."""
    path = Path(path)
    if path.is_dir():
        manifest = read_manifest(path)
        fmt = manifest["format"]
        if fmt not in formats.FORMATS:
            raise ModelFileError(f"{path / MANIFEST}: unknown format {fmt!r}; expected one of "
                                 f"{', '.join(formats.FORMATS)}")
        model_path = _model_in_bundle(path, manifest)
        data = _read_model(model_path)
        digest = hashlib.sha256(data).hexdigest()
        size = manifest.get("size_bytes")
        if isinstance(size, int) and size != len(data):
            raise IntegrityError(f"{model_path} is {len(data)} bytes but the manifest says {size}: the "
                                 "file was truncated or replaced; re-export or re-copy the bundle")
        if digest != manifest["sha256"].lower():
            raise IntegrityError(f"{model_path} sha256 {digest[:12]}... does not match the manifest's "
                                 f"{manifest['sha256'][:12]}...: the file was modified or corrupted; "
                                 "re-export or re-copy the bundle")
        check_format(data, fmt, model_path)
        return Bundle(path, model_path, fmt, data, digest, manifest, trusted=True)
    if not path.exists():
        raise ModelFileError(f"bundle or model file not found: {path}")
    found = formats.by_suffix(path)
    if found is None:
        raise ModelFileError(f"{path}: unknown model file type {path.suffix!r}; expected a bundle folder "
                             f"or a model file ({formats.suffixes()})")
    fmt = found.name
    data = _read_model(path)
    check_format(data, fmt, path)
    return Bundle(path, path, fmt, data, hashlib.sha256(data).hexdigest(), None, trusted=False)
