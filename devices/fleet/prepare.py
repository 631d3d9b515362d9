"""What the controller builds before a fleet deploy: per bundle a release (content hash, archive,
golden file), per device platform a runtime (a site folder of wheels, edgekit's own wheel).

The role calls this on the controller (`python -m edgekit.devices.fleet.prepare bundles|runtime`,
JSON on stdout), so `edgekit fleet deploy` and a plain `ansible-playbook` run prepare the same way.
Everything is cached under the user's cache folder (edgekit/fleet/ beside devices/), built under a
temporary name and renamed into place:

    golden/KEY.npz                      a release's golden file (KEY: release hash, golden source, samples)
    releases/KEY.tar.gz                 what a device unpacks: release/ (the bundle) and golden.npz
    wheels/KEY/keras_edgekit-V-py3-none-any.whl   edgekit's runtime as a wheel (KEY: its sha256)
    runtime/SITE.tar.gz                 a platform's site folder (devices/emulation.install_wheels)

Wheels for a platform: what a device profile of that architecture lists (the set `devices check`
runs under emulation), else the `runtime` extra's pinned requirements, fetched for the device's
Python and glibc from the machine's own pip configuration.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from edgekit import __version__
from edgekit.core import UserError, atomic_write_bytes, log
from edgekit.devices import emulation
from edgekit.runtime import profiles
from edgekit.runtime.errors import EdgekitError, first_line

GOLDEN_SAMPLES = 32
# A release archive up to this size travels inside the deploy task's arguments (base64): one ssh
# round trip instead of the copy module's three. Larger ones are uploaded as files.
INLINE_BYTES = 1 << 20
MANYLINUX_OLDEST = 17          # manylinux2014 = glibc 2.17, the oldest tag current wheels use
WHEEL_DATE = (1980, 1, 1, 0, 0, 0)   # fixed timestamps: the same sources give the same wheel (and key)


def cache_dir() -> Path:
    return emulation.cache_dir().parent / "fleet"


# --------------------------------------------------------------------------------------- bundles

def content_hash(folder: Path) -> str:
    """The release id: sha256 over every file's relative path and content (16 hex digits)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        file_digest = hashlib.sha256(path.read_bytes()).hexdigest()
        digest.update(f"{path.relative_to(folder).as_posix()}\0{file_digest}\n".encode())
    return digest.hexdigest()[:16]


