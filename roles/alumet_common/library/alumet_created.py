#!/usr/bin/python
"""alumet_created: the record of what alumet-setup created on a host, in one call per phase.

A host's existing state is never alumet-setup's: uninstall removes only what install recorded as created.
This module keeps that record (tasks/track.yml and tasks/created.yml call it). One remote call replaces the
stat, getent, slurp and copy tasks it took before: every task costs a round trip, and tracking runs around
every step of install and uninstall.

The record is JSON, {"version": 1, "path": [...], "user": [...], "group": [...], "member": ["GROUP:USER"]}.
An unreadable or foreign file counts as an empty record: nothing is removed on its word.

Phases:
  read    return the record.
  before  return which of `track` are absent now (the caller keeps them for phase after).
  after   add to the record those of `absent` (phase before's answer) that are present now: the tasks in
          between created them.
  prune   drop from the record what is gone (uninstall, after its removals); an empty record is removed.
  mkdir   make each of `dirs` (parents first) that is absent, root:root 0755, and add it to the record at
          once; a directory already there is the host's and is not touched (Ansible's file module with
          state: directory would chown and chmod it: /tmp would lose its sticky bit). Something else at a
          path stops the run. The record's own directory (alumet-setup's state) is not recorded: rmdir.yml
          removes it when empty.
Check mode computes the same answer and writes nothing.
"""

from __future__ import annotations  # annotations stay strings: Python 3.8 targets run this file

