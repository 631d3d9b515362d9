"""User-mode QEMU plus a Python of the device's architecture, assembled from Debian packages and PyPI
wheels and cached under the user's cache folder ($XDG_CACHE_HOME or ~/.cache)/edgekit/devices/.

Nothing here touches the system's package configuration: `apt-get` runs against a source list, state
and cache of its own inside the cache folder (the mirror URI is read from the machine's own
/etc/apt/sources.list(.d)), and packages are unpacked with `dpkg -x`, never installed.

    qemu/<suite>-<hostarch>/usr/bin/qemu-aarch64     qemu-user from Debian trixie (static binaries)
    sysroot/<suite>-<arch>/usr/bin/python3.11        the device's Python and its shared libraries
    site/<arch>-<hash of wheels+tags>/               wheels installed with pip --target --platform
    apt/<suite>-<arch>/                              apt lists/cache for that suite and architecture

Each piece is built under a temporary name and renamed into place when complete, so an interrupted
first run leaves nothing half-made; the second run finds everything and starts at once.

Why qemu from trixie: bookworm's qemu-user 7.2 segfaults inside ai_edge_litert's Interpreter and on
importing onnxruntime; qemu-user 10 runs both (docs/conversion-facts.md).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from edgekit.core import UserError, atomic_dir, file_lock, log

QEMU_SUITE = "trixie"          # qemu-user 10.x; its binaries are static, so no host libraries needed
QEMU_MIN_MAJOR = 8             # 7.2 (bookworm) crashes in the backends
KEEP_QEMU = ("qemu-aarch64", "qemu-arm")
DEFAULT_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
APT_SOURCE_FILES = ("/etc/apt/sources.list",)
APT_SOURCE_DIR = "/etc/apt/sources.list.d"

# The Python 3.11 interpreter and the shared libraries it, numpy and the backends' wheels load.
PYTHON_PACKAGES = [
    "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "libc6", "libexpat1",
    "zlib1g", "libssl3", "libffi8", "libstdc++6", "libgcc-s1", "libbz2-1.0", "liblzma5",
    "libsqlite3-0", "libuuid1", "libncursesw6", "libtinfo6", "libcrypt1",
]
INSTALL_HINT = ("on Debian/Ubuntu: apt-get install apt dpkg (the fetch needs network access once); "
                "or install qemu-user >= 8 yourself")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "edgekit" / "devices"


# --- the machine's own Debian mirror ------------------------------------------------------------

def parse_sources(text: str, deb822: bool) -> list[dict]:
    """Entries of an apt source file: [{types, uris, suites, components, signed_by}]."""
    entries = []
    if deb822:
        for block in re.split(r"\n\s*\n", text):
            fields: dict[str, str] = {}
            key = None
            for line in block.splitlines():
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                if line[0] in " \t" and key:
                    fields[key] += " " + line.strip()
                    continue
                if ":" in line:
                    key, value = line.split(":", 1)
                    key = key.strip().lower()
                    fields[key] = value.strip()
            if not fields or fields.get("enabled", "yes").lower() == "no":
                continue
            entries.append({
                "types": fields.get("types", "").split(), "uris": fields.get("uris", "").split(),
                "suites": fields.get("suites", "").split(),
                "components": fields.get("components", "").split(),
                "signed_by": fields.get("signed-by") or None,
            })
    else:
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            options = {}
            match = re.match(r"^(deb(?:-src)?)\s+\[([^\]]*)\]\s+(.*)$", line)
            if match:
                kind, opts, rest = match.groups()
                for opt in opts.split():
                    if "=" in opt:
                        k, v = opt.split("=", 1)
                        options[k] = v
            else:
                kind, _, rest = line.partition(" ")
            parts = rest.split()
            if kind not in ("deb", "deb-src") or len(parts) < 2:
                continue
            entries.append({"types": [kind], "uris": [parts[0]], "suites": [parts[1]],
                            "components": parts[2:], "signed_by": options.get("signed-by")})
    return entries


def debian_mirror(files: list[str | os.PathLike] | None = None) -> tuple[str, str]:
    """(mirror URI, keyring) of the machine's main Debian archive, read from its apt configuration.

    The main archive is the first `deb` entry whose suite is a plain release name (not -security,
    -updates, -backports) and whose URI is not a security mirror; other suites are substituted there.
    """
    if files is None:
        files = [f for f in APT_SOURCE_FILES if os.path.isfile(f)]
        if os.path.isdir(APT_SOURCE_DIR):
            files += sorted(str(p) for p in Path(APT_SOURCE_DIR).iterdir()
                            if p.suffix in (".list", ".sources") and p.is_file())
    for path in files:
        try:
            text = Path(path).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for entry in parse_sources(text, deb822=str(path).endswith(".sources")):
            if "deb" not in entry["types"]:
                continue
            suites = [s for s in entry["suites"] if "-" not in s and "/" not in s]
            uris = [u for u in entry["uris"] if "security" not in u]
            if suites and uris and "main" in (entry["components"] or ["main"]):
                keyring = entry["signed_by"]
                if not keyring or not os.path.isfile(keyring):
                    keyring = DEFAULT_KEYRING
                return uris[0].rstrip("/"), keyring
    raise UserError("no Debian archive found in /etc/apt/sources.list(.d) to fetch the device's "
                    "packages from; " + INSTALL_HINT)


# --- apt-get against a private list -------------------------------------------------------------

def require_tools(*tools: str) -> None:
    missing = [t for t in tools if not shutil.which(t)]
    if missing:
        raise UserError(f"{', '.join(missing)} not found: device emulation needs them to fetch "
                        f"qemu-user and the device's Python; {INSTALL_HINT}")


def _locked(name: str):
    return file_lock(cache_dir() / f".{name}.lock")


def _run(argv: list[str], what: str, cwd: str | os.PathLike | None = None, hint: str = "") -> str:
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [l for l in (proc.stderr + proc.stdout).splitlines() if l.strip()]
        errors = [l for l in lines if l.startswith(("E:", "ERROR", "W:"))] or lines
        detail = errors[-1].strip() if errors else f"exit {proc.returncode}"
        raise UserError(f"{what} failed{hint}: {detail}")
    return proc.stdout


def apt_download(suite: str, arch: str, packages: list[str], dest: Path) -> list[Path]:
    """Download `packages` of Debian `suite`/`arch` into `dest` with apt-get, using a source list,
    state and cache inside the cache folder (the system's dpkg/apt configuration is untouched)."""
    require_tools("apt-get", "dpkg-deb")
    uri, keyring = debian_mirror()
    state = cache_dir() / "apt" / f"{suite}-{arch}"
    for sub in ("lists/partial", "cache/archives/partial", "parts", "prefs"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    (state / "status").touch()
    (state / "sources.list").write_text(
        f"deb [arch={arch} signed-by={keyring}] {uri} {suite} main\n", encoding="utf-8")
    opts = [
        f"Dir::Etc::SourceList={state / 'sources.list'}", f"Dir::Etc::SourceParts={state / 'parts'}",
        f"Dir::Etc::PreferencesParts={state / 'prefs'}", f"Dir::Etc::Preferences={state / 'prefs.none'}",
        f"Dir::State={state}", f"Dir::State::Lists={state / 'lists'}",
        f"Dir::State::status={state / 'status'}", f"Dir::Cache={state / 'cache'}",
        f"APT::Architecture={arch}", f"APT::Architectures={arch}", "Acquire::Languages=none",
        "Debug::NoLocking=1", "APT::Get::AllowUnauthenticated=false",
    ]
    if os.geteuid() == 0:  # the _apt sandbox user cannot write into root's cache folder
        opts.append("APT::Sandbox::User=root")
    base = ["apt-get", "-q"] + [x for o in opts for x in ("-o", o)]
    lists = list((state / "lists").glob("*Packages*"))
    if not lists or time.time() - min(p.stat().st_mtime for p in lists) > 7 * 86400:
        log(f"  apt-get update: {uri} {suite} ({arch})")
        _run(base + ["update"], f"apt-get update for {suite}/{arch} from {uri}",
             hint=" (the first run needs network access to the Debian mirror)")
    dest.mkdir(parents=True, exist_ok=True)
    log(f"  apt-get download: {len(packages)} {arch} packages from {suite}")
    _run(base + ["download"] + [f"{p}:{arch}" for p in packages],
         f"apt-get download from {suite}/{arch}", cwd=dest)
    return sorted(dest.glob("*.deb"))


def _unpack(debs: list[Path], root: Path) -> None:
    for deb in debs:
        _run(["dpkg-deb", "-x", str(deb), str(root)], f"dpkg-deb -x {deb.name}")


def _building(final: Path):
    """A temporary folder next to `final`, renamed to it on success, removed on failure."""
    return atomic_dir(final)


# --- qemu-user ----------------------------------------------------------------------------------

def _qemu_major(binary: str) -> int:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    match = re.search(r"version (\d+)\.", out)
    return int(match.group(1)) if match else 0


def host_debian_arch() -> str:
    try:
        return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        import platform

        return {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def find_qemu(binary: str) -> str | None:
    """A usable qemu-user binary without downloading: $EDGEKIT_QEMU_DIR, the cache, then PATH
    (PATH only when it is version 8 or newer)."""
    candidates = []
    if os.environ.get("EDGEKIT_QEMU_DIR"):
        candidates.append(Path(os.environ["EDGEKIT_QEMU_DIR"]) / binary)
    root = cache_dir() / "qemu"
    if root.is_dir():
        candidates += sorted(root.glob(f"*/usr/bin/{binary}"))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    on_path = shutil.which(binary)
    if on_path and _qemu_major(on_path) >= QEMU_MIN_MAJOR:
        return on_path
    return None


def ensure_qemu(binary: str) -> str:
    found = find_qemu(binary)
    if found:
        return found
    if not (shutil.which("apt-get") and shutil.which("dpkg-deb")):
        raise UserError(f"{binary} (qemu-user >= {QEMU_MIN_MAJOR}) not found, and apt-get/dpkg-deb "
                        f"are missing to fetch it; install qemu-user {QEMU_MIN_MAJOR} or newer "
                        f"(Debian trixie: apt-get install qemu-user) or set EDGEKIT_QEMU_DIR")
    arch = host_debian_arch()
    final = cache_dir() / "qemu" / f"{QEMU_SUITE}-{arch}"
    with _locked("qemu"):
        if not (final / "usr/bin" / binary).is_file():
            log(f"devices: fetching qemu-user from Debian {QEMU_SUITE} (first run only)")
            start = time.perf_counter()
            with _building(final) as tmp:
                debs = apt_download(QEMU_SUITE, arch, ["qemu-user"], tmp / "debs")
                root = tmp / "root"
                _unpack(debs, root)
                for item in root.iterdir():
                    os.replace(item, tmp / item.name)
                # qemu-user ships every target (~450 MB); keep the ones device profiles use
                for path in (tmp / "usr" / "bin").glob("qemu-*"):
                    if path.name not in KEEP_QEMU:
                        path.unlink()
                shutil.rmtree(tmp / "debs")
                root.rmdir()
            log(f"  qemu-user ready in {time.perf_counter() - start:.0f} s")
    path = final / "usr/bin" / binary
    if not path.is_file():
        raise UserError(f"Debian {QEMU_SUITE}'s qemu-user has no {binary}")
    return str(path)


# --- the device's Python ------------------------------------------------------------------------

def _fix_alternatives(root: Path) -> None:
    """dpkg -x does not run maintainer scripts: make the update-alternatives links that numpy's
    BLAS/LAPACK need (lib/<triplet>/blas/libblas.so.3 -> lib/<triplet>/libblas.so.3)."""
    for lib in root.glob("usr/lib/*/*/lib*.so.3"):
        if lib.parent.name in ("blas", "lapack", "openblas-pthread", "atlas"):
            link = lib.parent.parent / lib.name
            if not link.exists():
                link.symlink_to(os.path.relpath(lib, link.parent))


def ensure_sysroot(profile: dict) -> Path:
    q = profile["qemu"]
    final = cache_dir() / "sysroot" / f"{q['debian_suite']}-{q['debian_arch']}-{_digest(q.get('debian_packages'))}"
    python = final / "usr" / "bin" / q["python"]
    with _locked("sysroot"):
        if not python.is_file():
            log(f"devices: assembling a {q['debian_arch']} {q['python']} from Debian "
                f"{q['debian_suite']} (first run only)")
            start = time.perf_counter()
            packages = list(dict.fromkeys(PYTHON_PACKAGES + list(q.get("debian_packages") or [])))
            with _building(final) as tmp:
                debs = apt_download(q["debian_suite"], q["debian_arch"], packages, tmp / ".debs")
                _unpack(debs, tmp)
                shutil.rmtree(tmp / ".debs")
                _fix_alternatives(tmp)
                _precompile(tmp / "usr" / "lib")
            log(f"  sysroot ready in {time.perf_counter() - start:.0f} s")
    return final


def _digest(items) -> str:
    return hashlib.sha256(repr(items or []).encode()).hexdigest()[:10]


def _precompile(folder: Path) -> None:
    """Byte-compile with the host's Python when it is the same minor version (same .pyc magic):
    compiling the standard library under emulation on every first import would cost minutes."""
    if not folder.is_dir():
        return
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0", str(folder)],
                   capture_output=True)


def ensure_site(profile: dict) -> Path:
    """The platform's wheels from the configured package index, installed with pip --target."""
    q = profile["qemu"]
    if not q["wheels"]:
        return Path()
    return install_wheels(q["debian_arch"], q["wheels"], q["python_platform_tags"], q["python_version"],
                          q.get("wheel_deps", True))


def install_wheels(label: str, wheels: list[str], platform_tags: list[str], python_version: str,
                   deps: bool = True) -> Path:
    """`wheels` (requirements) for another platform, from the machine's configured package index,
    installed with `pip install --target --platform ...` into site/<label>-<hash>/ (cached, built
    atomically). Used by `devices check` (the emulated device's site) and `fleet deploy` (what the
    hosts run)."""
    key = _digest([wheels, platform_tags, python_version, deps])
    final = cache_dir() / "site" / f"{label}-{key}"
    with _locked("site"):
        if not (final / ".complete").is_file():
            log(f"devices: downloading {label} wheels: {', '.join(wheels)} (first run only)")
            start = time.perf_counter()
            with _building(final) as tmp:
                argv = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        "--no-compile", "--target", str(tmp), "--python-version", python_version,
                        "--only-binary=:all:", "--implementation", "cp"]
                for tag in platform_tags:
                    argv += ["--platform", tag]
                if not deps:
                    argv.append("--no-deps")
                _run(argv + list(wheels), f"pip install of {label} wheels",
                     hint=" (the first run needs access to the package index)")
                same_minor = f"{sys.version_info[0]}.{sys.version_info[1]}" == python_version
                if same_minor:
                    _precompile(tmp)
                (tmp / ".complete").write_text(" ".join(wheels) + "\n")
            log(f"  wheels ready in {time.perf_counter() - start:.0f} s")
    return final


class Emulator:
    """A device Python under user-mode QEMU: `argv(["-c", "..."])` -> command line to run."""

    def __init__(self, profile: dict, *, fetch: bool = True):
        q = profile.get("qemu")
        if not q:
            raise UserError(f"device {profile['name']!r} cannot be emulated (no qemu settings): "
                            f"{profile.get('notes', 'check it on a real device with edgekit deploy')}")
        self.profile = profile
        self.cpu = q["cpu"]
        self.qemu = ensure_qemu(q["binary"]) if fetch else (find_qemu(q["binary"]) or q["binary"])
        self.sysroot = ensure_sysroot(profile)
        self.site = ensure_site(profile)
        self.python = self.sysroot / "usr" / "bin" / q["python"]

    def argv(self, args: list[str]) -> list[str]:
        return [self.qemu, "-L", str(self.sysroot), "-cpu", self.cpu, str(self.python), *args]

    def env(self, pythonpath: list[str | os.PathLike]) -> dict:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PYTHON", "LD_", "QEMU_", "VIRTUAL_ENV"))}
        paths = [str(p) for p in pythonpath] + ([str(self.site)] if str(self.site) != "." else [])
        env.update(PYTHONPATH=os.pathsep.join(paths), PYTHONNOUSERSITE="1", PYTHONHASHSEED="0",
                   TF_CPP_MIN_LOG_LEVEL="2")
        return env
