#!/usr/bin/python
"""/proc mount options and the fstab's /proc line: one parser for doctor and the hidepid role.

Used by doctor (procfs.hidepid, through alumet_setup.mounts) and, unchanged, as the Ansible module
`alumet_proc_fstab` of the hidepid role (roles/hidepid/library links here), so the role edits exactly the
line doctor judges. Hence: standard library only at module level, Python 3.8 compatible (Ubuntu 22.04
targets); AnsibleModule is imported in main() only, where Ansible runs it (it bundles that import).
"""
from __future__ import annotations  # annotations stay strings: Python 3.8 targets run this file

import os
import re
import shutil
import tempfile

DOCUMENTATION = r"""
module: alumet_proc_fstab
short_description: Set the /proc line of /etc/fstab for a hidepid policy, safely
description:
  - Reads the live /proc options and the /proc line of the fstab, computes the options a hidepid policy
    needs and rewrites only that line (or adds one), atomically.
  - The fstab is verified with C(findmnt --verify --tab-file) before anything is changed (an invalid fstab
    is refused), the candidate is verified before it replaces the fstab, and the fstab is verified again
    afterwards (the previous content is restored on failure). The first edit keeps a backup copy.
  - Returns the options a live remount needs (empty when /proc already matches); it never remounts.
options:
  policy:
    description: keep (change nothing), exempt-group (keep the hidepid level, add gid=), disable (drop hidepid and gid).
    type: str
    choices: [keep, exempt-group, disable]
    required: true
  gid:
    description: Group exempted from hidepid (exempt-group). May be missing in check mode only.
    type: int
  fstab:
    description: The fstab to edit.
    type: path
    default: /etc/fstab
  backup:
    description: Copy of the fstab kept before the first edit (never overwritten).
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


def main() -> None:
    from ansible.module_utils.basic import AnsibleModule

    module = AnsibleModule(
        argument_spec={
            "policy": {"type": "str", "required": True, "choices": ["keep", "exempt-group", "disable"]},
            "gid": {"type": "int"},
            "fstab": {"type": "path", "default": "/etc/fstab"},
            "backup": {"type": "path", "default": "/etc/fstab.alumet-setup.bak"},
            "mounts": {"type": "path", "default": "/proc/self/mounts"},
        },
        supports_check_mode=True,
    )
    p = module.params
    policy, gid, fstab = p["policy"], p["gid"], p["fstab"]
    findmnt = module.get_bin_path("findmnt", required=True)

    def verify(path: str) -> tuple[bool, str]:
        rc, out, err = module.run_command([findmnt, "--verify", "--tab-file", path])
        return rc == 0, (out + err).strip()

    live = live_proc(p["mounts"])
    live_keyed = parse_options(live)
    live_level, live_gid = level(live_keyed.get("hidepid")), live_keyed.get("gid")

    exists = os.path.exists(fstab)
    before = ""
    if exists:
        ok, report = verify(fstab)
        if not ok:
            module.fail_json(msg=f"{fstab} is already invalid, refusing to edit it (findmnt --verify): {report}")
        with open(fstab, encoding="utf-8") as f:
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
            if exists and not os.path.exists(p["backup"]):
                shutil.copy2(fstab, p["backup"])
                result["backup_file"] = p["backup"]
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(fstab), prefix=".fstab.alumet-setup.")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(after)
            ok, report = verify(tmp)
            if not ok:
                os.unlink(tmp)
                module.fail_json(msg=f"the new {fstab} would be invalid, left unchanged (findmnt --verify): {report}")
            if exists:
                shutil.copystat(fstab, tmp)
            else:
                os.chmod(tmp, 0o644)
            module.atomic_move(tmp, fstab)
            ok, report = verify(fstab)
            if not ok:
                fd, tmp = tempfile.mkstemp(dir=os.path.dirname(fstab), prefix=".fstab.alumet-setup.")
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(before)
                module.atomic_move(tmp, fstab)
                module.fail_json(msg=f"{fstab} failed findmnt --verify after the edit and was restored: {report}")
    cur = proc_lines(after.splitlines())
    result["fstab_line"] = after.splitlines()[cur[0]] if cur else None
    result["msg"] = "; ".join(msg) if msg else f"{fstab} already matches policy {policy}"
    module.exit_json(**result)


if __name__ == "__main__":
    main()
