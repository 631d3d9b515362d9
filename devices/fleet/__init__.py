"""`edgekit fleet deploy|rollback|status`: bundles on many devices through Ansible.

edgekit ships an Ansible role and three playbooks (`ansible/`, package data; readable and usable
with plain `ansible-playbook`: docs/fleet.md). `command.py` runs them with the user's inventory and
turns the role's per-host results (collected by `ansible/callback_plugins/edgekit_report.py`) into the
fleet report; `prepare.py` is what the role runs on the controller (releases, golden files, the
runtime per device platform); `ansible/roles/edgekit/library/edgekit_host.py` is what it runs on each
device (standard library only).
"""

from __future__ import annotations

from pathlib import Path

ANSIBLE_DIR = Path(__file__).resolve().parent / "ansible"
PLAYBOOKS = {action: ANSIBLE_DIR / f"{action}.yml" for action in ("deploy", "rollback", "status")}
CALLBACK_DIR = ANSIBLE_DIR / "callback_plugins"
