#!/usr/bin/python
"""/proc mount options and the fstab's /proc line: one parser for doctor and the hidepid role.

Used by doctor (procfs.hidepid, through alumet_setup.doctor.mounts) and, unchanged, as the Ansible module
`alumet_proc_fstab` of the hidepid role (roles/hidepid/library links here), so the role edits exactly the
line doctor judges. Hence: standard library only at module level, Python 3.8 compatible (Ubuntu 22.04
targets); AnsibleModule is imported in main() only, where Ansible runs it (it bundles that import).
"""
from __future__ import annotations  # annotations stay strings: Python 3.8 targets run this file

import os
import re
import shutil
import stat
import tempfile
from typing import Any

DOCUMENTATION = r"""
module: alumet_proc_fstab
short_description: Set the /proc line of /etc/fstab for a hidepid policy, safely
description:
  - Reads the live /proc options and the /proc line of the fstab, computes the options a hidepid policy
    needs and rewrites only that line (or adds one), atomically.
  - The fstab is verified with C(findmnt --verify --tab-file) before anything is changed (an invalid fstab
    is refused), the candidate is verified before it replaces the fstab, and the fstab is verified again
    afterwards (the previous content is restored on failure). The first edit keeps a backup copy.
  - A symlinked fstab stays a link: the edit goes to the regular file it points to (replaced atomically in
    that file's directory, with that file's mode and owner); a link to anything else is refused.
  - restore puts the backup's content back the same way, only when nothing but /proc lines changed since
    the backup was made, then removes the backup.
  - Returns the options a live remount needs (empty when /proc already matches); it never remounts.
options:
  policy:
    description: keep (change nothing), exempt-group (keep the hidepid level, add gid=), disable (drop hidepid and gid).
    type: str
    choices: [keep, exempt-group, disable]
  restore:
    description: Put the backup back (only /proc lines may differ), remove it; policy is then not used.
    type: bool
    default: false
  gid:
    description: Group exempted from hidepid (exempt-group). May be missing in check mode only.
    type: int
  fstab:
    description: The fstab to edit.
    type: path
    default: /etc/fstab
  backup:
    description: Copy of the fstab's content kept before the first edit (created new, never overwritten).
    type: path
    default: /etc/fstab.alumet-setup.bak
  mounts:
    description: Where the live mount table is read.
    type: path
    default: /proc/self/mounts
"""

RETURN = r"""
hidepid: {description: The hidepid level in force or wanted (0..4, null when none), type: int}
live_options: {description: Options of the mounted /proc, type: str}
fstab_line: {description: The /proc line of the fstab after the change (null when none), type: str}
remount_options:
  description: Options for mount -o remount,OPTIONS /proc; empty when the live /proc already matches.
  type: str
backup_file: {description: The backup copy, when this run made it, type: str}
restored_options: {description: restore only: the /proc options of the restored fstab ("" when none), type: str}
"""

# hidepid names (Linux >= 5.8) and numbers are the same levels (proc(5)).
LEVELS = {"off": 0, "noaccess": 1, "invisible": 2, "ptraceable": 4}
PROC = "/proc"

_OCTAL = re.compile(r"\\([0-7]{3})")


def unescape(field: str) -> str:
    r"""The kernel and fstab(5) write space, tab, newline and backslash as \040 \011 \012 \134."""
    return _OCTAL.sub(lambda m: chr(int(m[1], 8)), field)


def parse_options(text: str) -> dict:
    """'rw,nosuid,hidepid=invisible,gid=998' -> {'rw': None, 'nosuid': None, 'hidepid': 'invisible', ...}.

    A later duplicate wins, as it does for the kernel's option parser.
    """
    options: dict = {}
    for item in text.split(","):
        if item:
            key, sep, value = item.partition("=")
            options[key] = value if sep else None
    return options


def level(value: str | None) -> int | None:
    """A hidepid= value as its level number (names and numbers alike); None when absent or unknown."""
    if value is None:
        return None
    value = value.strip()
    if value in LEVELS:
        return LEVELS[value]
    return int(value) if value.isdigit() else None


def is_proc_line(line: str) -> bool:
    """Whether an fstab line mounts something on /proc: its mount point is /proc, whatever its type.

    mount(8) finds an fstab entry by its mount point (libmount searches the fstab forward, so the first
    such line is the one `mount /proc` and `mount -o remount /proc` apply, and systemd-remount-fs applies
    at boot); a proc line mounted elsewhere is another proc instance, with its own options since Linux 5.8.
    """
    fields = line.split()
    return len(fields) >= 3 and not fields[0].startswith("#") and unescape(fields[1]) == PROC


def proc_lines(lines: list) -> list:
    """Indexes of the fstab lines that mount on /proc; the first is the one in force."""
    return [i for i, line in enumerate(lines) if is_proc_line(line)]


def set_options(opts: list[str], drop: tuple[str, ...], add: list[str]) -> str:
    out = [o for o in opts if o.partition("=")[0] not in drop] + add
    return ",".join(out) if out else "defaults"


