"""proc_fstab.py is doctor's /proc fstab parser and, unchanged, the hidepid role's Ansible module: on one
fstab, the role and doctor must pick the same /proc line and judge it alike."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from checkhelpers import FIXTURES, FixtureHost, caps_finding, context, stub

from alumet_setup.doctor.checks import hidepid  # noqa: F401  (registers the check)
from alumet_setup.hostside.proc_fstab import is_proc_line, level, proc_lines

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
        assert link.is_symlink() and link.resolve() == (ROOT / "alumet_setup" / "hostside" / "proc_fstab.py").resolve()


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


@pytest.mark.processes
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


# ---- a symlinked fstab: the edit and the restore go to the link's target, the link survives --------------

def module(tmp_path: Path, **args: object) -> dict:
    """The module as Ansible runs it, with the backup and the mount table under tmp_path."""
    mounts = tmp_path / "mounts"
    mounts.write_text(LIVE)
    path = tmp_path / "args.json"
    path.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {
        "backup": str(tmp_path / "fstab.bak"), "mounts": str(mounts), "_ansible_diff": True, **args}}))
    done = subprocess.run([sys.executable, str(MODULE), str(path)], capture_output=True, text=True, timeout=60,
                          check=False)
    return json.loads(done.stdout)


def linked_fstab(tmp_path: Path, relative: bool) -> tuple[Path, Path, str]:
    """etc/fstab -> etc/fstab.d/real (absolute or relative link); the target 0640, owned 1234:1234 where we
    may chown. Returns the link, the target and the link's text."""
    etc = tmp_path / "etc"
    (etc / "fstab.d").mkdir(parents=True)
    real = etc / "fstab.d" / "real"
    real.write_text(f"# the host's fstab\nproc /proc proc {PLAIN}")
    real.chmod(0o640)
    if os.geteuid() == 0:
        os.chown(real, 1234, 1234)
    link = etc / "fstab"
    text = "fstab.d/real" if relative else str(real)
    link.symlink_to(text)
    return link, real, text


def meta(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_mode & 0o7777, st.st_uid, st.st_gid


@pytest.mark.processes
@pytest.mark.skipif(shutil.which("findmnt") is None, reason="the module verifies fstabs with findmnt")
@pytest.mark.parametrize("relative", [False, True], ids=["absolute link", "relative link"])
def test_a_symlinked_fstab_stays_a_link_through_edit_and_restore(tmp_path: Path, relative: bool) -> None:
    link, real, text = linked_fstab(tmp_path, relative)
    original, owner = real.read_text(), meta(real)
    edited = module(tmp_path, policy="exempt-group", gid=998, fstab=str(link))
    assert not edited.get("failed") and edited["changed"], edited
    assert link.is_symlink() and os.readlink(link) == text
    assert "proc /proc proc hidepid=2,gid=998 0 0" in real.read_text()
    assert meta(real) == owner  # the target keeps its mode and owner
    backup = tmp_path / "fstab.bak"
    assert not backup.is_symlink() and backup.read_text() == original
    assert sorted(p.name for p in real.parent.iterdir()) == ["real"]  # no temporary file left beside it

    again = module(tmp_path, policy="exempt-group", gid=998, fstab=str(link))
    assert not again.get("failed") and not again["changed"], again

    restored = module(tmp_path, restore=True, fstab=str(link))
    assert not restored.get("failed") and restored["changed"], restored
    assert restored["restored_options"] == "hidepid=invisible"
    assert link.is_symlink() and os.readlink(link) == text
    assert real.read_text() == original and meta(real) == owner
    assert not backup.exists()
    assert module(tmp_path, restore=True, fstab=str(link))["changed"] is False  # nothing left to do


@pytest.mark.processes
@pytest.mark.skipif(shutil.which("findmnt") is None, reason="the module verifies fstabs with findmnt")
@pytest.mark.parametrize("target", ["missing", "fifo", "directory", "/dev/null"])
def test_a_link_to_anything_but_a_regular_file_is_refused_and_nothing_is_written(tmp_path: Path,
                                                                                   target: str) -> None:
    pointed = Path(target) if target.startswith("/") else tmp_path / target
    if target == "fifo":
        os.mkfifo(pointed)
    elif target == "directory":
        pointed.mkdir()
    link = tmp_path / "fstab"
    link.symlink_to(pointed)
    before = sorted(p.name for p in tmp_path.iterdir())
    for args in ({"policy": "exempt-group", "gid": 998}, {"restore": True}):
        result = module(tmp_path, fstab=str(link), **args)
        assert result.get("failed"), result
        assert "refusing" in result["msg"] and "\n" not in result["msg"], result
        assert link.is_symlink() and os.readlink(link) == str(pointed)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name not in ("args.json", "mounts")) == \
        [name for name in before if name not in ("args.json", "mounts")]
    assert target != "missing" or not pointed.exists()


@pytest.mark.processes
@pytest.mark.skipif(shutil.which("findmnt") is None, reason="the module verifies fstabs with findmnt")
def test_a_link_in_place_of_the_backup_is_never_written_through(tmp_path: Path) -> None:
    fstab = tmp_path / "fstab"
    fstab.write_text(f"proc /proc proc {PLAIN}")
    elsewhere = tmp_path / "elsewhere"
    (tmp_path / "fstab.bak").symlink_to(elsewhere)  # dangling: os.path.exists() says False
    result = module(tmp_path, policy="exempt-group", gid=998, fstab=str(fstab))
    assert not elsewhere.exists(), result
    assert result.get("failed") and "without a backup" in result["msg"], result
    assert fstab.read_text() == f"proc /proc proc {PLAIN}"
    # The restore refuses a backup that is a link.
    refused = module(tmp_path, restore=True, fstab=str(fstab))
    assert refused.get("failed") and "not a regular file" in refused["msg"], refused
    assert not elsewhere.exists()


@pytest.mark.processes
@pytest.mark.skipif(shutil.which("findmnt") is None, reason="the module verifies fstabs with findmnt")
def test_restore_refuses_when_more_than_the_proc_line_changed(tmp_path: Path) -> None:
    link, real, _ = linked_fstab(tmp_path, relative=True)
    assert not module(tmp_path, policy="exempt-group", gid=998, fstab=str(link)).get("failed")
    real.write_text(real.read_text() + "tmpfs /tmp tmpfs defaults 0 0\n")
    edited = real.read_text()
    refused = module(tmp_path, restore=True, fstab=str(link))
    assert refused.get("failed") and "changed beyond its /proc line" in refused["msg"], refused
    assert real.read_text() == edited and link.is_symlink() and (tmp_path / "fstab.bak").exists()
