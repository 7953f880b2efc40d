"""Does this host need cap_sys_ptrace on alumet-agent? One answer for doctor and the capabilities role.

Used by doctor (agent.capabilities) and, unchanged, as the capabilities role's filter plugin
`alumet_ptrace_reasons` (roles/capabilities/filter_plugins links here; it runs on the controller), so the
role grants cap_sys_ptrace exactly where doctor says it is needed. Hence: standard library only, and its
siblings (proc_fstab, alumet_schema) found in every form the project ships in (`_sibling`).

What the procfs plugin of alumet-agent v0.9.5 reads, and which of it is a ptrace access (docs/SECURITY.md,
"cap_sys_ptrace"): per process /proc/PID/stat and statm (memory_mode "quick"): no ptrace check;
/proc/PID/smaps_rollup (memory_mode "slow_but_accurate"): opening it needs PTRACE_MODE_READ on the
process; /proc/PID/exe (a watcher group's non-empty exe_regex): reading the link needs the same. Both
are refused for other users' processes without cap_sys_ptrace. hidepid hides other users' /proc/PID
unless the reader is in the mount's gid= group (ignored by hidepid=ptraceable) or holds cap_sys_ptrace.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any


def _sibling(name: str) -> ModuleType:
    """alumet_setup.hostside.<name>, from whichever form this file was loaded in:
    - as alumet_setup.hostside.ptrace_need (doctor, the CLI): the package's own module;
    - as a filter plugin through a link (the checkout's roles/ and plugins/, the installed collection, whose
      links ansible-galaxy keeps): the file beside the link's target;
    - as a filter plugin copied into the wheel (alumet_setup/_bundled/roles: a wheel has no links): the
      installed package, which the Python that runs ansible-playbook (the tool's own) imports by name.
    """
    if __name__.startswith("alumet_setup."):
        return importlib.import_module(f"alumet_setup.hostside.{name}")
    here = Path(__file__).resolve().parent
    if (here / f"{name}.py").is_file():
        # A package of their own (config_filter.py names it alike): dataclasses look their module up there.
        package = "_alumet_setup_beside_" + str(abs(hash(str(here))))
        if package not in sys.modules:
            module = types.ModuleType(package)
            module.__path__ = [str(here)]
            sys.modules[package] = module
        return importlib.import_module(f"{package}.{name}")
    try:
        return importlib.import_module(f"alumet_setup.hostside.{name}")
    except ImportError as error:
        raise ImportError(f"{Path(__file__).name} needs {name}.py: neither beside {Path(__file__).resolve()} "
                          f"nor the alumet_setup package is there ({error})") from error


# One parser of /proc mount options and hidepid levels (names since Linux 5.8, numbers before), the
# hidepid role's and doctor's.
_proc = _sibling("proc_fstab")
_LEVEL_NAMES = {number: name for name, number in _proc.LEVELS.items()}
SLOW = "slow_but_accurate"


def _plugin_enabled(table: Any) -> bool:
    """A `[plugins.X]` table is on unless `enabled`, else `enable`, says false (docs/alumet-upstream.md)."""
    return isinstance(table, Mapping) and table.get("enabled", table.get("enable", True)) is not False


def _sub_table_enabled(table: Any) -> bool:
    """procfs's sub-tables read `enabled` only: `enable` there is an unknown key, and the table stays on."""
    return isinstance(table, Mapping) and table.get("enabled", True) is not False


def _processes(doc: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The enabled `[plugins.procfs.processes]` table; {} for no file (the agent's built-in default
    watches every process: procfs watcher, no exe_regex, memory_mode quick); None when procfs does not
    look at processes."""
    if doc is None:
        return {}
    plugins = doc.get("plugins")
    procfs = plugins.get("procfs") if isinstance(plugins, Mapping) else None
    processes = procfs.get("processes") if _plugin_enabled(procfs) else None  # type: ignore[union-attr]
    return processes if _sub_table_enabled(processes) else None


def config_reasons(doc: Mapping[str, Any] | None) -> list[str]:
    """Why this Alumet configuration (None: no file) needs cap_sys_ptrace; empty: it does not."""
    processes = _processes(doc)
    if not processes:
        return []
    reasons = []
    if processes.get("strategy", "watcher") == "event":
        events = processes.get("events")
        if isinstance(events, Mapping) and events.get("memory_mode") == SLOW:
            reasons.append(f'procfs events memory_mode = "{SLOW}" reads /proc/PID/smaps_rollup (a ptrace access)')
        return reasons
    groups = processes.get("groups")
    for number, group in enumerate(groups if isinstance(groups, list) else [], 1):
        if not isinstance(group, Mapping):
            continue
        if group.get("memory_mode") == SLOW:
            reasons.append(f'procfs group {number} memory_mode = "{SLOW}" reads other users\' '
                           "/proc/PID/smaps_rollup (a ptrace access)")
        if group.get("exe_regex"):
            reasons.append(f"procfs group {number} exe_regex reads other users' /proc/PID/exe (a ptrace access)")
    return reasons


def hidepid_reason(options: Mapping[str, str | None], group_gid: int | None) -> str | None:
    """Why the /proc mount with these options hides other users' processes from the agent without
    cap_sys_ptrace; None when the group `group_gid` is exempt or hidepid is off (kernel has_pid_permissions)."""
    value = options.get("hidepid") or "off"
    mode = _LEVEL_NAMES.get(_proc.level(value), value)
    if mode == "off":
        return None
    gid = options.get("gid")
    if mode != "ptraceable" and group_gid is not None and gid is not None and gid.isdigit() and int(gid) == group_gid:
        return None
    if mode == "ptraceable":
        return "/proc is mounted hidepid=ptraceable, which ignores gid="
    return f"/proc is mounted hidepid={mode} without gid={group_gid if group_gid is not None else 'of the group'}"


def reasons(config_text: str | None, proc_options: str, group_gid: int | str | None) -> list[str]:
    """Every reason, from the config file's text (None: absent), the /proc mount's options and the
    group's gid. Filter `alumet_ptrace_reasons` of the capabilities role; raises ValueError on bad TOML."""
    doc = None
    if config_text is not None:
        # Read as the agent reads it (alumet_schema.parse_toml); loaded here: doctor only calls all_reasons,
        # with the TOML it already parsed.
        try:
            doc = _sibling("alumet_schema").parse_toml(config_text)
        except ValueError as exc:  # its TomlError, a TOMLDecodeError
            raise ValueError(f"the Alumet configuration is not valid TOML: {exc}") from None
    gid = int(group_gid) if isinstance(group_gid, int) or (isinstance(group_gid, str) and group_gid.isdigit()) \
        else None
    return all_reasons(doc, _proc.parse_options(proc_options.strip()), gid)


def all_reasons(doc: Mapping[str, Any] | None, proc_options: Mapping[str, str | None],
                group_gid: int | None) -> list[str]:
    """The config's reasons, and hidepid's when procfs looks at processes at all."""
    found = config_reasons(doc)
    hidden = hidepid_reason(proc_options, group_gid) if _processes(doc) is not None else None
    return [*found, hidden] if hidden else found


class FilterModule:
    """Ansible filter plugin entry point (roles/capabilities/filter_plugins/alumet_ptrace_need.py)."""

    def filters(self) -> dict[str, Any]:
        return {"alumet_ptrace_reasons": reasons}
