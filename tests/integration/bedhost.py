"""Throwaway bed containers driven by the real roles (ansible-playbook) or alumet-setup as the README installs it.

Shared by test_faults.py, test_security.py, test_host_accounts_kept.py and test_printed_fixes.py: one container
per test, host network, not privileged, reached over SSH as a lab host is (tests/bed/sshd.py: sshd on
127.0.0.1:PORT, host keys checked, pipelining on), the platform's apt cache mounted as an overlay. SSH, not
podman's connection: that one has no pipelining and runs several `podman exec` per task, which made a
47-task run take 32 s instead of 14.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import sshd  # tests/bed, put on sys.path by tests/conftest.py
import yaml
from installed_tool import InstalledTool

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


class Container:
    def __init__(self, host: sshd.SshHost, key: Path, known_hosts: Path, control: Path) -> None:
        self.name, self.platform = host.container, host.platform
        self.host, self.key, self.known_hosts, self.control = host, key, known_hosts, control

    def sh(self, script: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a shell script inside the container (podman exec: the test's own look, not the tool's)."""
        return subprocess.run(["podman", "exec", self.name, "sh", "-c", script], capture_output=True, text=True,
                              check=check, timeout=300)

    def host_vars(self) -> dict[str, Any]:
        """How Ansible and alumet-setup reach the container: root over SSH with the bed key."""
        return {**sshd.connection(self.host.port, self.key, self.known_hosts),
                "ansible_python_interpreter": "/usr/bin/python3"}

    def inventory(self, directory: Path, **host_vars: Any) -> Path:
        path = directory / f"{self.name}.yml"
        path.write_text(json.dumps({"all": {"hosts": {self.name: {**self.host_vars(), **host_vars}}}}, indent=1))
        return path

    def play(self, directory: Path, roles: Sequence[str | dict[str, Any]], extravars: dict[str, Any] | None = None,
             tasks_from: str = "main", background: bool = False) -> Any:
        """Apply roles with ansible-playbook; returns the CompletedProcess (or the Popen when background)."""
        playbook = directory / f"play-{uuid.uuid4().hex[:8]}.yml"
        steps = [{"name": f"Apply {r}", "ansible.builtin.import_role": {"name": r, "tasks_from": tasks_from}}
                 for r in roles]
        playbook.write_text(yaml.safe_dump([{"name": "Test", "hosts": "all", "tasks": steps}]))
        varsfile = directory / f"vars-{playbook.stem}.yml"
        varsfile.write_text(yaml.safe_dump({"ansible_become": False, **(extravars or {})}))
        cmd = [str(BIN / "ansible-playbook"), "-i", str(self.inventory(directory)), "-e", f"@{varsfile}",
               str(playbook)]
        env = {**os.environ, "ANSIBLE_ROLES_PATH": str(ROOT / "roles"), "ANSIBLE_NOCOLOR": "1",
               "ANSIBLE_STDOUT_CALLBACK": "default", "ANSIBLE_PIPELINING": "True",
               "ANSIBLE_SSH_CONTROL_PATH_DIR": str(self.control)}
        if background:  # unbuffered, in a session of its own: a test can follow its tasks and kill it whole
            return subprocess.Popen(cmd, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, start_new_session=True)
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)

    def cli(self, tool: InstalledTool, directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
        """The installed alumet-setup against this container (through an inventory)."""
        return tool.cli(*args[:1], "-i", str(self.inventory(directory)), *args[1:], state=directory / "state")

    def checksums(self, roots: str = "/etc /opt /usr/local") -> str:
        """Entries with mode and owner, and the sha256 of every file: equal means nothing changed."""
        return self.sh(f"find {roots} -xdev -printf '%p %M %u:%g %l\\n' | LC_ALL=C sort; "
                       f"find {roots} -xdev -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum").stdout


@cache
def _bed_key() -> Path:
    """The session's key for the bed containers (root's authorized_keys there), removed when the session ends."""
    directory = Path(tempfile.mkdtemp(prefix="as-bedkey-"))
    atexit.register(shutil.rmtree, directory, True)
    return sshd.make_key(directory / "id")


@contextmanager
def container(platform: str = "debian13", podman_args: Sequence[str] = ()) -> Iterator[Container]:
    key = _bed_key()
    [host] = sshd.start([("fault", platform)], Path(f"{key}.pub"), label="alumet-setup-fault",
                        podman_args=podman_args, shared_apt_cache=True)
    # A short directory of its own for ssh's master connections (a socket path has at most 107 bytes).
    control = Path(tempfile.mkdtemp(prefix="as-cp-"))
    try:
        yield Container(host, key, sshd.write_known_hosts(control / "known_hosts", [host]), control)
    finally:
        sshd.remove([host])
        shutil.rmtree(control, ignore_errors=True)


def podman_collection(directory: Path) -> Path:
    """A collections path holding containers.podman alone: the connection these containers are reached by. The
    tool depends on ansible-core, which lacks it (users reach hosts over SSH); the checkout's venv has it (the
    `ansible` test extra). Nothing else of that venv comes with it."""
    spec = importlib.util.find_spec("ansible_collections.containers.podman")
    assert spec is not None and spec.submodule_search_locations, "containers.podman: pip install -e '.[test]'"
    root = directory / "collections"
    link = root / "ansible_collections" / "containers" / "podman"
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(next(iter(spec.submodule_search_locations)))
    return root


def bed_vars(bed: dict[str, str]) -> dict[str, Any]:
    """The roles' download and build locations pointed at the bed services (as molecule/config.yml)."""
    return {"rustup_update_root": bed["rustup_update_root"], "rustup_dist_server": bed["mirror_url"],
            "rustup_toolchain": os.environ["BED_RUST_TOOLCHAIN"], "alumet_agent_git_url": bed["git_url"],
            "alumet_agent_poll_interval": 1}


def bed_settings(bed: dict[str, str]) -> list[str]:
    """bed_vars as install's --set options."""
    return [arg for key, value in bed_vars(bed).items() for arg in ("--set", f"{key}={value}")]


def install_summary(stdout: str) -> dict[str, list[str]]:
    """install's per-host table: host -> [ok, changed, failed, unreachable, skipped]."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["host", "ok"])
    rows = {}
    for line in lines[start + 1:]:
        cells = line.split()
        if len(cells) != 6:
            break
        rows[cells[0]] = cells[1:]
    return rows


def quoted(text: str) -> str:
    return shlex.quote(text)
