#!/usr/bin/python3
"""The device side of edgekit's fleet role: what one device does with runtimes and releases.

Runs under the device's own Python (3.8 or newer) with the standard library only: Ansible ships
this file there; nothing of edgekit is imported. Layout under ROOT (default ~/edgekit, or the
inventory's `edgekit_root`):

    bin/edgekit-runtime                       the device's Python with the two folders below on its path
    runtime/site-KEY/                         numpy and the backends for this platform (built on the controller)
    runtime/edgekit-KEY/                      edgekit's runtime, unpacked from its wheel
    bundles/NAME/releases/HASH/               one release of bundle NAME (HASH: the bundle's content hash)
    bundles/NAME/releases/HASH.json           its golden check and latency on this device
    bundles/NAME/releases/HASH.golden.npz     the golden file it was checked against
    bundles/NAME/current -> releases/HASH     what is served; replaced atomically (a new link renamed over it)
    bundles/NAME/previous -> releases/HASH    what `rollback` returns to

Every folder is built under a temporary name and renamed into place, so an interrupted run leaves
nothing half-made; a release becomes `current` only after its golden check passed on this device.
"""

import base64
import datetime
import fcntl
import json
import os
import platform
import pwd
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: edgekit_host
short_description: edgekit runtimes and releases on a device (facts, runtime, deploy, rollback)
description:
  - C(facts) reports the device's libc, its runtimes and each bundle's releases.
  - C(runtime) unpacks the runtime the controller built for this platform and writes the launcher.
  - C(deploy) unpacks a release, runs the golden comparison and a short benchmark with the device's
    runtime, and only when the comparison passes points C(current) at it.
  - C(rollback) points C(current) back at the previous release.
options:
  action: {description: what to do, required: true, type: str, choices: [facts, runtime, deploy, rollback]}
  root: {description: "edgekit's folder on the device", type: str, default: "~/edgekit"}
  bundles: {description: "facts: bundle names to report (default: all found)", type: list, elements: str}
  incoming: {description: "facts: also make sure the upload folder ROOT/.incoming exists", type: bool}
  name: {description: "deploy, rollback: the bundle's name", type: str}
  release: {description: "deploy: the release's content hash", type: str}
  archive: {description: "deploy: uploaded .tar.gz with release/ and golden.npz; runtime: the site", type: str}
  payload: {description: "deploy: that .tar.gz itself, base64 (small releases: no separate upload)", type: str}
  device: {description: "deploy: device profile name passed to the runtime", type: str}
  bench_runs: {description: "deploy: benchmark runs after the golden check", type: int, default: 20}
  keep: {description: "older releases (runtimes) kept besides the current and previous one", type: int}
  site_key: {description: "runtime: key of the site folder", type: str}
  edgekit_key: {description: "runtime: key of edgekit's runtime folder", type: str}
  wheel: {description: "runtime: uploaded edgekit wheel", type: str}
  wheel_payload: {description: "runtime: edgekit's wheel itself, base64", type: str}
  python: {description: "runtime: the device's Python", type: str}
"""

LAUNCHER = "bin/edgekit-runtime"
KEYS_LINE = "# edgekit-runtime: "
TIMEOUT_S = 900


class HostError(Exception):
    """A failure with a one-line reason (for the fleet report), and optionally what the bundle looks like."""

    def __init__(self, message, details=None):
        super().__init__(message)
        self.details = details or {}


def _now():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


def _root(params):
    return os.path.abspath(os.path.expanduser(params["root"] or "~/edgekit"))


def _why(exc):
    return getattr(exc, "strerror", None) or str(exc)


def _makedirs(path):
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise HostError(f"cannot create {path}: {_why(exc)}") from None
    if not os.access(path, os.W_OK):
        raise HostError(f"cannot write to {path}: read-only")


def _write_text(path, text, mode=0o644):
    """Write atomically (temporary name, then rename); False when the file already says `text`."""
    try:
        with open(path) as f:
            if f.read() == text:
                return False
    except OSError:
        pass
    _makedirs(os.path.dirname(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return True


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _link_target(link):
    """The release a `current` or `previous` link names (its folder's name), or None."""
    try:
        return os.path.basename(os.readlink(link))
    except OSError:
        return None


def _relink(link, target):
    """Point `link` at `target` atomically: a new link under a temporary name renamed over the old
    one, so that a reader (the server) always finds the old or the new release, never none."""
    tmp = f"{link}.tmp-{os.getpid()}"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def _remove(path):
    if path and os.path.lexists(path):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)


