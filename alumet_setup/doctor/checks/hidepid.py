"""/proc mount options that hide processes from the procfs plugin (hidepid=, subset=pid)."""

from __future__ import annotations

import shlex

from ... import paths
from ...hostside.proc_fstab import LEVELS, proc_lines
from ...hostside.ptrace_need import hidepid_reason
from ...targets.hosts import Host
from ..findings import Context, Finding, Status, check
from ..mounts import FstabEntry, mount_at, parse_fstab, parse_mountinfo

# proc(5): numbers on kernels before 5.8, names since (mountinfo then shows the names).
HIDEPID_NAMES = {str(number): name for name, number in LEVELS.items()}


def hidepid_mode(options: dict[str, str | None]) -> str:
    """'off', 'noaccess', 'invisible' or 'ptraceable' from a /proc mount's options."""
    value = options.get("hidepid") or "off"
    return HIDEPID_NAMES.get(value, value)


def proc_options(options: dict[str, str | None]) -> dict[str, object]:
    gid = options.get("gid")
    return {"hidepid": hidepid_mode(options), "gid": int(gid) if gid and gid.isdigit() else None,
            "subset": options.get("subset")}


def group_gid(host: Host, group: str) -> int | None:
    """The group's gid from the host's /etc/group (getent would ask this machine's NSS, not the host's)."""
    for line in (host.read_text("/etc/group") or "").splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and fields[0] == group and fields[2].isdigit():
            return int(fields[2])
    return None


def exemption(opts: dict[str, object], alumet_gid: int | None, has_ptrace: bool) -> str | None:
    """Why the agent would see every process under these options; None when it would not.

    In the kernel's has_pid_permissions(), hidepid=ptraceable ignores gid=: only ptrace access counts
    (ptrace_need.hidepid_reason, which the capabilities role shares, decides when gid= is enough).
    """
    if opts["hidepid"] == "off":
        return "hidepid off"
    if has_ptrace:
        return "cap_sys_ptrace"
    gid = opts["gid"]
    if hidepid_reason({"hidepid": str(opts["hidepid"]), "gid": None if gid is None else str(gid)}, alumet_gid) is None:
        return "gid"
    return None


def boot_entry(fstab: str) -> FstabEntry | None:
    """The fstab line that mounts /proc at boot, chosen as the hidepid role chooses the line it edits."""
    lines = fstab.splitlines()
    found = proc_lines(lines)
    return parse_fstab(lines[found[0]])[0] if found else None


@check("procfs.hidepid", "/proc hidepid", needs=("agent.capabilities",))
def hidepid(ctx: Context) -> Finding:
    host = ctx.host
    group = ctx.options.proc_group
    proc = mount_at(parse_mountinfo(host.read_text("/proc/self/mountinfo") or ""), "/proc")
    if proc is None:
        return Finding(Status.ERROR, "no /proc mount in /proc/self/mountinfo")
    live = proc_options(proc.super_options)
    fstab_entry = boot_entry(host.read_text("/etc/fstab") or "")
    # No proc line: systemd mounts /proc with the defaults at boot.
    boot = proc_options(fstab_entry.options if fstab_entry else {})
    alumet_gid = group_gid(host, group)
    has_ptrace = bool(ctx.data("agent.capabilities", "has_ptrace", False))
    live_exempt = exemption(live, alumet_gid, has_ptrace)
    boot_exempt = exemption(boot, alumet_gid, has_ptrace)
    data = {"live": live, "fstab": {**boot, "present": fstab_entry is not None}, "group": group,
            "group_gid": alumet_gid, "exempt_by": live_exempt, "exempt_at_boot_by": boot_exempt}

    # subset=pid removes /proc/stat, /proc/meminfo and the rest that the procfs plugin reads.
    if live["subset"] == "pid":
        return Finding(Status.FAIL, "/proc is mounted with subset=pid: /proc/stat and /proc/meminfo are hidden",
                       fix="sudo mount -o remount,subset= /proc  # and drop subset=pid from /etc/fstab",
                       install_step="hidepid", data=data)

    level = live["hidepid"] if live["hidepid"] in ("noaccess", "invisible") else "invisible"
    gid = str(alumet_gid) if alumet_gid is not None else f"$(getent group {shlex.quote(group)} | cut -d: -f3)"
    create = [] if alumet_gid is not None else [f"sudo groupadd --system {shlex.quote(group)}"]
    remount = [*create, f"sudo mount -o remount,hidepid={level},gid={gid} /proc"]
    if live_exempt is None:
        detail = (f"{_show(live)}: other users' processes are invisible to the agent ({group} group "
                  + (f"gid {alumet_gid}" if alumet_gid is not None else "missing") + ", no cap_sys_ptrace)")
        if boot_exempt is not None and fstab_entry is not None:
            # /etc/fstab is right, the live mount is not: a remount reapplies fstab's options.
            return Finding(Status.FAIL, detail + "; /etc/fstab is fine", fix="sudo mount -o remount /proc",
                           install_step="hidepid", data=data)
        fix = remount if fstab_entry is None else [*remount, _fstab_fix(fstab_entry, level, gid)]
        return Finding(Status.FAIL, detail, fix=fix, install_step="hidepid", data=data)
    if boot_exempt is None and fstab_entry is not None:
        return Finding(Status.WARN, f"exempt now ({live_exempt}), but /etc/fstab mounts /proc with {_show(boot)} "
                       "at boot", fix=[*create, _fstab_fix(fstab_entry, level, gid)], install_step="hidepid", data=data)
    return Finding(Status.OK, _show(live) + ("" if live_exempt == "hidepid off" else f", exempt by {live_exempt}"),
                   data=data)


def _show(opts: dict[str, object]) -> str:
    return f"hidepid={opts['hidepid']}" + (f",gid={opts['gid']}" if opts["gid"] is not None else "")


def _fstab_fix(entry: FstabEntry, level: str, gid: str) -> str:
    """Rewrite the options field of fstab's /proc line, keeping its other options (backup kept)."""
    kept = [k if v is None else f"{k}={v}" for k, v in entry.options.items() if k not in ("hidepid", "gid")]
    options = ",".join([*kept, f"hidepid={level}", f"gid={gid}"])
    # Double quotes so that a $(getent ...) gid expands; the pattern holds no other shell syntax.
    script = ("s|^([[:space:]]*[^#[:space:]]+[[:space:]]+/proc[[:space:]]+[^[:space:]]+[[:space:]]+)"
              f"[^[:space:]]+|\\1{options}|")
    # --follow-symlinks: a symlinked fstab stays a link (plain -i would replace it with a copy).
    return f'sudo sed --follow-symlinks -i{paths.FSTAB_BACKUP_SUFFIX} -E "{script}" /etc/fstab'
