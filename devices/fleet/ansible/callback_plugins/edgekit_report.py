"""Ansible callback: the fleet report of edgekit's role as JSON, for `edgekit fleet` (or anyone).

Enabled by `edgekit fleet` (or by `ANSIBLE_CALLBACKS_ENABLED=edgekit_report` with this folder in
`ANSIBLE_CALLBACK_PLUGINS`); writes nothing unless `EDGEKIT_FLEET_REPORT` names the file to write.
The terminal output stays Ansible's own (per-host progress). Per host it keeps: the platform facts,
what the role's `edgekit_host` module said per bundle, the first failure (one line), and Ansible's
recap counts (ok, changed, failed, unreachable, skipped).
"""

from __future__ import annotations

import json
import os
import tempfile
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = r"""
name: edgekit_report
type: aggregate
short_description: write edgekit's fleet report (JSON) to $EDGEKIT_FLEET_REPORT
description: Collects the edgekit role's per-host results, failures and recap counts.
requirements: [enable in configuration]
"""

MAX_REASON = 300


def _one_line(text) -> str:
    lines = [line.strip() for line in str(text or "").splitlines() if line.strip()]
    line = lines[0] if lines else ""
    return line if len(line) <= MAX_REASON else line[:MAX_REASON - 3] + "..."


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "edgekit_report"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.path = os.environ.get("EDGEKIT_FLEET_REPORT")
        self.hosts: dict[str, dict] = {}
        self.task_started = time.monotonic()

    def v2_playbook_on_task_start(self, task, is_conditional) -> None:
        self.task_started = time.monotonic()

    def _timed(self, result) -> dict:
        """The host's entry, with the seconds from the task's start to this result added up per task."""
        host = self._host(result)
        if not result._result.get("skipped"):
            seconds = host.setdefault("task_seconds", {})
            name = result._task.get_name()
            seconds[name] = round(seconds.get(name, 0) + time.monotonic() - self.task_started, 2)
        return host

    def _host(self, result) -> dict:
        name = result._host.get_name()
        return self.hosts.setdefault(name, {"facts": {}, "bundles": {}, "runtime": None, "failures": [],
                                            "unreachable": None})

    def _collect(self, host: dict, data: dict) -> None:
        facts = data.get("ansible_facts") or {}
        if "edgekit" in facts:
            host["facts"].update({k: v for k, v in facts["edgekit"].items() if k != "bundles"})
            for name, state in (facts["edgekit"].get("bundles") or {}).items():
                host["bundles"].setdefault(name, {}).update(state=state)
        edgekit = data.get("edgekit")
        if isinstance(edgekit, dict):
            if "runtime" in edgekit and "name" not in edgekit:
                host["runtime"] = edgekit
            elif edgekit.get("name"):
                host["bundles"].setdefault(edgekit["name"], {}).update(result=edgekit)

    def _each(self, result):
        data = result._result
        yield data
        for item in data.get("results") or []:
            if isinstance(item, dict):
                yield item

    def v2_runner_on_ok(self, result) -> None:
        host = self._timed(result)
        for data in self._each(result):
            self._collect(host, data)

    def v2_runner_on_failed(self, result, ignore_errors: bool = False) -> None:
        host = self._timed(result)
        task = result._task.get_name()
        items = [d for d in self._each(result) if d is not result._result]
        for data in self._each(result):
            self._collect(host, data)
        if ignore_errors:
            return
        failed_items = [d for d in items if d.get("failed")]
        for data in failed_items or [result._result]:
            reason = _one_line(data.get("msg") or data.get("stderr") or data.get("exception") or "failed")
            name = (data.get("edgekit") or {}).get("name")
            host["failures"].append({"task": task, "bundle": name, "reason": reason})
            if name:
                host["bundles"].setdefault(name, {})["error"] = reason

    def v2_runner_on_unreachable(self, result) -> None:
        self._host(result)["unreachable"] = _one_line(result._result.get("msg") or "unreachable")

    def v2_playbook_on_stats(self, stats) -> None:
        if not self.path:
            return
        for name in stats.processed:
            self.hosts.setdefault(name, {"facts": {}, "bundles": {}, "runtime": None, "failures": [],
                                         "unreachable": None})["stats"] = stats.summarize(name)
        folder = os.path.dirname(os.path.abspath(self.path))
        fd, tmp = tempfile.mkstemp(prefix=".edgekit-report.", dir=folder)
        with os.fdopen(fd, "w") as f:
            json.dump({"hosts": self.hosts}, f, indent=1, default=str)
        os.replace(tmp, self.path)
