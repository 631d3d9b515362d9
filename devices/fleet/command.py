"""`edgekit fleet deploy INVENTORY BUNDLE... | rollback INVENTORY NAME | status INVENTORY`.

Runs edgekit's playbooks with `ansible-playbook` (ansible-core, the `fleet` extra) on the user's
inventory, streams Ansible's per-host progress to stderr, and prints the fleet report (a table; JSON
with --json). Exit 0 when every host did what was asked, 1 when some host failed or was unreachable
(the others still moved), 2 for a user mistake (one line, before any host is touched).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edgekit.core import UserError, atomic_write_json, log
from edgekit.devices.fleet import CALLBACK_DIR, PLAYBOOKS, prepare, report

INSTALL_HINT = "install the fleet extra: pip install 'keras-edgekit[fleet]'"
ERROR_LINE = re.compile(r"^\s*(\[ERROR\]|ERROR!)")


def find_tool(name: str) -> str:
    """An Ansible command: beside this Python first (the same environment), then on PATH."""
    here = Path(sys.executable).parent / name
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    found = shutil.which(name)
    if not found:
        if sys.version_info < (3, 11):
            raise UserError(f"{name} not found: edgekit fleet needs Python 3.11 or newer on the controller "
                            "(ansible-core 2.19.14, the fleet extra's pin)")
        raise UserError(f"{name} not found: {INSTALL_HINT}")
    return found


def _ansible_env(report_path: Path | None = None) -> dict:
    env = dict(os.environ)
    env["ANSIBLE_INVENTORY_UNPARSED_FAILED"] = "True"   # a broken inventory is an error, not 0 hosts
    env.setdefault("ANSIBLE_PIPELINING", "True")        # one ssh round trip per task, not three
    env.setdefault("ANSIBLE_RETRY_FILES_ENABLED", "False")
    env["PYTHONUNBUFFERED"] = "1"
    if report_path is not None:
        env["EDGEKIT_FLEET_REPORT"] = str(report_path)
        env["ANSIBLE_CALLBACK_PLUGINS"] = os.pathsep.join(
            p for p in (str(CALLBACK_DIR), os.environ.get("ANSIBLE_CALLBACK_PLUGINS")) if p)
        enabled = [c for c in os.environ.get("ANSIBLE_CALLBACKS_ENABLED", "").split(",") if c.strip()]
        env["ANSIBLE_CALLBACKS_ENABLED"] = ",".join(enabled + ["edgekit_report"])
    return env


def _error_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if ERROR_LINE.match(line)]
    line = (errors or lines or ["no output"])[-1]
    return re.sub(r"^(\[ERROR\]|ERROR!):?\s*", "", line)


def check_inventory(inventory: str) -> None:
    """An inventory is a file, a folder, or Ansible's inline host list ("host1,host2,")."""
    if "," not in inventory and not Path(inventory).exists():
        raise UserError(f"inventory not found: {inventory}")


def list_hosts(inventory: str, limit: str | None) -> list[str]:
    """The inventory's hosts (after --limit), read by ansible-inventory: a broken inventory, or one
    where nothing matches, is a user mistake."""
    check_inventory(inventory)
    argv = [find_tool("ansible-inventory"), "-i", inventory, "--list"] + (["--limit", limit] if limit else [])
    proc = subprocess.run(argv, capture_output=True, text=True, env=_ansible_env(), stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise UserError(f"cannot read inventory {inventory}: {_error_line(proc.stderr + proc.stdout)}")
    try:
        data = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise UserError(f"ansible-inventory printed no JSON for {inventory}") from None
    hosts, seen_groups = [], set()

    def walk(group: str) -> None:
        if group in seen_groups:
            return
        seen_groups.add(group)
        node = data.get(group) or {}
        for host in node.get("hosts") or []:
            if host not in hosts:
                hosts.append(host)
        for child in node.get("children") or []:
            walk(child)

    walk("all")
    if not hosts:
        raise UserError(f"no hosts in {inventory}" + (f" match --limit {limit!r}" if limit else ""))
    return hosts


def run_playbook(action: str, inventory: str, limit: str | None, extra: dict) -> tuple[int, dict | None, str]:
    """Run one of edgekit's playbooks; (exit code, the callback's report or None, last error line)."""
    playbook = PLAYBOOKS[action]
    with tempfile.TemporaryDirectory(prefix="edgekit-fleet-") as tmp:
        vars_file, report_file = Path(tmp) / "vars.json", Path(tmp) / "report.json"
        vars_file.write_text(json.dumps({"edgekit_controller_python": sys.executable, **extra}))
        argv = [find_tool("ansible-playbook"), "-i", inventory, str(playbook), "-e", f"@{vars_file}"]
        if limit:
            argv += ["--limit", limit]
        tail: list[str] = []
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=_ansible_env(report_file), stdin=subprocess.DEVNULL, bufsize=1)
        try:
            for line in proc.stdout:
                line = line.rstrip()
                if line:
                    log(f"  {line}")
                    tail = (tail + [line])[-40:]
            rc = proc.wait()
        except BaseException:
            proc.terminate()
            proc.wait()
            raise
        data = json.loads(report_file.read_text()) if report_file.is_file() else None
    return rc, data, _error_line("\n".join(tail))


