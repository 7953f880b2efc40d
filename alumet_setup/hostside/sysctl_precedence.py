#!/usr/bin/python
"""Which sysctl.d file sets a key at boot: systemd-sysctl's precedence, in one place.

Used by doctor (kernel.perf_event_paranoid, reading any Host) and, unchanged, as the Ansible module
`alumet_sysctl_precedence` of the alumet_sysctl role (roles/alumet_sysctl/library links here), so the
role refuses exactly the overrides doctor warns about. Hence: standard library only, Python 3.8
compatible (Ubuntu 22.04 targets), and an old-style module entry point (WANT_JSON) below.

The rules (systemd-sysctl(8), sysctl.d(5); docs/alumet-upstream.md): NAME.conf files from /etc/sysctl.d,
/run/sysctl.d, /usr/local/lib/sysctl.d, /usr/lib/sysctl.d (and /lib/sysctl.d where /lib is not merged
into /usr); a name in an earlier directory masks the same name in later ones (a link to /dev/null
masks and sets nothing); the surviving files are applied in byte order of their NAMES, so a later
name wins for the same key. /etc/sysctl.conf counts only through a link such as 99-sysctl.conf.
procps' `sysctl --system` differs (it reads /etc/sysctl.conf last); systemd-sysctl is what boots.
"""

from __future__ import annotations  # annotations stay strings: Python 3.8 targets run this file

import fnmatch
import json
import os
import posixpath
import sys
from typing import Any, NamedTuple

# WANT_JSON  (tells Ansible to hand this module its arguments as a JSON file)

SYSCTL_DIRS = ("/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d")
SPLIT_USR_DIR = "/lib/sysctl.d"  # read only where /lib is not merged into /usr


def normalize_key(key: str) -> str:
    """'kernel.perf_event_paranoid' and 'kernel/perf_event_paranoid' are one key (sysctl.d(5)):
    when the first separator is a dot, dots are separators and slashes are literal (swapped)."""
    key = key.strip()
    first = min((i for i in (key.find("."), key.find("/")) if i >= 0), default=-1)
    if first >= 0 and key[first] == ".":
        key = key.translate(str.maketrans("./", "/."))
    return key


def parse_sysctl(text: str) -> list[tuple]:
    """(normalized key, value) assignments of one sysctl.d file, in file order."""
    assignments = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        key, sep, value = line.partition("=")
        if not sep:
            continue
        key = key.strip()
        if key.startswith("-"):
            key = key[1:]  # '-' only says "ignore a failure to write it": it still sets the key
        if key.startswith("!"):
            continue  # excludes a key from a glob; sets nothing itself
        assignments.append((normalize_key(key), value.strip()))
    return assignments


def key_matches(pattern: str, key: str) -> bool:
    """An exact key, or a glob (systemd >= 245 accepts 'net.ipv4.conf.*.rp_filter')."""
    wanted = normalize_key(key)
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(wanted, pattern)
    return pattern == wanted


def _name_order(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


def candidates(host: Any) -> list[tuple[str, str]]:
    """(name, path) of every *.conf in the sysctl.d directories, in directory order (a name may repeat)."""
    dirs = list(SYSCTL_DIRS)
    if host.realpath("/lib") != "/usr/lib":
        dirs.append(SPLIT_USR_DIR)
    return [(name, directory + "/" + name) for directory in dirs for name in host.listdir(directory)
            if name.endswith(".conf")]


def sysctl_files(host: Any) -> list[str]:
    """The files systemd-sysctl applies at boot, in the order it applies them.

    `host` needs listdir, realpath and stat (hosts.Host, or LocalFiles below)."""
    chosen: dict[str, str | None] = {}
    for name, path in candidates(host):
        if name in chosen:
            continue
        if host.realpath(path) == "/dev/null":
            chosen[name] = None  # masks the name in later directories, sets nothing
            continue
        st = host.stat(path)
        if st is None or not st.is_file:
            continue  # a dangling link or a directory is skipped and masks nothing
        chosen[name] = path
    return [kept for name in sorted(chosen, key=_name_order) if (kept := chosen[name])]


class Setter(NamedTuple):
    file: str
    value: str

    @property
    def int_value(self) -> int | None:
        try:
            return int(self.value)
        except ValueError:
            return None


def boot_setters(host: Any, key: str) -> list[Setter]:
    """Every place that sets `key` at boot, in application order: the kernel command line
    (sysctl.KEY=, applied before init), then each sysctl.d file."""
    setters = []
    for word in (host.read_text("/proc/cmdline") or "").split():
        name, sep, value = word.partition("=")
        if sep and name.startswith("sysctl.") and key_matches(normalize_key(name[len("sysctl."):]), key):
            setters.append(Setter("/proc/cmdline", value))
    for path in sysctl_files(host):
        for assigned, value in parse_sysctl(host.read_text(path) or ""):
            if key_matches(assigned, key):
                setters.append(Setter(path, value))
    return setters


def overriding(setters: list[Setter], own_file: str, own_value: str | None = None) -> list[Setter]:
    """Setters applied after `own_file` (by name) with another value than `own_value` (default: the
    value own_file sets; any value when it sets none): they silently win over alumet-setup's file."""
    own_name = _name_order(posixpath.basename(own_file))
    if own_value is None:
        own = [s for s in setters if s.file == own_file]
        own_value = own[-1].value if own else None
    return [s for s in setters
            if s.file not in ("/proc/cmdline", own_file)
            and _name_order(posixpath.basename(s.file)) > own_name
            and s.value != own_value]


class _Stat(NamedTuple):
    is_file: bool


class LocalFiles:
    """The few host questions above, answered on the machine this runs on (module mode)."""

    def listdir(self, path: str) -> list[str]:
        try:
            return sorted(os.listdir(path))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def realpath(self, path: str) -> str:
        return os.path.realpath(path)

    def stat(self, path: str) -> _Stat | None:
        try:
            return _Stat(os.path.isfile(path)) if os.path.exists(path) else None
        except OSError:
            return None

    def read_text(self, path: str) -> str | None:
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                return handle.read()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None


def main() -> None:
    """Ansible module: arguments key, file[, value]; returns value, file, setters, overriding_files."""
    with open(sys.argv[1]) as handle:
        args = json.load(handle)
    try:
        setters = boot_setters(LocalFiles(), args["key"])
        wanted = args.get("value")
        later = overriding(setters, args["file"], None if wanted is None else str(wanted))
    except Exception as exc:  # report, as Ansible expects, rather than dump a traceback
        print(json.dumps({"failed": True, "msg": f"alumet_sysctl_precedence: {exc}"}))
        sys.exit(1)
    print(json.dumps({
        "changed": False,
        "value": setters[-1].value if setters else None,
        "file": setters[-1].file if setters else None,
        "setters": [s._asdict() for s in setters],
        "overriding_files": sorted({s.file for s in later}),
    }))


if __name__ == "__main__":
    main()
