"""Every removal a role can make is gated on what install recorded as created (issue 23): a host's existing
users, groups, memberships, directories and files are never removed. The tasks of every role are read as
YAML, blocks included, and each task that removes something must say, in its `when` or `loop` (or a task
variable they use), that the thing is in the record: alumet_common_created (roles/alumet_common/tasks/track.yml
writes it, created.yml reads it), or for packages prereqs_to_remove (the prereqs step's record of the packages
it installed, tasks/record.yml)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TASK_FILES = sorted((ROOT / "roles").glob("*/tasks/*.yml"))
RECORDS = ("alumet_common_created", "prereqs_to_remove")
# alumet-setup's own bookkeeping under /var/lib/alumet-setup: the records themselves.
OWN_STATE = ("alumet_common_created_file", "alumet_common_created_legacy_user_file", "install_record_file",
             "prereqs_state_file")
# Removals made during install of what the same run has just made, each for a reason given here.
INSTALL_TIME = {
    ("alumet_agent/tasks/distribute.yml", "Distribute | Remove the unverified copy"):
        "the copy this run made failed its sha256 or run check (rescue of the copy's block)",
    ("rustup/tasks/toolchain.yml", "Toolchain | Remove a partially installed toolchain"):
        "a toolchain directory inside RUSTUP_HOME that rustup left incomplete",
}
REMOVING_COMMANDS = {"rm", "rmdir", "userdel", "groupdel", "deluser", "delgroup", "gpasswd", "setcap", "find"}


def module_of(task: dict[str, Any]) -> tuple[str, Any]:
    for key, value in task.items():
        if key.startswith(("ansible.builtin.", "community.", "ansible.posix.")) or key in (
                "user", "group", "file", "command", "shell", "lineinfile", "apt", "package", "blockinfile"):
            return key.rsplit(".", 1)[-1], value
    return "", None


def removes(task: dict[str, Any]) -> bool:
    module, args = module_of(task)
    if not isinstance(args, dict):
        args = {"cmd": args} if isinstance(args, str) else {}
    if module in ("user", "group", "file", "lineinfile", "blockinfile", "replace", "apt", "package"):
        return args.get("state") == "absent"
    if module in ("command", "shell"):
        argv = args.get("argv")
        text = " ".join(map(str, argv)) if isinstance(argv, list) else str(argv or args.get("cmd") or "")
        words = set(re.findall(r"[\w-]+", text))
        first = str(argv[0]) if isinstance(argv, list) and argv else text.split()[0] if text.split() else ""
        by_name = first in REMOVING_COMMANDS - {"find"} and (first != "setcap" or "-r" in words)
        return by_name or ("find" in words and "-delete" in words)
    return False


def tasks_in(items: Any, inherited: str = "") -> Iterator[tuple[dict[str, Any], str]]:
    """Every task, with the `when` text of the blocks around it."""
    for task in items or []:
        if not isinstance(task, dict):
            continue
        gate = inherited + " " + text_of(task.get("when"))
        if "block" in task:
            for part in ("block", "rescue", "always"):
                yield from tasks_in(task.get(part), gate)
        else:
            yield task, inherited


def text_of(value: Any) -> str:
    return yaml.safe_dump(value) if value is not None else ""


def gate_of(task: dict[str, Any], inherited: str) -> str:
    """The task's when and loop, with the task variables they name."""
    gate = inherited + text_of(task.get("when")) + text_of(task.get("loop"))
    for name, value in (task.get("vars") or {}).items():
        if name in gate:
            gate += text_of(value)
    return gate


def removal_tasks() -> list[tuple[str, dict[str, Any], str]]:
    found = []
    for path in TASK_FILES:
        for task, inherited in tasks_in(yaml.safe_load(path.read_text(encoding="utf-8"))):
            if removes(task):
                found.append((str(path.relative_to(ROOT / "roles")), task, inherited))
    return found


REMOVALS = removal_tasks()


def test_the_enumeration_finds_every_kind_of_removal() -> None:
    """The parser sees users, groups, memberships, files, directories, lines, packages and capabilities."""
    modules = {module_of(task)[0] for _, task, _ in REMOVALS}
    assert {"user", "group", "file", "lineinfile", "apt", "command"} <= modules
    names = " ".join(task["name"] for _, task, _ in REMOVALS)
    for what in ("group", "user", "members", "directories", "capabilities", "line"):
        assert what in names, what
    # The files roles write go through the one shared removal (alumet_common tasks_from: remove_files).
    assert "alumet_common/tasks/remove_files.yml" in {where for where, _, _ in REMOVALS}
    assert len(REMOVALS) >= 15


@pytest.mark.parametrize(("where", "task", "inherited"), REMOVALS, ids=[f"{w}: {t['name']}" for w, t, _ in REMOVALS])
def test_every_removal_is_gated_on_the_install_record(where: str, task: dict[str, Any], inherited: str) -> None:
    if (where, task["name"]) in INSTALL_TIME:
        return
    module, args = module_of(task)
    target = text_of(args.get("path") if isinstance(args, dict) else None) + text_of(task.get("loop"))
    if module == "file" and any(name in target for name in OWN_STATE):
        return  # the record itself, alumet-setup's own file
    if module == "file" and re.search(r"\b(\w+)\.path\b", target):
        registered = re.search(r"\b(\w+)\.path\b", target).group(1)  # type: ignore[union-attr]
        made = [t for t, _ in tasks_in(yaml.safe_load((ROOT / "roles" / where).read_text(encoding="utf-8")))
                if t.get("register") == registered and module_of(t)[0] == "tempfile"]
        if made:
            return  # a temporary directory this run made with the tempfile module
    gate = gate_of(task, inherited)
    assert any(record in gate for record in RECORDS), (
        f"{where}: task {task['name']!r} removes something without checking that install recorded it as created "
        f"(its when/loop must use alumet_common_created; roles/alumet_common/tasks/track.yml records)")


def test_every_role_that_creates_records_what_it_created() -> None:
    """A role whose uninstall gates on the record tracks what its install creates (before and after)."""
    for uninstall in sorted((ROOT / "roles").glob("*/tasks/uninstall.yml")):
        role = uninstall.parts[-3]
        text = uninstall.read_text(encoding="utf-8")
        if "alumet_common_created" not in text:
            continue
        install = "".join(p.read_text(encoding="utf-8") for p in uninstall.parent.glob("*.yml")
                          if p.name != "uninstall.yml")
        if role == "capabilities":
            continue  # gates on the agent step's binary, recorded by that step
        assert "alumet_common_track_phase: before" in install and "alumet_common_track_phase: after" in install, role
