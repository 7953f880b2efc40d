"""Every file a role writes is guarded against what the host has at that path (issue 23 class 3, for the
whole class): Ansible's copy and template replace a symlink at their destination with a regular file (a
`systemctl mask` link to /dev/null would become a unit) and write into a FIFO, so each such task's
destination must first pass roles/alumet_common/tasks/regular_files.yml in the same role. The tasks of every
role are read as YAML, blocks included (the helpers of test_removals_gated.py), so a new write without the
guard fails here rather than on a host. /etc/fstab is written by the alumet_proc_fstab module, whose own
checks tests/unit/test_proc_fstab.py covers; created.json by alumet_created (test_created_module.py)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from test_removals_gated import ROOT, TASK_FILES, module_of, tasks_in

WRITING = ("copy", "template", "lineinfile", "blockinfile", "replace")
# Writes that need no guard, each for the reason given.
UNGUARDED = {
    ("alumet_agent/tasks/distribute.yml", "Distribute | Copy the binary built on the build host"):
        "the binary in alumet-setup's own prefix (/opt/alumet/bin), a directory the agent step owns",
}


def destination(task: dict[str, Any]) -> str:
    _module, args = module_of(task)
    return str(args.get("dest") or args.get("path") or "") if isinstance(args, dict) else ""


def writes() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in TASK_FILES:
        for task, _inherited in tasks_in(yaml.safe_load(path.read_text(encoding="utf-8"))):
            if module_of(task)[0] in WRITING:
                found.append((str(path.relative_to(ROOT / "roles")), task))
    return found


def guarded_in(role: str) -> set[str]:
    """The paths the role passes to regular_files (alumet_common_files of each import)."""
    guarded: set[str] = set()
    for path in sorted((ROOT / "roles" / role / "tasks").glob("*.yml")):
        for task, _inherited in tasks_in(yaml.safe_load(path.read_text(encoding="utf-8"))):
            args = task.get("ansible.builtin.import_role") or task.get("ansible.builtin.include_role") or {}
            if isinstance(args, dict) and args.get("tasks_from") == "regular_files":
                guarded.update(str(p) for p in (task.get("vars") or {}).get("alumet_common_files", []))
    return guarded


WRITES = writes()


def test_the_enumeration_finds_the_writes() -> None:
    modules = {module_of(task)[0] for _, task in WRITES}
    assert {"copy", "template", "lineinfile"} <= modules
    assert len(WRITES) >= 10


@pytest.mark.parametrize(("where", "task"), WRITES, ids=[f"{w}: {t['name']}" for w, t in WRITES])
def test_every_write_is_guarded_against_a_link_or_special_file(where: str, task: dict[str, Any]) -> None:
    if (where, task["name"]) in UNGUARDED:
        return
    _module, args = module_of(task)
    if isinstance(args, dict) and args.get("force") is False:
        return  # copy with force: false leaves whatever is at the path (a link included) as it is
    dest = destination(task)
    assert dest, f"{where}: task {task['name']!r}: no destination found"
    role = where.split("/", 1)[0]
    assert dest in guarded_in(role), (
        f"{where}: task {task['name']!r} writes {dest} without roles/alumet_common/tasks/regular_files.yml "
        f"checking that path first (import_role tasks_from: regular_files, alumet_common_files: [{dest!r}])")
