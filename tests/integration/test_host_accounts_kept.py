"""A host's existing accounts and groups are never ours (issue 23): the real CLI against a bed container.

An ordinary login user (uid 1000, a home with a file) and a system account with a login shell are refused as
the service user before any change and stays byte-identical through install and uninstall; Debian's `video`
group survives uninstall of the group step (and a member the group step added is taken out again, exactly); an
existing system account used as the service user is used as it is and survives uninstall; what install did
create goes again.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bedhost import Container, container, install_summary, quoted
from installed_tool import InstalledTool

pytestmark = [pytest.mark.containers]

DATABASES = "/etc/passwd /etc/shadow /etc/group /etc/gshadow"


def accounts(c: Container) -> str:
    """The account databases and labuser's home (every entry, owner, mode, content): equal means untouched."""
    return c.sh(f"cat {DATABASES}; find /home/labuser -printf '%p %M %u:%g %s\\n' | LC_ALL=C sort; "
                "find /home/labuser -type f -exec sha256sum {} +").stdout


def test_existing_accounts_and_groups_are_never_modified_or_removed(bed: dict[str, str], tool: InstalledTool,
                                                                    tmp_path: Path) -> None:
    with container() as c:
        c.sh("useradd --create-home --uid 1000 --shell /bin/bash labuser && echo notes > /home/labuser/notes.txt"
             " && useradd --system --shell /usr/sbin/nologin --home-dir /nonexistent --no-create-home svcacct"
             " && useradd --system --shell /bin/bash --home-dir /nonexistent --no-create-home syslogin")
        before = accounts(c)
        assert "video:x:44:" in before

        # A login account as the service user, an ordinary one or a system one with a login shell: refused in
        # preflight with one line naming it, nothing changed.
        for login in ("labuser", "syslogin"):
            run = c.cli(tool, tmp_path, "install", "--only", "service", "--set", f"alumet_service_user={login}")
            assert run.returncode != 0, run.stdout + run.stderr
            refusals = [line for line in (run.stdout + run.stderr).splitlines() if f"{login} already exists" in line]
            assert len(refusals) == 1 and "login account" in refusals[0], run.stdout[-3000:]
            assert accounts(c) == before
        # nobody (uid 65534, above the system range, no login shell) passes the same preflight.
        run = c.cli(tool, tmp_path, "install", "--check", "--only", "service", "--set", "alumet_service_user=nobody")
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr
        assert accounts(c) == before
        assert c.sh("test -e /etc/systemd/system/alumet.service", check=False).returncode != 0
        run = c.cli(tool, tmp_path, "uninstall", "--only", "service", "--set", "alumet_service_user=labuser")
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr
        assert accounts(c) == before

        # A group the host had: install joins labuser to it, uninstall takes only that membership out again.
        run = c.cli(tool, tmp_path, "install", "--only", "group", "--set", "alumet_group_name=video",
                    "--set", "alumet_group_members=labuser")
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr
        assert "video:x:44:labuser" in c.sh("getent group video").stdout
        run = c.cli(tool, tmp_path, "uninstall", "--only", "group", "--set", "alumet_group_name=video")
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr
        assert "ok: Uninstall | Say why the group stays" in run.stdout  # not created by alumet-setup: kept
        assert accounts(c) == before

        # An existing system account as the service user: used as it is, never removed. The group alumet
        # the service step created (recorded) goes with the group step's uninstall.
        run = c.cli(tool, tmp_path, "install", "--only", "service", "--set", "alumet_service_user=svcacct")
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr
        assert "User=svcacct" in c.sh("cat /etc/systemd/system/alumet.service").stdout
        assert c.sh("getent group alumet", check=False).returncode == 0
        run = c.cli(tool, tmp_path, "uninstall", "--only", "service,group", "--set", "alumet_service_user=svcacct")
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr
        assert accounts(c) == before
        assert c.sh("test -e /etc/systemd/system/alumet.service", check=False).returncode != 0

        # What install creates is still removed: the default service user and its group.
        run = c.cli(tool, tmp_path, "install", "--only", "service")
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr
        assert c.sh("getent passwd alumet", check=False).returncode == 0
        run = c.cli(tool, tmp_path, "uninstall", "--only", "service,group")
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr
        assert accounts(c) == before
        # Nothing of install's records is left: an uninstall of some steps takes the empty state directory too.
        assert c.sh("test -e /var/lib/alumet-setup", check=False).returncode != 0, c.sh(
            "ls -la /var/lib/alumet-setup", check=False).stdout


def test_a_rerun_with_other_inputs_that_change_nothing_reports_no_change(bed: dict[str, str], tool: InstalledTool,
                                                                         tmp_path: Path) -> None:
    """The record's "applied" digests are the fast path's bookkeeping: a run whose inputs differ (a setting
    spelled out at its default) runs the step again, changes nothing, and says so (found by the VM tier:
    `install --only service` on an installed host counted the record's new digest as a change)."""
    with container() as c:
        run = c.cli(tool, tmp_path, "install", "--only", "sysctl")
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr
        record = c.sh("cat /var/lib/alumet-setup/choices.json").stdout
        again = c.cli(tool, tmp_path, "install", "--only", "sysctl", "--set", "perf_paranoid_value=2")
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr
        assert "up to date" not in again.stdout  # other inputs: the step ran
        assert all(row[1] == "0" for row in install_summary(again.stdout).values()), again.stdout[-3000:]
        assert json.loads(c.sh("cat /var/lib/alumet-setup/choices.json").stdout)["applied"] != json.loads(
            record)["applied"]  # the bookkeeping did move


@pytest.mark.parametrize("original", ["# mine\nkernel.perf_event_paranoid=3\nvm.swappiness = 10\n",
                                      "vm.swappiness = 10\n"], ids=["line-replaced", "line-added"])
def test_a_sysctl_file_the_host_had_gets_its_own_line_back(bed: dict[str, str], tool: InstalledTool, tmp_path: Path,
                                                         original: str) -> None:
    """The sysctl step edits a file the host had: uninstall gives back exactly what was there."""
    with container() as c:
        c.sh(f"mkdir -p /etc/sysctl.d && printf %s {quoted(original)} > /etc/sysctl.d/local.conf")
        before = c.sh("stat -c '%a %U:%G' /etc/sysctl.d/local.conf; cat /etc/sysctl.d/local.conf").stdout
        run = c.cli(tool, tmp_path, "install", "--only", "sysctl")
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr
        assert "kernel.perf_event_paranoid = 2" in c.sh("cat /etc/sysctl.d/local.conf").stdout
        run = c.cli(tool, tmp_path, "install", "--only", "sysctl", "--set", "perf_paranoid_value=1")  # a second edit
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr
        run = c.cli(tool, tmp_path, "uninstall", "--only", "sysctl")
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr
        assert c.sh("stat -c '%a %U:%G' /etc/sysctl.d/local.conf; cat /etc/sysctl.d/local.conf").stdout == before
        assert c.sh("ls /var/lib/alumet-setup 2>/dev/null", check=False).stdout.split() in ([], ["choices.json"])
