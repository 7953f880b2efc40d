"""The formats and ranges of the role settings that an argument spec cannot say: the one copy.

An argument spec (roles/*/meta/argument_specs.yml) gives each setting its type, default and choices; this
table adds what it cannot: integer bounds (RANGES) and the text a string must match (FORMATS). Three
readers share it:
- `install --set` (settings.py), before anything runs;
- every role's preflight, through the filter below (roles/alumet_common/filter_plugins and the collection's
  plugins/filter link here; alumet_common's tasks/settings.yml calls it), so a playbook of the roles alone
  refuses what the CLI refuses and accepts what it accepts;
- doctor, reading the install record (choices.py).
It loads nothing of the project and nothing outside the standard library: the wheel's copy of the filter
runs as it is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# Bounds: name -> (lowest, highest), inclusive.
RANGES: dict[str, tuple[int, int]] = {
    "perf_paranoid_value": (-1, 4),  # kernel values; 4 is Ubuntu's patched default (docs/alumet-upstream.md)
    "prereqs_apt_cache_valid_time": (0, 2**31 - 1),
    "prereqs_apt_lock_timeout": (0, 86400),
    "alumet_agent_build_timeout": (1, 7 * 86400),  # seconds
    "alumet_agent_poll_interval": (1, 3600),
}

# A user or group name every supported useradd/groupadd takes without a "bad name" override, and that
# systemd's User=/Group= and /etc/group read as it is: no capitals, no dot, at most 32 characters.
_LINUX_NAME = r"[a-z_][a-z0-9_-]{0,31}"
# cargo install --git takes a URL only: a bare path or git's scp-like user@host:path is "relative URL
# without a base" to it (and the role finds its install again by that URL in cargo's .crates2.json).
_GIT_URL = r"(?:(?:https?|ssh|git)://[^\s/?#]+|file://)\S*"
_HTTP_URL = r"https?://[^\s/?#]+\S*"
_REF = r"[A-Za-z0-9_][A-Za-z0-9_./+-]{0,127}"  # a git tag/branch or toolchain: no leading '-'

# name -> (what it must be, the pattern the whole text matches). Lists: every item; dicts: every key.
FORMATS: dict[str, tuple[str, str]] = {
    **{name: ("a Linux group or user name (lowercase letters, digits, '_', '-'; at most 32)", _LINUX_NAME)
       for name in ("alumet_group_name", "alumet_group_members", "hidepid_group", "powercap_group",
                    "alumet_service_user", "alumet_service_group")},
    "alumet_agent_git_url": ("a git URL cargo accepts (https://, http://, ssh://, git:// or file://)", _GIT_URL),
    "rustup_update_root": ("an https:// or http:// URL", _HTTP_URL),
    **{name: ("an https:// or http:// URL, or empty", f"(?:{_HTTP_URL})?")
       for name in ("rustup_mirror", "rustup_dist_server")},
    "alumet_agent_version": ("a git tag or branch name", _REF),
    "rustup_toolchain": ("a toolchain name such as 1.89 or stable", _REF),
    "alumet_agent_environment": ("an environment variable name", r"[A-Za-z_][A-Za-z0-9_]*"),
}

_COMPILED = {name: re.compile(pattern) for name, (_, pattern) in FORMATS.items()}


def problem(name: str, value: Any) -> str | None:
    """Why `value` does not fit setting `name` (one line, the value ascii-escaped), or None when it fits
    or the table says nothing of the setting."""
    bounds = RANGES.get(name)
    if bounds is not None:
        low, high = bounds
        if not isinstance(value, int) or isinstance(value, bool):
            return f"{value!a} is not an integer"
        if not low <= value <= high:
            return f"must be between {low} and {high}"
    fmt = FORMATS.get(name)
    if fmt is not None:
        items = list(value) if isinstance(value, (dict, list, tuple)) else [value]
        for item in items:
            if not isinstance(item, str) or _COMPILED[name].fullmatch(item) is None:
                return f"{item!a} is not {fmt[0]}"
    return None


def fits(name: str, value: Any) -> bool:
    """`value` fits setting `name` (doctor's reading of the install record)."""
    return problem(name, value) is None


def alumet_setting_errors(settings: Mapping[str, Any]) -> list[str]:
    """The filter: {name: value} -> ["name: why", ...] for those that do not fit; [] when all do."""
    errors = []
    for name, value in dict(settings).items():
        # `-e name=3` gives the text "3": the argument spec's int, as Ansible's own validation reads it.
        if name in RANGES and isinstance(value, str) and re.fullmatch(r"\s*[-+]?[0-9]+\s*", value):
            value = int(value)
        # An INI inventory's `rustup_toolchain=1.95` is the float 1.95: the argument spec's `type: str`
        # turns it into the text "1.95", and so does this check, which runs before the spec's.
        if name in FORMATS and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        why = problem(str(name), value)
        if why is not None:
            errors.append(f"{name}={value!a}: {why}" if why.startswith("must") else f"{name}: {why}")
    return errors


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"alumet_setting_errors": alumet_setting_errors}
