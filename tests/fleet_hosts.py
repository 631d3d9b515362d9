"""Loopback "devices" for the fleet test: one sshd per address 127.0.0.2 .. 127.0.0.N+1, each letting in
one user with its own home (as root: a user per host, made with useradd and removed afterwards; else
the current user with a folder per host as `edgekit_root`). Stopped by pid.

Also a script for trying the role by hand: `python tests/fleet_hosts.py FOLDER [N]` starts the hosts,
writes FOLDER/inventory.ini and waits for Ctrl-C.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

USER_PREFIX = "edgekit-fleet-"


def missing_tools() -> str | None:
    """Why loopback hosts cannot be started here, or None."""
    if not (shutil.which("sshd") or os.path.exists("/usr/sbin/sshd")):
        return "openssh-server not installed (.ci/run installs it)"
    for tool in ("ssh", "ssh-keygen", "scp"):
        if not shutil.which(tool):
            return f"{tool} not found (openssh-client; .ci/run installs it)"
    if not system_python():
        return "no system Python (/usr/bin/python3) that every user can run"
    if os.geteuid() == 0 and not shutil.which("useradd"):
        return "useradd not found (passwd)"
    return None


def system_python() -> str | None:
    """A Python the hosts' users can run (not one under root's home)."""
    for path in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.access(path, os.X_OK):
            return path
    return None


def _remove_stale_users() -> None:
    """Users an earlier run made (edgekit-fleet-PID-N) and could not remove, if that run is gone."""
    import pwd

    for entry in pwd.getpwall():
        parts = entry.pw_name[len(USER_PREFIX):].split("-")
        if entry.pw_name.startswith(USER_PREFIX) and len(parts) == 2 and parts[0].isdigit():
            if not os.path.exists(f"/proc/{parts[0]}"):
                subprocess.run(["userdel", entry.pw_name], capture_output=True)


def _free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


class Hosts:
    """`n` loopback sshd hosts under `base`; `inventory` is the INI inventory file."""

    def __init__(self, base: Path, n: int = 4):
        self.base = Path(base)
        self.base.mkdir(parents=True, exist_ok=True)
        self.as_root = os.geteuid() == 0
        self.hosts: list[dict] = []
        self.procs: list[subprocess.Popen] = []
        self.users: list[str] = []
        sshd = shutil.which("sshd") or "/usr/sbin/sshd"
        if self.as_root:
            _remove_stale_users()
        keys = self.base / "keys"
        keys.mkdir(exist_ok=True)
        self.client_key = keys / "client"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.client_key)], check=True)
        # homes outside pytest's 0700 tmp folder, so that the hosts' users can reach them; sshd reads
        # the authorized keys as the user, so they live there too
        self.homes = Path(tempfile.mkdtemp(prefix="edgekit-fleet-homes-"))
        os.chmod(self.homes, 0o755)
        authorized = self.homes / "authorized_keys"
        authorized.write_text(self.client_key.with_suffix(".pub").read_text())
        os.chmod(authorized, 0o644)
        known = []
        try:
            for i in range(n):
                address = f"127.0.0.{i + 2}"
                name = f"pi{i + 2}"
                home = self.homes / name
                home.mkdir(mode=0o755)
                user = self._user(f"{USER_PREFIX}{os.getpid()}-{i + 2}", home) if self.as_root else getpass.getuser()
                host_key = keys / f"host-{name}"
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
                port = _free_port(address)
                config = self.base / f"sshd-{name}.conf"
                log = self.base / f"sshd-{name}.log"
                config.write_text(
                    f"ListenAddress {address}:{port}\nHostKey {host_key}\nAuthorizedKeysFile {authorized}\n"
                    f"AllowUsers {user}\nPubkeyAuthentication yes\nPasswordAuthentication no\n"
                    "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nMaxStartups 50\nMaxSessions 50\n"
                    f"PidFile {self.base / f'sshd-{name}.pid'}\nSubsystem sftp internal-sftp\n")
                if self.as_root:
                    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege-separation folder
                self.procs.append(subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stdout=subprocess.DEVNULL,
                                                   stderr=open(log, "w")))
                known.append(f"[{address}]:{port} {host_key.with_suffix('.pub').read_text().split(' ', 2)[0]} "
                             f"{host_key.with_suffix('.pub').read_text().split(' ', 2)[1]}")
                root = None if self.as_root else str(home / "edgekit")
                self.hosts.append({"name": name, "address": address, "port": port, "user": user, "home": home,
                                   "root": Path(root) if root else home / "edgekit", "log": log,
                                   "edgekit_root": root})
            self.known_hosts = keys / "known_hosts"
            self.known_hosts.write_text("\n".join(known) + "\n")
            for host, proc in zip(self.hosts, self.procs):
                self._wait(host, proc)
            self.inventory = self.base / "inventory.ini"
            self.inventory.write_text(self.inventory_text())
        except BaseException:
            self.stop()
            raise

    def _user(self, name: str, home: Path) -> str:
        """A login user with `home` (password field '*': no password, yet not a locked account)."""
        exists = subprocess.run(["id", "-u", name], capture_output=True).returncode == 0
        argv = (["usermod", "-d", str(home), "-p", "*", name] if exists else
                ["useradd", "-M", "-d", str(home), "-s", "/bin/sh", "-p", "*", name])
        subprocess.run(argv, check=True, capture_output=True)
        self.users.append(name)
        shutil.chown(home, name, name)
        return name

    @staticmethod
    def _wait(host: dict, proc: subprocess.Popen) -> None:
        deadline = time.time() + 15
        while time.time() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"sshd for {host['name']} exited: {host['log'].read_text()[-500:]}")
            try:
                socket.create_connection((host["address"], host["port"]), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"sshd for {host['name']} did not start listening")

    def inventory_text(self) -> str:
        lines = ["[pis]"]
        for h in self.hosts:
            extra = f" edgekit_root={h['edgekit_root']}" if h["edgekit_root"] else ""
            lines.append(f"{h['name']} ansible_host={h['address']} ansible_port={h['port']} "
                         f"ansible_user={h['user']} ansible_ssh_private_key_file={self.client_key}{extra}")
        lines += ["", "[pis:vars]", f"ansible_python_interpreter={system_python()}",
                  f"ansible_ssh_common_args='-o UserKnownHostsFile={self.known_hosts} -o StrictHostKeyChecking=yes'",
                  ""]
        return "\n".join(lines)

    @property
    def control_dir(self) -> Path:
        """Ansible's ssh connection sockets (ANSIBLE_SSH_CONTROL_PATH_DIR): closed in stop()."""
        return self.base / "cp"

    def stop(self) -> None:
        # close Ansible's persistent ssh connections, so that no session of the users stays open
        for socket_path in sorted(self.control_dir.glob("*")) if self.control_dir.is_dir() else []:
            subprocess.run(["ssh", "-O", "exit", "-o", f"ControlPath={socket_path}", "fleet-host"],
                           capture_output=True, timeout=10)
        for proc in self.procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs = []
        for user in self.users:
            for _ in range(20):  # a closing session may hold the user for a moment
                if subprocess.run(["userdel", user], capture_output=True).returncode in (0, 6):
                    break
                time.sleep(0.25)
        self.users = []
        shutil.rmtree(self.homes, ignore_errors=True)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    folder = Path(sys.argv[1])
    hosts = Hosts(folder, int(sys.argv[2]) if len(sys.argv) > 2 else 4)
    print(hosts.inventory, flush=True)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        hosts.stop()
