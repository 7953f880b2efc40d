"""proc_fstab.py is doctor's /proc fstab parser and, unchanged, the hidepid role's Ansible module: on one
fstab, the role and doctor must pick the same /proc line and judge it alike."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from checkhelpers import FIXTURES, FixtureHost, caps_finding, context, stub

from alumet_setup.checks import hidepid  # noqa: F401  (registers the check)
from alumet_setup.proc_fstab import is_proc_line, level, proc_lines

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "roles" / "hidepid" / "library" / "alumet_proc_fstab.py"
LIVE = "proc /proc proc rw,nosuid,nodev,noexec,relatime,hidepid=invisible 0 0\n"

# Each fstab exempts gid 998 (the fixture's alumet group) on one line only. mount(8) applies the first
# line whose mount point is /proc; a proc line mounted elsewhere (/tmp here: findmnt --verify wants a
# target that exists) is another proc instance and says nothing about /proc.
EXEMPT, PLAIN = "hidepid=invisible,gid=998 0 0\n", "hidepid=invisible 0 0\n"
FSTABS = {
    "proc elsewhere first": f"proc /tmp proc {EXEMPT}proc /proc proc {PLAIN}",
    "exempt /proc line first": f"proc /proc proc {EXEMPT}proc /proc proc {PLAIN}",
    "exempt /proc line second": f"proc /proc proc {PLAIN}proc /proc proc {EXEMPT}",
    "/proc line of another type": f"none /proc tmpfs defaults 0 0\nproc /tmp proc {EXEMPT}",
    "a later /proc line of another type": f"proc /proc proc {PLAIN}none /proc tmpfs defaults 0 0\n",
}


def test_the_role_module_is_the_doctor_code() -> None:
    for link in (MODULE, ROOT / "plugins" / "modules" / "alumet_proc_fstab.py"):
        assert link.is_symlink() and link.resolve() == (ROOT / "alumet_setup" / "proc_fstab.py").resolve()


def test_the_proc_line_is_chosen_by_its_mount_point() -> None:
    assert is_proc_line("proc /proc proc defaults 0 0")
    assert is_proc_line("none /proc tmpfs defaults")  # it would mount on /proc
    assert not is_proc_line("proc /mnt/proc proc hidepid=2")  # another instance (Linux >= 5.8)
    assert not is_proc_line("#proc /proc proc defaults")
    assert proc_lines(["# c", "", "proc /proc proc hidepid=2", "proc /proc proc defaults"]) == [2, 3]
    assert [level(v) for v in ("invisible", "2", "ptraceable", None, "bogus")] == [2, 2, 4, None, None]


def run_module(tmp_path: Path, fstab: Path, check: bool, policy: str = "exempt-group") -> dict:
    mounts = tmp_path / "mounts"
    mounts.write_text(LIVE)
    args = tmp_path / "args.json"
    args.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {
        "policy": policy, "gid": 998, "fstab": str(fstab), "backup": str(tmp_path / "fstab.bak"),
        "mounts": str(mounts), "_ansible_check_mode": check, "_ansible_diff": True}}))
    done = subprocess.run([sys.executable, str(MODULE), str(args)], capture_output=True, text=True, timeout=60,
                          check=False)
    return json.loads(done.stdout)


def doctor_boot(tmp_path: Path, fstab_text: str, monkeypatch: pytest.MonkeyPatch) -> dict:
    root = tmp_path / "host"
    shutil.copytree(FIXTURES / "hidepid" / "hidepid2", root, dirs_exist_ok=True)
    (root / "etc" / "fstab").write_text(fstab_text)
    stub(monkeypatch, "agent.capabilities", caps_finding(has_ptrace=False))
    return context(FixtureHost(root)).finding("procfs.hidepid").data


@pytest.mark.skipif(shutil.which("findmnt") is None, reason="the module verifies fstabs with findmnt")
@pytest.mark.parametrize("case", FSTABS)
def test_role_and_doctor_agree_on_one_fstab(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = FSTABS[case]
    fstab = tmp_path / "fstab"
    fstab.write_text(text)
    data = doctor_boot(tmp_path, text, monkeypatch)
    first = next(line for line in text.splitlines() if line.split()[1] == "/proc")
    # The line doctor reads is the line the role reports (policy keep changes nothing).
    kept = run_module(tmp_path, fstab, check=False, policy="keep")
    assert kept.get("fstab_line") == first, kept
    assert fstab.read_text() == text
    planned = run_module(tmp_path, fstab, check=True)
    if "tmpfs" in text:
        # A /proc line that is no proc mount: the role refuses to write proc options into it.
        assert planned.get("failed") and "not proc" in planned["msg"], planned
        assert fstab.read_text() == text
        if first.split()[2] != "proc":  # doctor reads that line too, not the proc mount on /tmp
            assert data["fstab"]["hidepid"] == "off"
        return
    assert not planned.get("failed"), planned
    # The role edits the fstab exactly when doctor says boot does not exempt the group.
    assert planned["changed"] == (data["exempt_at_boot_by"] is None), (planned, data)
    applied = run_module(tmp_path, fstab, check=False)
    assert not applied.get("failed"), applied
    after = doctor_boot(tmp_path, fstab.read_text(), monkeypatch)
    assert after["exempt_at_boot_by"] == "gid", fstab.read_text()
    # A proc line mounted elsewhere is left as it was.
    assert [ln for ln in fstab.read_text().splitlines() if " /tmp " in ln] == \
        [ln for ln in text.splitlines() if " /tmp " in ln]