import grp
import json
import os
import pwd
import stat
import tempfile

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: alumet_created
short_description: Read, check and update the record of what alumet-setup created on a host
options:
  phase: {description: read, before, after or prune (see the module's docstring), required: true, type: str}
  file: {description: The record, required: true, type: path}
  legacy_user_file: {description: An earlier release's record of the service user (merged, then removed), type: path}
  track: {description: "{path, user, group, member} lists the caller's tasks may create (phase before)", type: dict}
  absent: {description: Phase before's answer (phase after), type: dict}
  dirs: {description: The directories to make if absent, parents first (phase mkdir), type: list, elements: path}
"""

KINDS = ("path", "user", "group", "member")
MAX_RECORD_BYTES = 1 << 20  # far above any real record; a bigger file is not ours


def _empty() -> dict:
    return {kind: [] for kind in KINDS}


def _names(value: object) -> list:
    return sorted({v for v in value if isinstance(v, str)}) if isinstance(value, list) else []


def _read_regular(path: str) -> bytes | None:
    """The file's bytes when it is a regular file of bounded size; None when it is absent."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError:  # a symlink (ELOOP) or unreadable: not a record alumet-setup wrote
        return b""
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return b""
        return handle.read(MAX_RECORD_BYTES + 1)


def read_record(path: str, legacy_user_file: str | None) -> dict:
    record = _empty()
    data = _read_regular(path)
    if data and len(data) <= MAX_RECORD_BYTES:
        try:
            parsed = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            parsed = None
        if isinstance(parsed, dict) and parsed.get("version") == 1:
            record = {kind: _names(parsed.get(kind)) for kind in KINDS}
    legacy = _read_regular(legacy_user_file) if legacy_user_file else None
    if legacy and len(legacy) <= MAX_RECORD_BYTES:
        record["user"] = sorted(set(record["user"]) | set(legacy.decode("utf-8", "replace").split()))
    return record


def present(kind: str, name: str) -> bool:
    try:
        if kind == "path":
            os.lstat(name)
        elif kind == "user":
            pwd.getpwnam(name)
        elif kind == "group":
            grp.getgrnam(name)
        else:  # member, GROUP:USER: USER is in GROUP's member list
            group, _, user = name.partition(":")
            return user in grp.getgrnam(group).gr_mem
    except (KeyError, OSError, ValueError):  # ValueError: a NUL in a name
        return False
    return True


def _check_own_file(module: AnsibleModule, path: str) -> bool:
    """Whether the path holds a regular file; anything else there is the host's and stops the run."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(mode):
        module.fail_json(msg=f"alumet_created: {path} is not a regular file: alumet-setup keeps its record of "
                             "what it created there; move it away and run again")
    return True


def write_record(module: AnsibleModule, path: str, record: dict) -> None:
    """The record, replaced atomically; removed when it is empty."""
    exists = _check_own_file(module, path)
    if not any(record.values()):
        if exists:
            os.unlink(path)
        return
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        os.makedirs(directory, mode=0o755)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".created.")
    with os.fdopen(fd, "w") as handle:
        json.dump({"version": 1, **record}, handle, indent=4, sort_keys=True)
        handle.write("\n")
    os.chmod(tmp, 0o644)
    module.atomic_move(tmp, path)


def make_dirs(module: AnsibleModule, dirs: list) -> list:
    """The directories of `dirs` (and their parents) that were absent, each made root:root 0755 (none in
    check mode)."""
    made: list = []
    wanted: list = []
    for given in dirs:  # a missing parent is made (and recorded) first, as `mkdir -p` would
        path = os.path.normpath(given)
        chain = []
        while path not in ("/", "") and path not in chain:
            chain.insert(0, path)
            path = os.path.dirname(path)
        wanted += [p for p in chain if p not in wanted]
    for path in wanted:
        try:
            mode = os.stat(path).st_mode  # a link to a directory is the host's way to have one: kept
        except FileNotFoundError:
            mode = None
        except OSError as error:
            module.fail_json(msg=f"alumet_created: cannot look at {path}: {error.strerror}")
        if mode is not None:
            if not stat.S_ISDIR(mode):
                module.fail_json(msg=f"alumet_created: {path} is not a directory: alumet-setup does not replace "
                                     "what the host has there; move it away, or choose another path with --set")
            continue
        made.append(path)
        if module.check_mode:
            continue
        if os.path.lexists(path):  # a dangling link: the host's
            module.fail_json(msg=f"alumet_created: {path} is a symlink that leads nowhere: alumet-setup does not "
                                 "replace it; remove it, or choose another path with --set")
        try:
            os.mkdir(path, 0o700)  # fails on one made meanwhile: never adopted as ours
            os.chown(path, 0, 0)
            os.chmod(path, 0o755)  # not left to the umask
        except OSError as error:
            module.fail_json(msg=f"alumet_created: cannot make the directory {path}: {error.strerror}")
    return made


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "phase": {"type": "str", "required": True, "choices": ["read", "before", "after", "prune", "mkdir"]},
            "file": {"type": "path", "required": True},
            "legacy_user_file": {"type": "path"},
            "track": {"type": "dict", "default": {}},
            "absent": {"type": "dict", "default": {}},
            "dirs": {"type": "list", "elements": "path", "default": []},
        },
        supports_check_mode=True,
    )
    phase, path, legacy = module.params["phase"], module.params["file"], module.params["legacy_user_file"]
    record = read_record(path, legacy)
    if phase == "read":
        module.exit_json(changed=False, created=record, absent=_empty())
    if phase == "before":
        track = module.params["track"]
        absent = {kind: [n for n in _names(track.get(kind)) if not present(kind, n)] for kind in KINDS}
        module.exit_json(changed=False, created=record, absent=absent)

    if phase == "mkdir":
        made = make_dirs(module, module.params["dirs"])
        own = os.path.dirname(os.path.normpath(path))
        updated = {**record, "path": sorted(set(record["path"]) | {d for d in made if d != own})}
        if updated != record and not module.check_mode:
            write_record(module, path, updated)
        module.exit_json(changed=bool(made), made=made, created=updated, absent=_empty())
    if phase == "after":
        given = module.params["absent"]
        fresh = {kind: [n for n in _names(given.get(kind)) if present(kind, n)] for kind in KINDS}
        updated = {kind: sorted(set(record[kind]) | set(fresh[kind])) for kind in KINDS}
    else:  # prune
        updated = {kind: [n for n in record[kind] if present(kind, n)] for kind in KINDS}
    legacy_left = bool(legacy) and os.path.lexists(legacy)
    changed = updated != record
    if changed and not module.check_mode:
        write_record(module, path, updated)
        if legacy_left and _check_own_file(module, legacy):
            os.unlink(legacy)  # merged into the record just written
    module.exit_json(changed=changed, created=updated, absent=_empty())


if __name__ == "__main__":
    main()