def _extract(archive, dest):
    """Unpack a .tar.gz (the system's tar when there is one: several times faster than tarfile) or a
    wheel (zip) into the empty folder `dest`, refusing members that would land outside it."""
    real = os.path.realpath(dest)

    def inside(name):
        path = os.path.realpath(os.path.join(dest, name))
        if not (path == real or path.startswith(real + os.sep)):
            raise HostError(f"refusing archive member {name!r}")

    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            for name in z.namelist():
                inside(name)
            z.extractall(dest)
        return
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        for m in members:
            inside(m.name)
            if not (m.isfile() or m.isdir()):
                raise HostError(f"refusing archive member {m.name!r} (not a file or folder)")
        if shutil.which("tar") is None:
            tar.extractall(dest, members=members)
            return
    proc = subprocess.run(["tar", "-xzf", archive, "-C", dest, "--no-same-owner"], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise HostError(f"tar -xzf {archive} failed: {proc.stderr.strip().splitlines()[-1:]}")


def _unpack(archive, final, what):
    """`archive` unpacked into the folder `final`, atomically (a temporary folder renamed into place)."""
    parent = os.path.dirname(final)
    _makedirs(parent)
    if not archive or not os.path.isfile(archive):
        raise HostError(f"{what} {os.path.basename(final)} is not on the device and was not uploaded")
    try:
        tmp = tempfile.mkdtemp(prefix="." + os.path.basename(final) + ".", suffix=".partial", dir=parent)
    except OSError as exc:
        raise HostError(f"cannot write to {parent}: {_why(exc)}") from None
    try:
        _extract(archive, tmp)
        os.chmod(tmp, 0o755)
        open(os.path.join(tmp, ".complete"), "w").close()
        _remove(final)
        os.replace(tmp, final)
    except (OSError, tarfile.TarError, zipfile.BadZipFile) as exc:
        raise HostError(f"unpacking the {what} into {parent} failed: {_why(exc)}") from None
    finally:
        _remove(tmp)


def _prune(folder, prefix, keep, protect):
    """Remove the oldest `prefix*` folders of `folder` beyond the newest `keep` (and their .json and
    .golden.npz beside them), never those in `protect`."""
    try:
        entries = [e for e in os.listdir(folder) if e.startswith(prefix) and not e.startswith(".")
                   and e not in protect and os.path.isdir(os.path.join(folder, e))]
    except OSError:
        return []
    entries.sort(key=lambda e: os.path.getmtime(os.path.join(folder, e)), reverse=True)
    for entry in entries[keep:]:
        for path in (entry, entry + ".json", entry + ".golden.npz"):
            _remove(os.path.join(folder, path))
    return entries[keep:]


class _Lock:
    """One deploy or rollback of a bundle at a time on this device."""

    def __init__(self, folder):
        _makedirs(folder)
        self.path = os.path.join(folder, ".lock")

    def __enter__(self):
        try:
            self.handle = open(self.path, "w")
        except OSError as exc:
            raise HostError(f"cannot write to {os.path.dirname(self.path)}: {_why(exc)}") from None
        fcntl.flock(self.handle, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


# ------------------------------------------------------------------------------------------ facts


def bundle_state(root, name):
    folder = os.path.join(root, "bundles", name)
    releases = os.path.join(folder, "releases")
    current = _link_target(os.path.join(folder, "current"))
    try:
        names = sorted((e for e in os.listdir(releases) if os.path.isfile(os.path.join(releases, e, ".complete"))),
                       key=lambda e: os.path.getmtime(os.path.join(releases, e)))
    except OSError:
        names = []
    return {"name": name, "current": current, "previous": _link_target(os.path.join(folder, "previous")),
            "releases": names, "record": _read_json(os.path.join(releases, current + ".json")) if current else None}


def launcher_keys(root):
    """{"site": KEY, "edgekit": KEY} of the runtime the launcher starts, or {}."""
    try:
        with open(os.path.join(root, LAUNCHER)) as f:
            for line in f:
                if line.startswith(KEYS_LINE):
                    return json.loads(line[len(KEYS_LINE):])
    except (OSError, ValueError):
        pass
    return {}


def facts(params, check_mode=False):
    root = _root(params)
    names = params.get("bundles")
    if not names:
        try:
            names = sorted(e for e in os.listdir(os.path.join(root, "bundles")) if not e.startswith("."))
        except OSError:
            names = []
    folder = os.path.join(root, "runtime")
    try:
        runtimes = sorted(e for e in os.listdir(folder) if os.path.isfile(os.path.join(folder, e, ".complete")))
    except OSError:
        runtimes = []
    incoming = os.path.join(root, ".incoming")
    if params.get("incoming") and not check_mode:
        _makedirs(incoming)
    libc, libc_version = platform.libc_ver()
    return {"root": root, "incoming": incoming, "user": pwd.getpwuid(os.getuid()).pw_name,
            "machine": platform.machine(), "libc": libc or None, "libc_version": libc_version or None,
            "python": {"executable": sys.executable, "version": platform.python_version(),
                       "major_minor": f"{sys.version_info[0]}.{sys.version_info[1]}"},
            # what sd_booted() checks: systemd is the service manager of this boot
            "systemd": os.path.isdir("/run/systemd/system"),
            "launcher": os.path.join(root, LAUNCHER), "runtime": launcher_keys(root), "runtimes": runtimes,
            "bundles": {name: bundle_state(root, name) for name in names}}


# ---------------------------------------------------------------------------------------- runtime


def runtime(params, check_mode):
    root = _root(params)
    folder = os.path.join(root, "runtime")
    site = os.path.join(folder, "site-" + params["site_key"])
    edgekit = os.path.join(folder, "edgekit-" + params["edgekit_key"])
    keys = {"site": params["site_key"], "edgekit": params["edgekit_key"], "python": params["python"]}
    launcher = os.path.join(root, LAUNCHER)
    text = "\n".join([
        "#!/bin/sh",
        "# Written by edgekit's fleet role: the device's Python with edgekit's runtime and its wheels.",
        KEYS_LINE + json.dumps(keys, sort_keys=True),
        f"PYTHONPATH='{edgekit}:{site}' PYTHONNOUSERSITE=1 exec '{params['python']}' -m edgekit.runtime \"$@\"",
        ""])
    missing = [p for p in (site, edgekit) if not os.path.isfile(os.path.join(p, ".complete"))]
    if check_mode:
        return {"changed": bool(missing) or launcher_keys(root) != keys, "edgekit": {"runtime": keys}}
    if site in missing:
        _unpack(params.get("archive"), site, "runtime")
    if edgekit in missing:
        wheel = params.get("wheel")
        if params.get("wheel_payload"):
            wheel = _write_payload(params["wheel_payload"], folder, "edgekit-wheel")
        try:
            _unpack(wheel, edgekit, "edgekit wheel")
        finally:
            if params.get("wheel_payload"):
                _remove(wheel)
    changed = _write_text(launcher, text, 0o755) or bool(missing)
    for upload in (params.get("archive"), params.get("wheel")):
        _remove(upload)
    protect = {os.path.basename(site), os.path.basename(edgekit)}
    keep = params["keep"] if params["keep"] is not None else 1
    removed = _prune(folder, "site-", keep, protect) + _prune(folder, "edgekit-", keep, protect)
    return {"changed": changed, "edgekit": {"runtime": keys, "launcher": launcher, "removed": removed}}


# ----------------------------------------------------------------------------------------- deploy


# golden comparison, then (when it passed) the benchmark, in one process of the device's runtime
CHECKS = ("import sys\nfrom edgekit.runtime.cli import main\nargs = sys.argv[1:]\ncut = args.index('--then')\n"
          "rc = main(args[:cut])\nsys.exit(rc or main(args[cut + 1:]))\n")


def _runtime_command(root):
    """argv prefix and environment that run the device's runtime Python (what the launcher does)."""
    keys = launcher_keys(root)
    folder = os.path.join(root, "runtime")
    paths = [os.path.join(folder, f"edgekit-{keys.get('edgekit')}"), os.path.join(folder, f"site-{keys.get('site')}")]
    if not keys.get("python") or not all(os.path.isfile(os.path.join(p, ".complete")) for p in paths):
        raise HostError(f"edgekit's runtime is not installed on this device (no {os.path.join(root, LAUNCHER)})")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(PYTHONPATH=os.pathsep.join(paths), PYTHONNOUSERSITE="1")
    return [keys["python"]], env


def _run_checks(root, golden_args, bench_args):
    """[golden report, bench report or None] from one run of the runtime's CLI."""
    prefix, env = _runtime_command(root)
    argv = prefix + ["-c", CHECKS] + golden_args + ["--then"] + bench_args
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_S, cwd=root, env=env)
    except subprocess.TimeoutExpired:
        raise HostError(f"the golden comparison timed out after {TIMEOUT_S} s") from None
    reports = []
    for line in proc.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                reports.append(json.loads(line))
            except ValueError:
                continue
    golden = next((r for r in reports if "passed" in r), None)
    if golden is None:
        lines = [line.strip() for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
        raise HostError(f"the golden comparison failed (exit {proc.returncode}): {lines[-1] if lines else 'no output'}")
    return golden, next((r for r in reports if "latency_ms" in r), None)


def _golden_reason(result):
    reasons = result.get("reasons") or []
    extra = f" (+{len(reasons) - 1} more)" if len(reasons) > 1 else ""
    return f"golden check failed: {reasons[0] if reasons else 'outputs differ'}{extra}"


def _unpack_release(archive, releases, release):
    """The uploaded payload (release/ and golden.npz) into releases/HASH and releases/HASH.golden.npz."""
    target = os.path.join(releases, release)
    golden = target + ".golden.npz"
    if not archive or not os.path.isfile(archive):
        raise HostError(f"release {release} was not uploaded")
    staging = os.path.join(releases, "." + release + ".payload")
    _unpack(archive, staging, "release")
    try:
        if not os.path.isfile(os.path.join(target, ".complete")):
            os.replace(os.path.join(staging, "release"), os.path.join(staging, "release.partial"))
            open(os.path.join(staging, "release.partial", ".complete"), "w").close()
            _remove(target)
            os.replace(os.path.join(staging, "release.partial"), target)
        os.replace(os.path.join(staging, "golden.npz"), golden)
    except OSError as exc:
        raise HostError(f"installing release {release} into {releases} failed: {_why(exc)}") from None
    finally:
        _remove(staging)
        _remove(archive)
    return target, golden


def _write_payload(payload, folder, name):
    """A base64 task argument as a temporary file in `folder`."""
    _makedirs(folder)
    try:
        fd, path = tempfile.mkstemp(prefix="." + name + ".", suffix=".upload", dir=folder)
        with os.fdopen(fd, "wb") as f:
            f.write(base64.b64decode(payload))
    except OSError as exc:
        raise HostError(f"cannot write to {folder}: {_why(exc)}") from None
    return path


def deploy(params, check_mode):
    root = _root(params)
    name, release = params["name"], params["release"]
    folder = os.path.join(root, "bundles", name)
    releases = os.path.join(folder, "releases")
    current_link = os.path.join(folder, "current")
    current = _link_target(current_link)
    if current == release:
        return {"changed": False, "edgekit": dict(bundle_state(root, name), changed=False)}
    if check_mode:
        return {"changed": True, "edgekit": {"name": name, "release": release, "current": current}}
    with _Lock(folder):
        _makedirs(releases)
        archive = params.get("archive")
        if params.get("payload"):
            archive = _write_payload(params["payload"], releases, release)
        target, golden = _unpack_release(archive, releases, release)
        device = ["--device", params["device"]] if params.get("device") else []
        result, bench = _run_checks(root, ["golden", target, golden, "--json"] + device,
                                    ["bench", target, "--runs", str(params["bench_runs"]), "--warmup", "2",
                                     "--json"] + device)
        record = {"name": name, "release": release, "checked": _now(), "passed": bool(result["passed"]),
                  "golden": {k: result.get(k) for k in ("max_abs_error", "psnr_db", "agreement", "samples",
                                                        "reasons", "tolerance", "accuracy_delta")},
                  "backend": result.get("backend"), "machine": (result.get("machine") or {}).get("machine"),
                  "runtime": launcher_keys(root)}
        if record["passed"]:
            if bench is None:
                raise HostError("the benchmark after the golden comparison printed no result")
            record["latency_ms"] = bench.get("latency_ms")
            record["peak_rss_mb"] = bench.get("peak_rss_mb")
        _write_text(os.path.join(releases, release + ".json"), json.dumps(record, indent=1) + "\n")
        if not record["passed"]:
            raise HostError(_golden_reason(result), {"name": name, "release": release, "current": current,
                                                     "record": record})
        # `previous` first: an interruption between the two renames leaves both on the old release
        if current:
            _relink(os.path.join(folder, "previous"), os.path.join("releases", current))
        _relink(current_link, os.path.join("releases", release))
        _prune(releases, "", params["keep"] if params["keep"] is not None else 3, {release, current})
    return {"changed": True, "edgekit": dict(bundle_state(root, name), changed=True, replaced=current)}


def rollback(params, check_mode):
    root = _root(params)
    name = params["name"]
    folder = os.path.join(root, "bundles", name)
    current = _link_target(os.path.join(folder, "current"))
    previous = _link_target(os.path.join(folder, "previous"))
    if not previous or not os.path.isfile(os.path.join(folder, "releases", previous, ".complete")):
        raise HostError(f"no previous release of {name} to roll back to" + ("" if current else " (none deployed)"))
    if check_mode:
        return {"changed": True, "edgekit": {"name": name, "current": previous, "previous": current}}
    with _Lock(folder):
        _relink(os.path.join(folder, "current"), os.path.join("releases", previous))
        if current:
            _relink(os.path.join(folder, "previous"), os.path.join("releases", current))
    return {"changed": True, "edgekit": dict(bundle_state(root, name), changed=True, replaced=current)}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            action=dict(type="str", required=True, choices=["facts", "runtime", "deploy", "rollback"]),
            root=dict(type="str", default="~/edgekit"),
            bundles=dict(type="list", elements="str", default=[]), incoming=dict(type="bool", default=False),
            name=dict(type="str"), release=dict(type="str"), archive=dict(type="str"),
            payload=dict(type="str", no_log=True),
            device=dict(type="str"), bench_runs=dict(type="int", default=20), keep=dict(type="int"),
            site_key=dict(type="str"), edgekit_key=dict(type="str"), wheel=dict(type="str"),
            wheel_payload=dict(type="str", no_log=True),
            python=dict(type="str"),
        ),
        required_if=[("action", "deploy", ("name", "release")), ("action", "rollback", ("name",)),
                     ("action", "runtime", ("site_key", "edgekit_key", "python"))],
        supports_check_mode=True,
    )
    action = module.params["action"]
    try:
        if action == "facts":
            module.exit_json(changed=False, ansible_facts={"edgekit": facts(module.params, module.check_mode)})
        handler = {"runtime": runtime, "deploy": deploy, "rollback": rollback}[action]
        module.exit_json(**handler(module.params, module.check_mode))
    except HostError as exc:
        details = dict(exc.details or {"name": module.params.get("name")}, error=str(exc))
        module.fail_json(msg=str(exc), edgekit=details)
    except OSError as exc:
        message = f"{getattr(exc, 'filename', None) or action}: {_why(exc)}"
        module.fail_json(msg=message, edgekit={"name": module.params.get("name"), "error": message})


if __name__ == "__main__":
    main()