def _serial(text: str) -> str:
    if not re.fullmatch(r"[1-9]\d*%?", text or "") or (text.endswith("%") and int(text[:-1]) > 100):
        raise UserError(f"--serial expects a number of hosts (N) or a percentage (1%..100%), got {text!r}")
    return text


def _golden_specs(bundles: list[str], goldens: list[str]) -> list[dict]:
    """--golden FILE (every bundle) or --golden NAME=FILE (the bundle named NAME)."""
    names = [Path(b).name for b in bundles]
    default, named = None, {}
    for item in goldens or []:
        name, sep, path = item.partition("=")
        if sep and name in names:
            named[name] = path
        elif sep and not Path(item).exists():
            raise UserError(f"--golden {item}: no bundle named {name!r} (bundles: {', '.join(names)})")
        else:
            default = item
    for path in [default, *named.values()]:
        if path and not Path(path).is_file():
            raise UserError(f"golden file not found: {path}")
    return [{"path": str(Path(b).resolve()), "golden": str(Path(named.get(n) or default).resolve())
             if named.get(n) or default else None} for b, n in zip(bundles, names)]


def deploy(args) -> dict:
    serial = _serial(args.serial) if args.serial else None
    if args.max_fail_percent is not None and not 0 <= args.max_fail_percent <= 100:
        raise UserError(f"--max-fail-percent expects 0..100, got {args.max_fail_percent:g}")
    check_inventory(args.inventory)
    specs = _golden_specs(args.bundles, args.golden)
    releases = prepare.prepare_bundles(specs)  # bad bundles and golden files fail here, before any host
    hosts = list_hosts(args.inventory, args.limit)
    log(f"fleet deploy: {len(specs)} bundle(s) to {len(hosts)} host(s) of {args.inventory}")
    for r in releases:
        log(f"  {r['name']}: release {r['release']} (golden: {r['golden_source']})")
    extra = {"edgekit_bundles": specs, "edgekit_prepared_releases": releases}
    if serial:
        extra["edgekit_serial"] = serial
    if args.max_fail_percent is not None:
        extra["edgekit_max_fail_percent"] = args.max_fail_percent
    about = [{k: v for k, v in r.items() if k != "inline"} for r in releases]
    return _run("deploy", args, hosts, extra, {"bundles": about})


def rollback(args) -> dict:
    if not args.name or "/" in args.name or args.name.startswith("."):
        raise UserError(f"rollback expects a bundle name (the bundle folder's name), got {args.name!r}")
    hosts = list_hosts(args.inventory, args.limit)
    log(f"fleet rollback: {args.name} on {len(hosts)} host(s) of {args.inventory}")
    return _run("rollback", args, hosts, {"edgekit_bundle": args.name}, {"bundle": args.name})


def status(args) -> dict:
    hosts = list_hosts(args.inventory, args.limit)
    log(f"fleet status: {len(hosts)} host(s) of {args.inventory}")
    return _run("status", args, hosts, {}, {})


def _run(action: str, args, hosts: list[str], extra: dict, about: dict) -> dict:
    start = time.perf_counter()
    rc, data, error = run_playbook(action, args.inventory, args.limit, extra)
    seconds = time.perf_counter() - start
    if data is None:
        raise UserError(f"ansible-playbook stopped before any host ran (exit {rc}): {error}")
    rows = report.host_entries(action, hosts, data, getattr(args, "max_fail_percent", None))
    summary = report.summarize(rows)
    return {"action": action, "inventory": str(args.inventory), "limit": args.limit, **about,
            "hosts": rows, "summary": summary, "passed": summary["ok"] == len(rows),
            "seconds": round(seconds, 2), "seconds_per_host": round(seconds / len(hosts), 2),
            "ansible": {"rc": rc, "changed": summary["changed_tasks"]}}


def run(args) -> int:
    action = {"deploy": deploy, "rollback": rollback, "status": status}[args.fleet_command]
    result = action(args)
    print(report.table(result))
    print(report.summary_line(result))
    if args.json_path:
        atomic_write_json(args.json_path, result)
    return 0 if result["passed"] else 1
