"""ptrace_need.py: when alumet-agent needs cap_sys_ptrace. Doctor calls it, and the capabilities role calls the
very same file as its filter plugin, so both decide alike (docs/SECURITY.md, "cap_sys_ptrace")."""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path

import pytest

from alumet_setup.hostside import ptrace_need

ROOT = Path(__file__).parents[2]
FILTERS = [ROOT / "roles/capabilities/filter_plugins/alumet_ptrace_need.py",
           ROOT / "plugins/filter/alumet_ptrace_need.py"]  # roles path (CLI) and collection alumet.setup

EVENT_SLOW = """
[plugins.procfs.processes]
strategy = "event"
refresh_interval = "2s"
groups = []
[plugins.procfs.processes.events]
poll_interval = "1s"
flush_interval = "4s"
memory_mode = "slow_but_accurate"
"""


@pytest.mark.parametrize("link", FILTERS)
def test_the_filter_plugins_are_this_module(link: Path) -> None:
    assert link.is_symlink() and link.resolve() == (ROOT / "alumet_setup/hostside/ptrace_need.py").resolve()
    spec = importlib.util.spec_from_file_location("alumet_ptrace_need", link)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # as Ansible loads it: standalone, no package around it
    assert module.FilterModule().filters()["alumet_ptrace_reasons"](EVENT_SLOW, "rw", "998") == [
        'procfs events memory_mode = "slow_but_accurate" reads /proc/PID/smaps_rollup (a ptrace access)']


@pytest.mark.parametrize(("options", "gid", "reason"), [
    ("rw,nosuid,nodev,noexec,relatime", 998, None),
    ("rw,hidepid=0", 998, None),
    ("rw,hidepid=invisible,gid=998", 998, None),
    ("rw,hidepid=2,gid=998", 998, None),
    ("rw,hidepid=noaccess", 998, "/proc is mounted hidepid=noaccess without gid=998"),
    ("rw,hidepid=invisible,gid=27", 998, "/proc is mounted hidepid=invisible without gid=998"),
    ("rw,hidepid=invisible,gid=998", None, "/proc is mounted hidepid=invisible without gid=of the group"),
    ("rw,hidepid=ptraceable,gid=998", 998, "/proc is mounted hidepid=ptraceable, which ignores gid="),
    ("rw,hidepid=4", 998, "/proc is mounted hidepid=ptraceable, which ignores gid="),
])
def test_hidepid(options: str, gid: int | None, reason: str | None) -> None:
    assert ptrace_need.reasons(None, options, gid) == ([reason] if reason else [])


def test_hidepid_does_not_matter_when_procfs_watches_no_process() -> None:
    off = '[plugins.procfs]\nenabled = false\n'
    assert ptrace_need.reasons(off, "rw,hidepid=invisible", 998) == []
    no_processes = '[plugins.procfs.processes]\nenabled = false\n'
    assert ptrace_need.reasons(no_processes, "rw,hidepid=invisible", 998) == []
    rapl_only = '[plugins.rapl]\npoll_interval = "1s"\n'
    assert ptrace_need.reasons(rapl_only, "rw,hidepid=invisible", 998) == []
    assert ptrace_need.reasons(None, "rw,hidepid=invisible", 998) != []  # no file: the agent's default watches


def test_bad_toml_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match="not valid TOML"):
        ptrace_need.reasons("[plugins", "rw", 998)


def test_the_shipped_profiles() -> None:
    from alumet_setup.hostside import profiles

    for name in profiles.PROFILES:
        assert ptrace_need.reasons(profiles.render(name), "rw", 998) == [], name  # defaults: quick, no exe_regex
        if "memory_mode" in [p.name for p in profiles.get_profile(name).parameters]:
            slow = ptrace_need.reasons(profiles.render(name, {"memory_mode": "slow_but_accurate"}), "rw", 998)
            assert len(slow) == 1 and "smaps_rollup" in slow[0], name


def test_procfs_sub_tables_read_only_enabled_not_the_plugin_switch_enable() -> None:
    """`enable` is a switch of [plugins.X] tables only (core config.rs); procfs's sub-tables read `enabled`
    (plugins/procfs/src/lib.rs, serde default true), so `enable = false` there leaves processes measured."""
    sub_table_enable = EVENT_SLOW.replace('strategy = "event"', 'strategy = "event"\nenable = false')
    assert ptrace_need.config_reasons(tomllib.loads(sub_table_enable)) != []
    sub_table_enabled = EVENT_SLOW.replace('strategy = "event"', 'strategy = "event"\nenabled = false')
    assert ptrace_need.config_reasons(tomllib.loads(sub_table_enabled)) == []
    plugin_enable = "[plugins.procfs]\nenable = false\n" + EVENT_SLOW
    assert ptrace_need.config_reasons(tomllib.loads(plugin_enable)) == []


def test_a_toml_1_1_configuration_is_read_as_the_agent_reads_it() -> None:
    """The capabilities role judges the file the agent will read: TOML 1.1 (`\\e`), which tomllib refuses."""
    assert ptrace_need.reasons('title = "\\e"\n' + EVENT_SLOW, "rw", None) != []
