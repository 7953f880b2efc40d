"""The alumet_created module (roles/alumet_common/library): the record of what alumet-setup created, which
gates every removal of uninstall. Run as Ansible runs a module (its arguments in a JSON file), on files
under a temporary directory and on this machine's user and group databases (read only)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).parents[2]
MODULE = ROOT / "roles" / "alumet_common" / "library" / "alumet_created.py"
NO_SUCH_USER = "alumet-no-such-user"


def run(tmp_path: Path, check_mode: bool = False, **args: Any) -> dict[str, Any]:
    args.setdefault("file", str(tmp_path / "state" / "created.json"))
    params = {"ANSIBLE_MODULE_ARGS": {**args, "_ansible_check_mode": check_mode}}
    (tmp_path / "args.json").write_text(json.dumps(params))
    proc = subprocess.run([sys.executable, str(MODULE), str(tmp_path / "args.json")], capture_output=True,
                          text=True, check=False)
    return json.loads(proc.stdout)


@pytest.mark.processes
def test_before_after_prune_record_only_what_the_tasks_created(tmp_path: Path) -> None:
    had, made = tmp_path / "had", tmp_path / "made"
    had.write_text("the host's")
    track = {"path": [str(had), str(made)], "user": ["root", NO_SUCH_USER], "member": ["root:" + NO_SUCH_USER]}
    before = run(tmp_path, phase="before", track=track)
    assert before["absent"] == {"path": [str(made)], "user": [NO_SUCH_USER], "group": [],
                                "member": ["root:" + NO_SUCH_USER]}
    assert before["changed"] is False and not (tmp_path / "state").exists()

    made.write_text("ours")  # the role's tasks run here
    after = run(tmp_path, phase="after", absent=before["absent"])
    assert after["changed"] is True
    assert after["created"] == {"path": [str(made)], "user": [], "group": [], "member": []}
    on_disk = json.loads((tmp_path / "state" / "created.json").read_text())
    assert on_disk == {"version": 1, **after["created"]}
    assert run(tmp_path, phase="after", absent=before["absent"])["changed"] is False  # a rerun changes nothing

    assert run(tmp_path, phase="prune")["changed"] is False  # still there: still recorded
    made.unlink()  # uninstall's removal
    pruned = run(tmp_path, phase="prune")
    assert pruned["changed"] is True and pruned["created"]["path"] == []
    assert not (tmp_path / "state" / "created.json").exists()  # an empty record goes


@pytest.mark.processes
def test_check_mode_answers_the_same_and_writes_nothing(tmp_path: Path) -> None:
    made = tmp_path / "made"
    made.write_text("x")
    result = run(tmp_path, check_mode=True, phase="after", absent={"path": [str(made)]})
    assert result["changed"] is True and result["created"]["path"] == [str(made)]
    assert not (tmp_path / "state").exists()


@pytest.mark.processes
def test_a_foreign_or_oversized_record_counts_as_empty(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    record = state / "created.json"
    for text in ('{"version": 2, "path": ["/etc"]}', '["/etc"]', "not json", '{"version": 1, "path": "/etc"}',
                 '{"version": 1, "path": ["/etc"]}' + " " * (1 << 20)):
        record.write_text(text)
        assert run(tmp_path, phase="read")["created"]["path"] == [], text[:40]


@pytest.mark.processes
def test_a_link_at_the_record_is_never_followed_nor_written_over(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    target = tmp_path / "elsewhere.json"
    target.write_text(json.dumps({"version": 1, "path": [str(tmp_path)]}))
    (state / "created.json").symlink_to(target)
    assert run(tmp_path, phase="read")["created"]["path"] == []  # not read through the link
    made = tmp_path / "made"
    made.write_text("x")
    result = run(tmp_path, phase="after", absent={"path": [str(made)]})
    assert result.get("failed") is True and "is not a regular file" in result["msg"]
    assert (state / "created.json").is_symlink()
    assert json.loads(target.read_text()) == {"version": 1, "path": [str(tmp_path)]}


@pytest.mark.processes
def test_an_earlier_release_record_of_the_service_user_is_merged_then_removed(tmp_path: Path) -> None:
    legacy = tmp_path / "service-user"
    legacy.write_text(f"{NO_SUCH_USER}\n")
    read = run(tmp_path, phase="read", legacy_user_file=str(legacy))
    assert read["created"]["user"] == [NO_SUCH_USER]
    pruned = run(tmp_path, phase="prune", legacy_user_file=str(legacy))  # the user is gone
    assert pruned["changed"] is True and pruned["created"]["user"] == []
    assert not legacy.exists()


@pytest.mark.processes
def test_mkdir_makes_only_what_is_absent_and_never_touches_a_directory_the_host_has(tmp_path: Path) -> None:
    """A shared directory (1777, another owner, as /tmp) stays exactly as it was; those made are root:root
    0755 whatever the umask, parents first, and recorded at once; a rerun makes nothing."""
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chown(shared, 65534, 65534)
    os.chmod(shared, 0o1777)
    new = shared / "a" / "b"
    result = run(tmp_path, phase="mkdir", dirs=[str(shared), str(new)])
    assert result["changed"] is True and result["made"] == [str(shared / "a"), str(new)]
    st = shared.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o1777, 65534, 65534)
    for made in (shared / "a", new):
        st = made.stat()
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o755, 0, 0)
    assert result["created"]["path"] == [str(shared / "a"), str(new)]
    assert json.loads((tmp_path / "state" / "created.json").read_text())["path"] == result["created"]["path"]
    again = run(tmp_path, phase="mkdir", dirs=[str(shared), str(new)])
    assert again["changed"] is False and again["made"] == []


@pytest.mark.processes
def test_mkdir_in_check_mode_makes_nothing_and_its_own_state_directory_is_not_recorded(tmp_path: Path) -> None:
    state = tmp_path / "state"
    preview = run(tmp_path, check_mode=True, phase="mkdir", dirs=[str(state), str(tmp_path / "x" / "y")])
    assert preview["changed"] is True
    assert preview["made"] == [str(state), str(tmp_path / "x"), str(tmp_path / "x" / "y")]
    assert not state.exists() and not (tmp_path / "x").exists()
    result = run(tmp_path, phase="mkdir", dirs=[str(state)])
    assert result["made"] == [str(state)] and state.is_dir()
    assert result["created"]["path"] == [] and not (state / "created.json").exists()  # rmdir.yml removes it


@pytest.mark.processes
@pytest.mark.parametrize("kind", ["file", "dangling link"])
def test_mkdir_refuses_what_is_not_a_directory_and_leaves_it(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "taken"
    if kind == "file":
        path.write_text("the host's")
    else:
        path.symlink_to(tmp_path / "nowhere")
    result = run(tmp_path, phase="mkdir", dirs=[str(path)])
    assert result.get("failed") is True and str(path) in result["msg"]
    assert path.is_symlink() if kind != "file" else path.read_text() == "the host's"
    assert not (tmp_path / "nowhere").exists() and not (tmp_path / "state").exists()
