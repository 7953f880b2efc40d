"""A run leaves nothing on a host (issues 22 item 4, 23 item 14): `install --check` on a fresh host, doctor,
and an install stopped by Ctrl-C or SIGTERM during its play leave the host's file listing as it was, and
the controller keeps no private /tmp/as-* directory. One sshd container of the test bed (tests/bed/sshd.py)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sshd  # tests/bed, put on sys.path by tests/conftest.py
from installed_tool import InstalledTool

# The whole tree but the kernel's (/proc, /sys, /dev), the apt archive bind-mounted from this machine (shared
# with other tests) and the OS's records of ssh logins (pam_motd, pam_wtmpdb, lastlog: made by sshd for any
# login, not by a run). /tmp and /run are listed: remote temporary files there must go too.
OS_LOGIN_RECORDS = ("/run/motd.dynamic", "/var/log/wtmp.db", "/var/log/wtmp", "/var/log/btmp", "/var/log/lastlog")
LISTING = (r"find / \( -path /proc -o -path /sys -o -path /dev -o -path /var/cache/apt/archives "
           + "".join(f"-o -path {p} " for p in OS_LOGIN_RECORDS)
           + r"\) -prune -o -printf '%p %M %u:%g %l\n' | sort")

pytestmark = [pytest.mark.containers]


class Host:
    def __init__(self, host: sshd.SshHost, inventory: Path, work: Path, settings: list[str],
                 tool: InstalledTool) -> None:
        self.host, self.inventory, self.work, self.settings, self.tool = host, inventory, work, settings, tool
        # The OS's own records of an ssh login (pam_motd's /run/motd.dynamic, the login logs) come with the
        # first login: made before any listing is taken, so that the listings compare what the runs leave.
        subprocess.run(["ssh", "-p", str(host.port), "-i", str(work / "id"), "-o", "BatchMode=yes",
                        "-o", f"UserKnownHostsFile={work / 'known_hosts'}", "-o", "IdentitiesOnly=yes",
                        "root@127.0.0.1", "true"], check=True, capture_output=True, timeout=60,
                       stdin=subprocess.DEVNULL)  # ssh would make the session's stdin non-blocking

    def sh(self, script: str) -> str:
        return subprocess.run(["podman", "exec", self.host.container, "sh", "-c", script], capture_output=True,
                              text=True, check=True, timeout=120).stdout

    def listing(self) -> list[str]:
        return self.sh(LISTING).splitlines()

    def start(self, *args: str, state: str, settings: bool = False) -> subprocess.Popen[str]:
        """The installed tool (the wheel, run from outside the checkout), as a user starts it."""
        env = self.tool.env(XDG_STATE_HOME=str(self.work / state), PYTHONUNBUFFERED="1")
        return subprocess.Popen([str(self.tool.program), *args, "-i", str(self.inventory), "--host", "deb13",
                                 *(self.settings if settings else [])], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=env, cwd=self.tool.workdir)

    def private_dirs(self, state: str) -> list[Path]:
        """The run's private /tmp/as-* directories (where its artifacts say it had them)."""
        return [Path(json.loads(p.read_text())["env"]["ANSIBLE_LOCAL_TEMP"]).parent
                for p in (self.work / state / "alumet-setup" / "runs").glob("*/command")]


@pytest.fixture(scope="module")
def host(bed: dict[str, str], tool: InstalledTool, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    work = tmp_path_factory.mktemp("no-trace")
    key = sshd.make_key(work / "id")
    hosts = sshd.start([("deb13", "debian13")], Path(f"{key}.pub"))
    try:
        known_hosts = sshd.write_known_hosts(work / "known_hosts", hosts)
        inventory = sshd.write_inventory(work / "inventory.yml", sshd.inventory(hosts, key, known_hosts))
        settings = [f"rustup_dist_server={bed['mirror_url']}", f"rustup_update_root={bed['rustup_update_root']}",
                    "rustup_toolchain=1.95", f"alumet_agent_git_url={bed['git_url']}"]
        yield Host(hosts[0], inventory, work, [arg for s in settings for arg in ("--set", s)], tool)
    finally:
        sshd.remove(hosts)


def _diff(before: list[str], after: list[str]) -> list[str]:
    return sorted({f"- {x}" for x in set(before) - set(after)} | {f"+ {x}" for x in set(after) - set(before)})


def test_check_mode_and_doctor_leave_the_host_as_it_was(host: Host) -> None:
    before = host.listing()
    proc = host.start("install", "--check", state="check", settings=True)
    out, _ = proc.communicate(timeout=600)
    assert "Check mode: nothing was changed." in out, out[-4000:]
    diff = _diff(before, host.listing())
    assert diff == [], (diff, out[-3000:])
    assert host.private_dirs("check") and not any(p.exists() for p in host.private_dirs("check"))

    doctor = host.start("doctor", state="doctor")
    out, _ = doctor.communicate(timeout=300)
    assert doctor.returncode in (0, 1), out
    diff = _diff(before, host.listing())
    assert diff == [], diff


# SIGTERM only: both signals' handling is test_runner_tmp.py's (locally); this one proves it over ssh.
@pytest.mark.parametrize("signum", [signal.SIGTERM])
def test_an_interrupted_install_leaves_the_host_as_it_was(host: Host, signum: int) -> None:
    # getconf (the build plan's first command on the host) takes a minute: the play is stopped while a module
    # of it runs there.
    host.sh("printf '#!/bin/sh\\nsleep 60\\nexec /usr/bin/getconf \"$@\"\\n' > /usr/local/bin/getconf && "
            "chmod 755 /usr/local/bin/getconf")
    try:
        before = host.listing()
        state = f"interrupt-{signum}"
        proc = host.start("install", "--only", "sysctl", "--full", state=state)
        try:
            seen = ""
            deadline = time.monotonic() + 120
            while "ok: Gather" not in seen:  # "Gather facts" (or an older release's "Gathering Facts")
                line = proc.stdout.readline() if proc.stdout else ""
                assert line and time.monotonic() < deadline, seen
                seen += line
            while "sleep 60" not in host.sh("ps -eo args"):
                assert time.monotonic() < deadline, seen
                time.sleep(0.3)
            proc.send_signal(signum)
            out, _ = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.communicate(timeout=120)
        assert proc.returncode == 128 + signum, seen + out
        assert "sleep 60" not in host.sh("ps -eo args")
        diff = _diff(before, host.listing())
        assert diff == [], (diff, seen + out)
        assert host.private_dirs(state) and not any(p.exists() for p in host.private_dirs(state))
    finally:
        host.sh("rm -f /usr/local/bin/getconf")
