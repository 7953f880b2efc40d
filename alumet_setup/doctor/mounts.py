"""Parsers for /proc/self/mountinfo and /etc/fstab, shared by the agent and hidepid checks.

Kept out of the check modules: importing one check module from another would register its checks
early and change the report's order.
"""

from __future__ import annotations

from dataclasses import dataclass

# The option parser and the fstab's /proc rule are shared with the hidepid role's module.
from ..hostside.proc_fstab import parse_options, unescape


@dataclass(frozen=True)
class Mount:
    mount_point: str
    fstype: str
    source: str
    mount_options: dict[str, str | None]  # per mount point: ro, nosuid, nodev, noexec, relatime...
    super_options: dict[str, str | None]  # per superblock: where proc's hidepid=, gid=, subset= live

    def has(self, option: str) -> bool:
        return option in self.mount_options or option in self.super_options


def parse_mountinfo(text: str) -> list[Mount]:
    """proc(5) mountinfo: 'ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS'."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        sep = fields.index("-")  # optional fields vary in number: the lone '-' ends them
        if sep < 6 or len(fields) < sep + 3:
            continue
        mounts.append(Mount(
            mount_point=unescape(fields[4]),
            fstype=fields[sep + 1],
            source=unescape(fields[sep + 2]),
            mount_options=parse_options(fields[5]),
            super_options=parse_options(fields[sep + 3]) if len(fields) > sep + 3 else {},
        ))
    return mounts


def mount_at(mounts: list[Mount], mount_point: str) -> Mount | None:
    """The mount visible at `mount_point`: the last one listed, since later mounts stack on top."""
    found = None
    for mount in mounts:
        if mount.mount_point == mount_point:
            found = mount
    return found


def mount_of(mounts: list[Mount], path: str) -> Mount | None:
    """The mount holding `path` (already resolved): longest mount point that is a path prefix of it."""
    best: Mount | None = None
    for mount in mounts:
        point = mount.mount_point
        inside = point == "/" or path == point or path.startswith(point.rstrip("/") + "/")
        # >= so that a later mount on the same point (stacked on top) wins.
        if inside and (best is None or len(point) >= len(best.mount_point)):
            best = mount
    return best


@dataclass(frozen=True)
class FstabEntry:
    spec: str
    file: str
    vfstype: str
    options: dict[str, str | None]


def parse_fstab(text: str) -> list[FstabEntry]:
    """fstab(5): whitespace-separated fields, '#' comments, octal escapes in fields."""
    entries = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) < 3:
            continue
        options = parse_options(unescape(fields[3])) if len(fields) > 3 else {"defaults": None}
        entries.append(FstabEntry(unescape(fields[0]), unescape(fields[1]), fields[2], options))
    return entries