def option_list(text: str) -> list:
    """The options in their order, duplicates kept: what a rewrite keeps of a line."""
    return [o for o in text.split(",") if o]


def live_proc(path: str) -> str:
    options = ""
    with open(path, encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 4 and fields[1] == PROC and fields[2] == "proc":
                options = fields[3]  # the last one is the visible mount
    return options


def rewrite(line: str, options: str) -> str:
    body, nl = (line[:-1], "\n") if line.endswith("\n") else (line, "")
    tokens = re.split(r"(\s+)", body.strip())
    if len(tokens) >= 7:
        tokens[6] = options
    else:
        tokens += ["\t", options, "\t", "0", "\t", "0"]
    lead = body[: len(body) - len(body.lstrip())]
    return lead + "".join(tokens) + nl


class FstabError(Exception):
    """Why the fstab (or its backup) cannot be written safely: the module's one-line failure."""


def regular_target(path: str) -> str:
    """The file an edit of `path` must write: `path` itself, or the regular file a symlink resolves to.

    A link is followed deliberately, so that it survives the edit (replacing it would turn the host's link
    into a copy); a dangling link, or a path to a directory, FIFO, device or socket, is refused.
    """
    target = os.path.realpath(path) if os.path.islink(path) else path
    try:
        st = os.stat(target)
    except FileNotFoundError:
        if target != path:
            raise FstabError(f"{path} is a symlink to {target}, which does not exist: refusing to create it") from None
        return path  # a new fstab
    if not stat.S_ISREG(st.st_mode):
        what = f"{path} (a symlink to {target})" if target != path else path
        raise FstabError(f"{what} is not a regular file: refusing to write it")
    return target


def replace_content(path: str, text: str) -> None:
    """Write `text` to the regular file `path` atomically: a new file in its directory, given its mode and
    owner (0644 root for a new one), renamed over it. A link to `path` is left as it is."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".fstab.alumet-setup.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        if os.path.exists(path):
            st = os.stat(path)
            os.chown(tmp, st.st_uid, st.st_gid)
            shutil.copystat(path, tmp)
        else:
            os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


def write_backup(path: str, text: str) -> None:
    """Create `path` with `text`, 0600: O_EXCL|O_NOFOLLOW, so an existing file or link is never written."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise FstabError(f"{path} is in the way (a link or a file appeared): refusing to write the backup") from None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def without_proc_lines(text: str) -> list:
    """The lines of an fstab with its /proc lines blanked: what a restore requires unchanged."""
    return ["" if is_proc_line(line) else line for line in text.splitlines()]


def main() -> None:
    from ansible.module_utils.basic import AnsibleModule

    module = AnsibleModule(
        argument_spec={
            "policy": {"type": "str", "choices": ["keep", "exempt-group", "disable"]},
            "restore": {"type": "bool", "default": False},
            "gid": {"type": "int"},
            "fstab": {"type": "path", "default": "/etc/fstab"},
            "backup": {"type": "path", "default": "/etc/fstab.alumet-setup.bak"},
            "mounts": {"type": "path", "default": "/proc/self/mounts"},
        },
        required_if=[("restore", False, ("policy",))],
        supports_check_mode=True,
    )
    try:
        run(module)
    except FstabError as error:
        module.fail_json(msg=str(error))


def run(module: Any) -> None:
    p = module.params
    policy, gid, fstab = p["policy"], p["gid"], p["fstab"]
    findmnt = module.get_bin_path("findmnt", required=True)

    def verify(path: str) -> tuple[bool, str]:
        rc, out, err = module.run_command([findmnt, "--verify", "--tab-file", path])
        return rc == 0, (out + err).strip()

    target = regular_target(fstab)
    if p["restore"]:
        restore(module, fstab, target, p["backup"], verify)
        return

    live = live_proc(p["mounts"])
    live_keyed = parse_options(live)
    live_level, live_gid = level(live_keyed.get("hidepid")), live_keyed.get("gid")

    exists = os.path.exists(target)
    before = ""
    if exists:
        ok, report = verify(target)
        if not ok:
            module.fail_json(msg=f"{fstab} is already invalid, refusing to edit it (findmnt --verify): {report}")
        with open(target, encoding="utf-8") as f:
            before = f.read()
    lines = before.splitlines(keepends=True)
    idx = proc_lines(lines)
    fstab_fields = lines[idx[0]].split() if idx else []
    fstab_opts = fstab_fields[3] if len(fstab_fields) >= 4 else ("defaults" if idx else None)
    fstab_level = level(parse_options(fstab_opts).get("hidepid")) if fstab_opts else None

    result = {"changed": False, "live_options": live, "remount_options": "", "hidepid": None, "fstab_line": None}
    new_opts = None
    msg = []
    if policy == "keep":
        msg.append("policy keep: /proc and the fstab are left as they are")
        result["hidepid"] = fstab_level if fstab_level is not None else live_level
    elif policy == "disable":
        if fstab_opts is not None:
            keyed = parse_options(fstab_opts)
            if keyed.get("hidepid") is not None or keyed.get("gid") is not None:
                new_opts = set_options(option_list(fstab_opts), ("hidepid", "gid"), [])
        if live_level not in (None, 0):
            result["remount_options"] = "hidepid=0"
        result["hidepid"] = 0
    else:
        wanted = fstab_level if fstab_level is not None else live_level
        result["hidepid"] = wanted
        if wanted in (None, 0):
            msg.append("hidepid is not in use here: every process is visible, no exemption needed")
        else:
            gid_text = str(gid) if gid is not None else None
            if gid_text is None and not module.check_mode:
                module.fail_json(msg="policy exempt-group needs the group's gid")
            want = [f"hidepid={wanted}", f"gid={gid_text if gid_text is not None else '<new group>'}"]
            if fstab_opts is None:
                new_opts = set_options(["defaults"], (), want)
            else:
                keyed = parse_options(fstab_opts)
                if level(keyed.get("hidepid")) != wanted or keyed.get("gid") != gid_text:
                    new_opts = set_options(option_list(fstab_opts), ("hidepid", "gid"), want)
            if live_level != wanted or live_gid != gid_text:
                result["remount_options"] = ",".join(want)

    after = before
    # Every /proc line is rewritten: each must be a proc mount (hidepid= means nothing to another type).
    other = [lines[i].split()[2] for i in idx if lines[i].split()[2] != "proc"]
    if new_opts is not None and other:
        module.fail_json(msg=f"{fstab} mounts {other[0]} on /proc, not proc: refusing to give it /proc options")
    if new_opts is not None:
        if idx:
            for i in idx:
                lines[i] = rewrite(lines[i], new_opts)
        else:
            if lines and not lines[-1].endswith("\n"):
                lines[-1] += "\n"
            lines.append(f"proc\t/proc\tproc\t{new_opts}\t0\t0\n")
        after = "".join(lines)
    if after != before:
        result["changed"] = True
        result["diff"] = {"before": before, "after": after, "before_header": fstab, "after_header": fstab}
        msg.append(f"{fstab}: /proc options {fstab_opts or '(no /proc line)'} -> {new_opts}")
        if not module.check_mode:
            with tempfile.TemporaryDirectory(prefix="alumet-setup-fstab.") as scratch:
                candidate = os.path.join(scratch, "fstab")
                with open(candidate, "w", encoding="utf-8") as f:
                    f.write(after)
                ok, report = verify(candidate)
            if not ok:
                module.fail_json(msg=f"the new {fstab} would be invalid, left unchanged (findmnt --verify): {report}")
            if exists and not os.path.lexists(p["backup"]):
                write_backup(p["backup"], before)
                result["backup_file"] = p["backup"]
            elif exists and (os.path.islink(p["backup"]) or not os.path.isfile(p["backup"])):
                raise FstabError(f"{p['backup']} is not a regular file: refusing to edit {fstab} without a backup")
            replace_content(target, after)
            ok, report = verify(target)
            if not ok:
                replace_content(target, before)
                module.fail_json(msg=f"{fstab} failed findmnt --verify after the edit and was restored: {report}")
    cur = proc_lines(after.splitlines())
    result["fstab_line"] = after.splitlines()[cur[0]] if cur else None
    result["msg"] = "; ".join(msg) if msg else f"{fstab} already matches policy {policy}"
    module.exit_json(**result)




def restore(module: Any, fstab: str, target: str, backup: str, verify: Any) -> None:
    """Put the backup's content back into the fstab (its link's target), then remove the backup."""
    result: dict = {"changed": False, "restored_options": ""}
    if not os.path.lexists(backup):
        module.exit_json(msg=f"no backup {backup}: {fstab} is left as it is", **result)
    if os.path.islink(backup) or not os.path.isfile(backup):
        raise FstabError(f"{backup} is not a regular file: refusing to restore {fstab} from it")
    with open(backup, encoding="utf-8") as f:
        saved = f.read()
    current = ""
    if os.path.exists(target):
        with open(target, encoding="utf-8") as f:
            current = f.read()
    if without_proc_lines(current) != without_proc_lines(saved):
        module.fail_json(msg=f"hidepid: {fstab} changed beyond its /proc line since alumet-setup saved {backup}; "
                             "restoring the backup would undo those changes, so it is left as is: put the backup's "
                             "/proc line back by hand, then remove the backup", **result)
    ok, report = verify(backup)
    if not ok:
        raise FstabError(f"{backup} fails findmnt --verify, {fstab} is left as it is: {report}")
    saved_lines = saved.splitlines()
    found = proc_lines(saved_lines)
    fields = saved_lines[found[0]].split() if found else []
    result["restored_options"] = fields[3] if len(fields) >= 4 and fields[2] == "proc" else ""
    result["changed"] = True
    if current != saved:
        result["diff"] = {"before": current, "after": saved, "before_header": fstab, "after_header": fstab}
    if not module.check_mode:
        if current != saved:
            replace_content(target, saved)
        os.unlink(backup)
    module.exit_json(msg=f"{fstab} restored from {backup}", **result)


if __name__ == "__main__":
    main()