def _tar_gz(members: list[tuple[Path, str]], out: Path, level: int = 1) -> None:
    """A .tar.gz of (folder, name in the archive) pairs, each folder's files and subfolders under its
    name ("" = at the top), written atomically. gzip level 1: measured on the x86-64 site, 213 MB ->
    83 MB in 8 s; higher levels save a few per cent for several times the seconds."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
    os.close(fd)
    try:
        with tarfile.open(tmp, "w:gz", compresslevel=level) as tar:
            for source, name in members:
                if source.is_file():
                    tar.add(source, arcname=name, recursive=False)
                    continue
                for path in sorted(source.rglob("*")):
                    if path.is_symlink() or path.name == ".complete" or not (path.is_file() or path.is_dir()):
                        continue
                    rel = path.relative_to(source).as_posix()
                    tar.add(path, arcname=f"{name}/{rel}" if name else rel, recursive=False)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def bundle_release(path: str, golden: str | None = None, samples: int = GOLDEN_SAMPLES) -> dict:
    """One bundle made ready to ship: its release id, its golden file, and the archive a device
    unpacks (`release/`: the bundle; `golden.npz`)."""
    from edgekit.devices.check import make_golden, read_bundle  # numpy and the runtime: only here

    bundle, manifest = read_bundle(path)
    release = content_hash(bundle)
    root = cache_dir()
    source = hashlib.sha256(Path(golden).read_bytes()).hexdigest()[:16] if golden else "host"
    key = f"{release}-{source}-{samples}"
    golden_path, info_path = root / "golden" / f"{key}.npz", root / "golden" / f"{key}.json"
    if golden_path.is_file() and info_path.is_file():
        info = json.loads(info_path.read_text())
    else:
        with tempfile.TemporaryDirectory(prefix="edgekit-fleet-") as tmp:
            out = Path(tmp) / "golden.npz"
            info = make_golden(bundle, manifest, samples, out, golden)
            atomic_write_bytes(golden_path, out.read_bytes())
        atomic_write_bytes(info_path, json.dumps(info).encode())
    archive = root / "releases" / f"{key}.tar.gz"
    if not archive.is_file():
        with tempfile.TemporaryDirectory(prefix="edgekit-fleet-") as tmp:
            clean = Path(tmp) / "release"  # the bundle without caches: exactly what the hash covers
            shutil.copytree(bundle, clean, ignore=shutil.ignore_patterns("__pycache__"))
            _tar_gz([(clean, "release"), (golden_path, "golden.npz")], archive)
    size = archive.stat().st_size
    inline = base64.b64encode(archive.read_bytes()).decode() if size <= INLINE_BYTES else ""
    return {"name": bundle.name, "path": str(bundle), "release": release, "archive": str(archive),
            "size_bytes": size, "inline": inline,
            "golden": str(golden_path), "golden_source": info.get("reference_source"),
            "format": manifest["format"], "variant": manifest["variant"]}


def prepare_bundles(specs: list, samples: int = GOLDEN_SAMPLES) -> list[dict]:
    """`specs`: bundle paths, or {"path": ..., "golden": FILE or null}. Names must be unique."""
    out, seen = [], {}
    for spec in specs:
        spec = {"path": spec} if isinstance(spec, str) else dict(spec)
        if not spec.get("path"):
            raise UserError(f"a bundle entry needs a path: {spec!r}")
        item = bundle_release(spec["path"], spec.get("golden"), samples)
        if item["name"] in seen:
            raise UserError(f"two bundles are both named {item['name']!r}: {seen[item['name']]} and {item['path']}")
        seen[item["name"]] = item["path"]
        out.append(item)
    return out


# --------------------------------------------------------------------------------------- runtime

def platform_tags(machine: str, libc: str, libc_version: str) -> list[str]:
    """The wheel platform tags a device with this machine and glibc runs (newest first)."""
    if libc != "glibc":
        raise UserError(f"{machine} device with {libc or 'an unknown libc'}: only glibc systems have "
                        "manylinux wheels (Raspberry Pi OS, Debian, Ubuntu)")
    try:
        major, minor = (int(p) for p in libc_version.split(".")[:2])
    except ValueError:
        raise UserError(f"cannot read the device's glibc version {libc_version!r}") from None
    if major != 2 or minor < MANYLINUX_OLDEST:
        raise UserError(f"glibc {libc_version} is older than any manylinux wheel (2.{MANYLINUX_OLDEST})")
    tags = [f"manylinux_2_{m}_{machine}" for m in range(minor, MANYLINUX_OLDEST - 1, -1)]
    tags.append(f"manylinux2014_{machine}")
    return tags + [f"linux_{machine}"] if machine.startswith("armv") else tags


def platform_wheels(machine: str, python: str) -> tuple[list[str], bool, str]:
    """(requirements, with dependencies?, where the list comes from) for one device platform."""
    for profile in profiles.load_all():
        q = profile.get("qemu")
        if profile["arch"] == machine and q and q.get("wheels") and q.get("python_version") == python:
            return list(q["wheels"]), bool(q.get("wheel_deps", True)), f"device profile {profile['name']}"
    return _runtime_extra(machine, python), True, "the runtime extra"


def _runtime_extra(machine: str, python: str) -> list[str]:
    """keras-edgekit[runtime]'s requirements, evaluated for the device (its machine and Python)."""
    from importlib.metadata import PackageNotFoundError, requires

    from packaging.requirements import Requirement

    try:
        lines = requires("keras-edgekit") or []
    except PackageNotFoundError:
        raise UserError("keras-edgekit's metadata is missing: install it (pip install -e . or the wheel)") from None
    env = {"platform_machine": machine, "python_version": python, "sys_platform": "linux",
           "platform_system": "Linux", "os_name": "posix", "implementation_name": "cpython", "extra": "runtime"}
    wanted = []
    for line in lines:
        req = Requirement(line)
        if req.marker is not None and "extra" in str(req.marker) and req.marker.evaluate(env):
            wanted.append(f"{req.name}{req.specifier}")
    return wanted


