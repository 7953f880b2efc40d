"""Every directory a role makes goes through roles/alumet_common/tasks/directories.yml (issue 23, for the
whole class): Ansible's file module with state: directory chowns and chmods a directory that is already
there, so `--set alumet_config_file=/tmp/x.toml` took /tmp's sticky bit and world-write and a path in a
user's home handed that home to root. directories.yml makes only what is absent and records it as created;
tests/unit/test_created_module.py runs its module, tests/integration/test_config_role.py and
test_powercap_role.py run roles on a directory the host has. The tasks of every role are read as YAML,
blocks included (the helpers of test_removals_gated.py), so a new `state: directory` fails here."""

from __future__ import annotations

from typing import Any

import yaml
from test_removals_gated import ROOT, TASK_FILES, module_of, tasks_in

# The roles that need directories (the prefix, config, sysctl.d, udev rules, rustup's parent, state).
MAKERS = {"alumet_agent", "alumet_config", "alumet_sysctl", "install_record", "powercap", "prereqs", "rustup"}


def all_tasks() -> list[tuple[str, dict[str, Any]]]:
    return [(str(path.relative_to(ROOT / "roles")), task) for path in TASK_FILES
            for task, _inherited in tasks_in(yaml.safe_load(path.read_text(encoding="utf-8")))]


TASKS = all_tasks()


def makes_a_directory(task: dict[str, Any]) -> bool:
    """A module that makes or adjusts a directory in place (tempfile makes a new private one: not these)."""
    module, args = module_of(task)
    if not isinstance(args, dict) or module == "tempfile":
        return False
    return args.get("state") == "directory" or (module == "file" and bool(args.get("recurse")))


def imports_directories(task: dict[str, Any]) -> bool:
    args = task.get("ansible.builtin.import_role") or task.get("ansible.builtin.include_role") or {}
    return isinstance(args, dict) and args.get("name") == "alumet_common" and args.get("tasks_from") == "directories"


def test_the_enumeration_finds_directory_making_tasks() -> None:
    assert makes_a_directory({"ansible.builtin.file": {"path": "/etc/x", "state": "directory", "mode": "0755"}})
    assert makes_a_directory({"file": {"path": "/etc/x", "recurse": True, "owner": "root"}})
    assert not makes_a_directory({"ansible.builtin.tempfile": {"state": "directory"}})
    assert len(TASKS) > 200


def test_no_role_makes_a_directory_but_through_directories_yml() -> None:
    offenders = [f"{where}: {task['name']}" for where, task in TASKS if makes_a_directory(task)]
    assert offenders == [], (
        "these make a directory with state: directory, which chowns and chmods one the host has; import "
        "alumet_common tasks_from: directories (alumet_common_dirs) instead")


def test_each_role_that_needs_a_directory_goes_through_the_guard() -> None:
    users = {where.split("/", 1)[0] for where, task in TASKS if imports_directories(task)}
    assert users == MAKERS
    for where, task in TASKS:
        if imports_directories(task):
            assert (task.get("vars") or {}).get("alumet_common_dirs"), f"{where}: {task['name']}: no alumet_common_dirs"


def test_the_guard_never_chowns_nor_chmods_what_is_there() -> None:
    """directories.yml itself: one call of alumet_created phase mkdir (os.mkdir, then chown and chmod of
    what it made), no file module."""
    guard = yaml.safe_load((ROOT / "roles/alumet_common/tasks/directories.yml").read_text(encoding="utf-8"))
    modules = [module_of(task)[0] or next(iter(task.keys() - {"name", "register", "vars", "when"})) for task in guard]
    assert modules == ["alumet_created", "set_fact"]
    assert guard[0]["alumet_created"]["phase"] == "mkdir"
