"""Every fix doctor prints is honest (issue 25): run the exact commands `doctor --json` gives for a check, as a
user would, then doctor again, and that check is ok, or its finding now names another fix, which is followed
in turn (at most MAX_FOLLOWED in all).

One bed container (Debian 13, reached over SSH as a lab host is: bedhost.py) and the installed tool (`tool`):
- fresh: every distinct remedy of the checks that are not ok, the full install last (the others must work on a
  host that has nothing yet);
- then, one at a time on the installed host, each damage below, and the remedy of each check it breaks.
A remedy is the finding's `fix` commands, or its `install` step when it has none. `alumet-setup ...` commands are
split with shlex and run by the installed tool with the one thing a user adds, the target (`-i INVENTORY`); the
inventory carries the bed's mirror and source settings as a lab's inventory carries its own (bedhost.bed_vars).
Any other command is pasted into the host's root shell (`sh -c`: doctor's commands use pipes and `$(...)`),
`sudo ` left out as the README says for root on a host without sudo.

Not proven here: the toolchain checks' commands (apt-get from the distribution's servers, rustup-init from
static.rust-lang.org: the bed reaches only its own mirror; the full install that replaces them is run); the live
half of kernel.perf_event_paranoid (`sysctl -w`) and of procfs.hidepid (`mount -o remount`), since a container
cannot change the kernel: here doctor judges the persisted state (sysctl.d, fstab); the VM tier (tests/vm)
checks the live values install leaves after a reboot, not these commands; rapl.persistence (udev rule missing)
and rapl.access, not-available without RAPL in containers and VMs alike; kernel.perf_probe, not-available
in these containers (perf_event_open refused even to root: "a seccomp filter ..."), whose fresh-host fix
tests/unit/test_checks_perf_probe.py judges on the fresh-host fixture instead; a stopped alumet.service
(agent.service), which only the VM tier has (no systemd in these containers): tests/vm runs its printed fix there.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from bedhost import Container, bed_vars, container
from installed_tool import InstalledTool, without_sudo

pytestmark = [pytest.mark.containers]

MAX_FOLLOWED = 3  # remedies followed for one damage before the advice counts as going in circles
# Their commands reach the distribution's and the Rust project's servers (module docstring).
NOT_RUN_GROUPS = ("toolchain",)
# Nothing left to fix: ok, or the feature is absent here (no fix can change that).
DONE = ("ok", "not-available")


@dataclass
class Lab:
    c: Container
    tool: InstalledTool
    work: Path
    inventory: Path
    log: list[str] = field(default_factory=list)  # what each remedy was and what came of it (printed at the end)

    def cli(self, *args: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
        return self.tool.cli(*args, state=self.work / "state", timeout=timeout)

    def doctor(self) -> dict[str, dict]:
        run = self.cli("doctor", "-i", str(self.inventory), "--json", timeout=180)
        assert run.returncode in (0, 1), run.stdout[-2000:] + run.stderr
        (host,) = json.loads(run.stdout)["hosts"]
        assert "error" not in host, host
        return {c["id"]: c for c in host["checks"]}

    def run(self, command: str) -> None:
        """One printed command, as the user runs it (module docstring)."""
        argv = shlex.split(command)
        if argv[0] == "alumet-setup":
            proc = self.cli(*argv[1:2], "-i", str(self.inventory), *argv[2:])
        else:
            proc = self.c.sh(without_sudo(command), check=False)
        assert proc.returncode == 0, f"{command!r} failed ({proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr}"


def remedy(check: dict) -> tuple[str, ...]:
    """What doctor prints as the fix: its commands, else its install step."""
    return tuple(check["fix"]) or ((check["install"],) if check["install"] else ())


def open_fixes(checks: dict[str, dict]) -> list[str]:
    """The checks that are not ok and print a fix this test runs."""
    return [i for i, c in checks.items() if c["status"] not in DONE and remedy(c) and c["group"] not in NOT_RUN_GROUPS]


def follow(lab: Lab, label: str, broken: list[str], checks: dict[str, dict]) -> dict[str, dict]:
    """Run the remedy of each broken check, then doctor; each must end ok, every remedy run succeeding and none
    printed again once it has run. Checks that share a remedy share its run."""
    done: list[tuple[str, ...]] = []
    while pending := [i for i in broken if checks[i]["status"] not in DONE]:
        fix = remedy(checks[pending[0]])
        assert fix, f"{label}: {pending[0]} is {checks[pending[0]]['status']} and prints no fix"
        assert fix not in done, f"{label}: {pending[0]} still {checks[pending[0]]['detail']!r} after {fix}"
        assert len(done) < MAX_FOLLOWED, f"{label}: still not ok after {done}"
        sharing = [i for i in pending if remedy(checks[i]) == fix]
        start = time.monotonic()
        for command in fix:
            lab.run(command)
        done.append(fix)
        checks = lab.doctor()
        lab.log.append(f"{label}: {' && '.join(fix)} ({time.monotonic() - start:.0f} s) for {', '.join(sharing)} -> "
                       + ", ".join(f"{i} {checks[i]['status']}" for i in sharing))
    return checks


@pytest.fixture
def lab(bed: dict[str, str], tool: InstalledTool, tmp_path: Path) -> Iterator[Lab]:
    with container() as c:
        lab = Lab(c, tool, tmp_path, c.inventory(tmp_path, **bed_vars(bed)))
        try:
            yield lab
        finally:
            print("\n" + "\n".join(lab.log))


# (label, shell script run as root on the installed host, the checks it breaks: the first one always, the others
# where this host can judge them)
DAMAGES = [
    ("capabilities lost", "setcap -r /opt/alumet/bin/alumet-agent",
     ["agent.capabilities", "kernel.perf_probe", "kernel.perf_event_paranoid"]),
    # A hardening file read after alumet-setup's own (sysctl.d order), with Debian's value.
    ("paranoid overridden", "echo 'kernel.perf_event_paranoid = 3' > /etc/sysctl.d/zz-hardening.conf",
     ["kernel.perf_event_paranoid"]),
    ("hidepid without the group", "sed -i '/[[:space:]]\\/proc[[:space:]]/d' /etc/fstab && "
     "echo 'proc /proc proc defaults,hidepid=2 0 0' >> /etc/fstab && groupdel alumet",
     ["procfs.hidepid"]),
    ("config invalid", "echo '[plugins.csv' >> /etc/alumet/alumet-config.toml", ["config.file"]),
]


def test_every_printed_fix_makes_its_check_ok(lab: Lab) -> None:
    checks = lab.doctor()
    fresh = open_fixes(checks)
    assert {"agent.binary", "agent.capabilities", "kernel.perf_event_paranoid"} <= set(fresh), \
        {i: (c["status"], c["detail"]) for i, c in checks.items() if c["status"] != "ok"}
    # Each distinct remedy on the fresh host; the full install, which leaves nothing for the others to do, last.
    groups: dict[tuple[str, ...], list[str]] = {}
    for i in fresh:
        groups.setdefault(remedy(checks[i]), []).append(i)
    for fix in sorted(groups, key=lambda f: f == ("alumet-setup install",)):
        checks = follow(lab, "fresh host", groups[fix], checks)
    assert not open_fixes(checks), {i: checks[i]["detail"] for i in open_fixes(checks)}

    for label, script, broken in DAMAGES:
        lab.c.sh(script)
        checks = lab.doctor()
        assert checks[broken[0]]["status"] not in DONE, (label, checks[broken[0]])
        assert all(checks[i]["status"] != "ok" for i in broken), {i: checks[i]["detail"] for i in broken}
        if label == "capabilities lost":  # one cause: the text report says its fix once (doctor.follows_from)
            text = lab.cli("doctor", "-i", str(lab.inventory), timeout=180).stdout
            commands = [line.strip() for line in text.splitlines() if line.strip().startswith(("fix: ", "or: "))]
            assert len(commands) == len(set(commands)), text
        checks = follow(lab, label, broken, checks)
        assert not open_fixes(checks), (label, {i: checks[i]["detail"] for i in open_fixes(checks)})