def _runtime_sources() -> str:
    """A digest of what `check.stage_runtime` copies (the `edgekit` root's __init__ and the runtime
    package without caches and notes): the same digest, the same wheel."""
    import edgekit
    from edgekit import runtime

    digest = hashlib.sha256(f"{__version__}\n".encode())
    folder = Path(runtime.__file__).parent
    files = {"__init__.py": Path(edgekit.__file__)}
    files.update({f"runtime/{p.relative_to(folder).as_posix()}": p for p in folder.rglob("*")
                  if p.is_file() and p.suffix not in (".pyc", ".md") and "__pycache__" not in p.parts})
    for name, path in sorted(files.items()):
        digest.update(f"{name}\0{hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
    return digest.hexdigest()[:16]


def runtime_wheel() -> tuple[Path, str]:
    """edgekit's device side (the `edgekit` root's __init__ and `edgekit.runtime`, what
    `devices check` and `deploy` stage) as a pure-Python wheel; (path, key). Built once per version
    of those sources (a lookup by their digest skips staging and zipping)."""
    index = cache_dir() / "wheels" / f"sources-{_runtime_sources()}.json"
    if index.is_file():
        known = json.loads(index.read_text())
        if Path(known["path"]).is_file():
            return Path(known["path"]), known["key"]
    from edgekit.devices.check import stage_runtime

    with tempfile.TemporaryDirectory(prefix="edgekit-wheel-") as tmp:
        stage = stage_runtime(Path(tmp) / "stage")
        files = sorted(p for p in stage.rglob("*") if p.is_file())
        dist = f"keras_edgekit-{__version__}.dist-info"
        metadata = (f"Metadata-Version: 2.1\nName: keras-edgekit\nVersion: {__version__}\n"
                    "Summary: edgekit's device side (edgekit.runtime), built by edgekit fleet\n"
                    "Requires-Python: >=3.9\nRequires-Dist: numpy>=1.23\n")
        wheel = "Wheel-Version: 1.0\nGenerator: edgekit fleet\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        entries = [(p.relative_to(stage).as_posix(), p.read_bytes()) for p in files]
        entries += [(f"{dist}/METADATA", metadata.encode()), (f"{dist}/WHEEL", wheel.encode())]
        record = "".join(f"{name},sha256={_b64(data)},{len(data)}\n" for name, data in entries) + f"{dist}/RECORD,,\n"
        entries.append((f"{dist}/RECORD", record.encode()))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries:
            info = zipfile.ZipInfo(name, WHEEL_DATE)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data)
    data = buffer.getvalue()
    key = hashlib.sha256(data).hexdigest()[:16]
    path = cache_dir() / "wheels" / key / f"keras_edgekit-{__version__}-py3-none-any.whl"
    if not path.is_file():
        atomic_write_bytes(path, data)
    atomic_write_bytes(index, json.dumps({"path": str(path), "key": key}).encode())
    return path, key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def platform_id(p: dict) -> str:
    return f"{p['machine']}-cp{p['python'].replace('.', '')}-{p.get('libc')}{p.get('libc_version')}"


def prepare_runtime(platforms: list[dict]) -> dict:
    """Per platform ({"machine", "python", "libc", "libc_version"}): the site archive and edgekit's
    wheel the devices unpack; a platform that cannot be served gets {"error": one line} instead, so
    only its hosts fail."""
    wheel, wheel_key = runtime_wheel()
    wheel_inline = base64.b64encode(wheel.read_bytes()).decode()  # ~0.2 MB: travels in the task's arguments
    out = {}
    for p in platforms:
        pid = platform_id(p)
        if pid in out:
            continue
        try:
            python = ".".join(str(p["python"]).split(".")[:2])
            wheels, deps, source = platform_wheels(p["machine"], python)
            tags = platform_tags(p["machine"], p.get("libc") or "", p.get("libc_version") or "")
            site = emulation.install_wheels(p["machine"], wheels, tags, python, deps)
            archive = cache_dir() / "runtime" / f"{site.name}.tar.gz"
            if not archive.is_file():
                archive.parent.mkdir(parents=True, exist_ok=True)
                log(f"fleet: packing the {p['machine']} runtime ({site.name})")
                _tar_gz([(site, "")], archive)  # with the .pyc compiled here: devices start faster
            out[pid] = {"site_key": site.name, "site_archive": str(archive), "edgekit_key": wheel_key,
                        "wheel": str(wheel), "wheel_inline": wheel_inline, "wheels": wheels, "wheels_from": source}
        except EdgekitError as exc:
            out[pid] = {"error": f"runtime for {pid}: {exc}"}
    return out


# ------------------------------------------------------------------------------------------ main

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgekit.devices.fleet.prepare", allow_abbrev=False,
                                     description="controller side of edgekit's fleet role (JSON on stdout)")
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("bundles", help="release id, archive and golden file per bundle")
    p.add_argument("--spec", required=True, help="JSON list: bundle paths or {path, golden}")
    p.add_argument("--samples", type=int, default=GOLDEN_SAMPLES)
    p = sub.add_parser("runtime", help="site archive and edgekit wheel per device platform")
    p.add_argument("--platforms", required=True, help="JSON list of {machine, python, libc, libc_version}")
    args = parser.parse_args(argv)
    try:
        spec = json.loads(args.spec if args.what == "bundles" else args.platforms)
        if not isinstance(spec, list):
            raise UserError("expected a JSON list")
        doc = ({"bundles": prepare_bundles(spec, max(1, args.samples))} if args.what == "bundles"
               else {"platforms": prepare_runtime(spec)})
    except json.JSONDecodeError as exc:
        print(f"{parser.prog}: error: not JSON: {exc}", file=sys.stderr)
        return 2
    except EdgekitError as exc:  # one line, as both CLIs end (the role shows it as the task's failure)
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        print(f"{parser.prog}: internal error: {type(exc).__name__}: {first_line(exc)}", file=sys.stderr)
        return 3
    print(json.dumps(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
