"""procfs.hidepid on fixture trees (tests/fixtures/hidepid), and the mountinfo/fstab parsers."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from checkhelpers import FIXTURES, FixtureHost, caps_finding, context, copy_fixture, stub

from alumet_setup.doctor.checks import agent, system  # noqa: F401  (registers the checks; hidepid's below)
from alumet_setup.doctor.checks.hidepid import exemption, group_gid, hidepid_mode
from alumet_setup.doctor.findings import Context, Finding, Status
from alumet_setup.doctor.mounts import mount_at, mount_of, parse_fstab, parse_mountinfo
from alumet_setup.targets.hosts import LocalHost

REMOUNT = "sudo mount -o remount,hidepid=invisible,gid=998 /proc"


def fixture(case: str) -> Path:
    return FIXTURES / "hidepid" / case


def hidepid(root: Path, monkeypatch: pytest.MonkeyPatch, has_ptrace: bool = False, **options: object) -> Finding:
    stub(monkeypatch, "agent.capabilities", caps_finding(has_ptrace=has_ptrace))
    return context(FixtureHost(root), **options).finding("procfs.hidepid")


# ---- parsers

def test_parse_mountinfo_fields_and_escapes() -> None:
    mounts = parse_mountinfo((fixture("fstab-mismatch") / "proc/self/mountinfo").read_text())
    assert "/srv/my data" in [m.mount_point for m in mounts]  # \040 in the mount point
    proc = mount_at(mounts, "/proc")
    assert proc is not None
    # The later /proc mount is stacked on the first one: it is the one processes see.
    assert proc.super_options == {"rw": None, "gid": "998", "hidepid": "invisible"}
    assert proc.fstype == "proc" and proc.source == "proc"
    first = next(m for m in mounts if m.mount_point == "/proc")
    assert first.mount_options == {"rw": None, "nosuid": None, "nodev": None, "noexec": None, "relatime": None}
    assert first.super_options == {"rw": None, "hidepid": "2"}


def test_parse_mountinfo_without_optional_fields() -> None:
    # A private mount has no 'shared:N' field; the lone '-' still separates.
    (mount,) = parse_mountinfo("36 35 98:0 /mnt1 /mnt2 rw,noatime - ext3 /dev/root rw,errors=continue\n")
    assert (mount.mount_point, mount.fstype, mount.source) == ("/mnt2", "ext3", "/dev/root")
    assert mount.super_options == {"rw": None, "errors": "continue"}


def test_mount_of_uses_path_prefixes() -> None:
    mounts = parse_mountinfo(
        "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n"
        "2 1 8:2 / /opt/alumet-old rw,nosuid - ext4 /dev/sda2 rw\n"
        "3 1 8:3 / /opt rw - ext4 /dev/sda3 rw\n"
    )
    found = mount_of(mounts, "/opt/alumet/bin/alumet-agent")
    assert found is not None and found.mount_point == "/opt"
    found = mount_of(mounts, "/opt/alumet-old/alumet-agent")
    assert found is not None and found.mount_point == "/opt/alumet-old"
    found = mount_of(mounts, "/usr/bin/true")
    assert found is not None and found.mount_point == "/"


def test_parse_fstab() -> None:
    entries = parse_fstab((fixture("fstab-mismatch") / "etc/fstab").read_text())
    assert [e.file for e in entries] == ["/", "/boot/efi", "/srv/my data", "/proc"]  # commented line skipped
    proc = entries[-1]
    assert (proc.spec, proc.vfstype) == ("proc", "proc")
    assert proc.options == {"nosuid": None, "nodev": None, "hidepid": "2"}


@pytest.mark.parametrize(("value", "mode"), [
    (None, "off"), ("0", "off"), ("1", "noaccess"), ("2", "invisible"), ("4", "ptraceable"),
    ("off", "off"), ("noaccess", "noaccess"), ("invisible", "invisible"), ("ptraceable", "ptraceable"),
])
def test_hidepid_mode(value: str | None, mode: str) -> None:
    assert hidepid_mode({} if value is None else {"hidepid": value}) == mode


def test_group_gid_reads_the_hosts_etc_group() -> None:
    assert group_gid(FixtureHost(fixture("none")), "alumet") == 998
    assert group_gid(FixtureHost(fixture("none")), "alice") == 1000
    assert group_gid(FixtureHost(fixture("no-group")), "alumet") is None


def test_ptraceable_ignores_gid() -> None:
    opts = {"hidepid": "ptraceable", "gid": 998, "subset": None}
    assert exemption(opts, 998, has_ptrace=False) is None
    assert exemption(opts, 998, has_ptrace=True) == "cap_sys_ptrace"
    assert exemption({**opts, "hidepid": "invisible"}, 998, has_ptrace=False) == "gid"


# ---- the check

def test_defaults_are_fine(monkeypatch: pytest.MonkeyPatch) -> None:
    finding = hidepid(fixture("none"), monkeypatch)
    assert finding.status is Status.OK and finding.detail == "hidepid=off"
    assert finding.data["exempt_by"] == "hidepid off"
    assert finding.data["fstab"]["present"] is False
    json.dumps(finding.data)


def test_hidepid2_without_gid_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    finding = hidepid(fixture("hidepid2"), monkeypatch)
    assert finding.status is Status.FAIL
    assert finding.data["live"] == {"hidepid": "invisible", "gid": None, "subset": None}
    assert finding.data["exempt_by"] is None
    assert finding.install_step == "hidepid"
    assert finding.fix[0] == REMOUNT and finding.fix[1].startswith("sudo sed --follow-symlinks -i.alumet-setup.bak ")


def test_hidepid2_exempt_by_ptrace(monkeypatch: pytest.MonkeyPatch) -> None:
    finding = hidepid(fixture("hidepid2"), monkeypatch, has_ptrace=True)
    assert finding.status is Status.OK
    assert finding.data["exempt_by"] == "cap_sys_ptrace"


def test_invisible_with_the_alumet_gid_is_exempt(monkeypatch: pytest.MonkeyPatch) -> None:
    finding = hidepid(fixture("invisible-gid"), monkeypatch)
    assert finding.status is Status.OK
    assert finding.detail == "hidepid=invisible,gid=998, exempt by gid"
    assert finding.data["exempt_at_boot_by"] == "gid"


def test_gid_of_another_group_does_not_exempt(monkeypatch: pytest.MonkeyPatch) -> None:
    finding = hidepid(fixture("invisible-gid"), monkeypatch, group="alice")
    assert finding.status is Status.FAIL
    assert "gid=1000" in finding.fix[0]


def test_ptraceable_needs_ptrace(monkeypatch: pytest.MonkeyPatch) -> None:
    finding = hidepid(fixture("ptraceable"), monkeypatch)
    assert finding.status is Status.FAIL  # gid= matches alumet, but ptraceable ignores it
    assert finding.fix[0].startswith(REMOUNT)
    assert hidepid(fixture("ptraceable"), monkeypatch, has_ptrace=True).status is Status.OK


def test_fstab_would_hide_again_at_boot(monkeypatch: pytest.MonkeyPatch) -> None:
    finding = hidepid(fixture("fstab-mismatch"), monkeypatch)
    assert finding.status is Status.WARN
    assert finding.detail == "exempt now (gid), but /etc/fstab mounts /proc with hidepid=invisible at boot"
    assert finding.data["fstab"] == {"hidepid": "invisible", "gid": None, "subset": None, "present": True}
    assert len(finding.fix) == 1 and finding.fix[0].startswith("sudo sed --follow-symlinks -i.alumet-setup.bak -E ")


@pytest.mark.processes
@pytest.mark.parametrize("linked", [False, True], ids=["regular fstab", "symlinked fstab"])
def test_fstab_fix_edits_only_the_proc_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, linked: bool) -> None:
    root = copy_fixture("hidepid/fstab-mismatch", tmp_path)
    fstab = root / "etc/fstab"
    before = fstab.read_text()
    if linked:  # the fix edits the link's target and the link stays
        fstab.rename(root / "etc/fstab.real")
        fstab.symlink_to("fstab.real")
    finding = hidepid(root, monkeypatch)
    command = " && ".join(finding.fix).replace("sudo ", "").replace("/etc/fstab", str(fstab))
    subprocess.run(["bash", "-c", command], check=True, capture_output=True)
    assert fstab.is_symlink() is linked
    after = parse_fstab(fstab.read_text())
    assert after[-1].options == {"nosuid": None, "nodev": None, "hidepid": "invisible", "gid": "998"}
    assert after[:-1] == parse_fstab(before)[:-1]
    assert "# proc /proc proc defaults 0 0" in fstab.read_text()  # comments untouched
    assert (root / ("etc/fstab.real" if linked else "etc/fstab")).with_name(
        ("fstab.real" if linked else "fstab") + ".alumet-setup.bak").read_text() == before
    assert hidepid(root, monkeypatch).status is Status.OK


def test_live_wrong_fstab_right_needs_a_remount(monkeypatch: pytest.MonkeyPatch) -> None:
    finding = hidepid(fixture("remount-needed"), monkeypatch)
    assert finding.status is Status.FAIL
    assert finding.fix == ("sudo mount -o remount /proc",)


def test_subset_pid_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    finding = hidepid(fixture("subset-pid"), monkeypatch, has_ptrace=True)  # ptrace does not help here
    assert finding.status is Status.FAIL and "subset=pid" in finding.detail


def test_missing_group_is_created_first(monkeypatch: pytest.MonkeyPatch) -> None:
    finding = hidepid(fixture("no-group"), monkeypatch)
    assert finding.status is Status.FAIL
    assert finding.fix == ("sudo groupadd --system alumet",
                           "sudo mount -o remount,hidepid=invisible,gid=$(getent group alumet | cut -d: -f3) /proc")


def test_no_proc_mount_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert hidepid(tmp_path, monkeypatch).status is Status.ERROR


def test_real_machine_gives_a_valid_finding() -> None:
    finding = Context(LocalHost()).finding("procfs.hidepid")
    assert finding.status is not Status.ERROR, finding.detail
    assert finding.data["live"]["hidepid"] in ("off", "noaccess", "invisible", "ptraceable")
    json.dumps(finding.data)
