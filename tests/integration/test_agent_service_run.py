"""The agent run as alumet.service runs it finds per-process rows with the default profile (issue #10, item 1).

In a bed container alumet-setup as the README installs it (the `tool` fixture) installs the agent (the test bed's
stand-in, which follows upstream's procfs process rule: under `run`, per-process rows come only from the
"watcher" strategy), its capabilities, the default configuration profile and the unit. No systemd runs there,
so the test starts the unit's ExecStart itself, as the unit says: its User and Group, its WorkingDirectory
(StateDirectory), AmbientCapabilities with NoNewPrivileges (the binary's file capabilities are then ignored,
as under systemd).

This host has no RAPL (not available, never faked). When the agent's own log says so (agent.probe's
judge: rapl not-available), the same command runs again with `--plugins` naming the configuration's
other plugins minus rapl and energy-attribution (whose formula needs RAPL energy); the configuration
file, the user, the capabilities and `run` stay the service's.
"""

from __future__ import annotations

import re
import shlex
import tomllib

import pytest
from bedhost import Container, bed_settings, container
from installed_tool import InstalledTool

from alumet_setup.doctor.checks.agent_probe import csv_metric_rows, judge, parse_agent_log

pytestmark = [pytest.mark.containers]

STEPS = "prereqs,rustup,agent,group,config,capabilities,service"
UNIT = "/etc/systemd/system/alumet.service"
# setpriv takes numbers: libcap-ng before 0.8 (Ubuntu 22.04) does not know "perfmon".
CAP_NUMBERS = {"CAP_SYS_PTRACE": 19, "CAP_SYS_NICE": 23, "CAP_PERFMON": 38}
NEEDS_RAPL = ("rapl", "energy-attribution")
RUN_SECONDS = 20  # watcher: refresh 2 s, then two polls of each process before a cpu_percent row


def unit_settings(text: str) -> dict[str, str]:
    """KEY=VALUE lines of the [Service] section (the last one wins, as for systemd's single-valued keys)."""
    section, out = "", {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            out[key] = value
    return out


def service_command(c: Container, config: str | None = None, plugins: list[str] | None = None) -> str:
    """A shell line that runs the unit's ExecStart as the unit would, for RUN_SECONDS, then SIGTERM."""
    unit = unit_settings(c.sh(f"cat {UNIT}").stdout)
    argv = shlex.split(unit["ExecStart"])
    assert argv[-1] == "run" and "--config" in argv, unit["ExecStart"]
    if config is not None:
        argv[argv.index("--config") + 1] = config
    if plugins is not None:
        argv[1:1] = ["--plugins", ",".join(plugins)]
    workdir = unit["WorkingDirectory"].replace("%S", "/var/lib")
    caps = ",".join(f"+cap_{CAP_NUMBERS[name]}" for name in unit["AmbientCapabilities"].split())
    env = [f"{k}={v}" for k, v in (item.split("=", 1) for item in shlex.split(unit.get("Environment", "")))]
    setpriv = ["setpriv", f"--reuid={unit['User']}", f"--regid={unit['Group']}", "--init-groups",
               f"--inh-caps={caps}", f"--ambient-caps={caps}", "--no-new-privs"]
    state = (f"install -d -m 0750 -o {unit['User']} -g {unit['Group']} {workdir} && "
             f"rm -f {workdir}/alumet-output.csv {workdir}/agent.log")
    run = shlex.join(["timeout", "-s", "TERM", str(RUN_SECONDS), "env", *env, *setpriv, "--", *argv])
    return f"{state} && cd {workdir} && {{ {run} > agent.log 2>&1; echo rc=$?; }}"


@pytest.fixture(scope="module")
def installed(bed: dict[str, str], tool: InstalledTool, tmp_path_factory: pytest.TempPathFactory):
    """A debian13 container prepared by `alumet-setup install` with the service step, default profile."""
    tmp = tmp_path_factory.mktemp("service-run")
    with container() as c:
        run = c.cli(tool, tmp, "install", "--only", STEPS, *bed_settings(bed))
        assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
        yield c


def run_as_service(c: Container, config: str | None = None) -> tuple[str, dict[str, int], str]:
    """The agent's log, CSV rows per metric and CSV text, RAPL dropped only if the agent says it is absent."""
    unit = unit_settings(c.sh(f"cat {UNIT}").stdout)
    workdir = unit["WorkingDirectory"].replace("%S", "/var/lib")
    path = config or shlex.split(unit["ExecStart"])[-2]
    plugins = list(tomllib.loads(c.sh(f"cat {path}").stdout).get("plugins", {}))
    c.sh(service_command(c, config))
    log = c.sh(f"cat {workdir}/agent.log").stdout
    parsed = parse_agent_log(log)
    if not parsed.ready and "rapl" in plugins:
        [rapl] = judge(parsed, {}, ["rapl"])
        assert rapl.outcome == "not-available", log[-3000:]  # refused or broken RAPL is a failure here
        c.sh(service_command(c, config, [p for p in plugins if p not in NEEDS_RAPL]))
        log = c.sh(f"cat {workdir}/agent.log").stdout
    text = c.sh(f"cat {workdir}/alumet-output.csv", check=False).stdout
    return log, csv_metric_rows(text), text


def process_rows(text: str, metric: str) -> set[str]:
    """consumer_id of the rows of `metric` whose consumer is a process (csv plugin columns, ';')."""
    pids = set()
    for line in text.splitlines()[1:]:
        cols = line.split(";")
        if len(cols) > 6 and cols[0] == metric and cols[5] == "process":
            pids.add(cols[6])
    return pids


def test_watcher_config_gives_per_process_rows_as_the_service(installed: Container) -> None:
    """A hand-written config: the default profile with `strategy = "watcher"` (upstream's default)."""
    c = installed
    default = c.sh("cat /etc/alumet/alumet-config.toml").stdout
    watcher = re.sub(r'(?m)^strategy = "event"$', 'strategy = "watcher"', default)
    assert 'strategy = "watcher"' in watcher
    c.sh(f"printf %s {shlex.quote(watcher)} > /etc/alumet/watcher.toml && chmod 0644 /etc/alumet/watcher.toml")
    log, rows, text = run_as_service(c, "/etc/alumet/watcher.toml")
    assert parse_agent_log(log).ready, log[-3000:]
    assert "Starting system-wide process watcher." in log
    pids = process_rows(text, "cpu_percent_%")
    # PID 1 is root's `sleep infinity`: the unprivileged agent reads other users' /proc/PID/stat.
    assert "1" in pids, (sorted(pids), log[-2000:])
    assert rows.get("cpu_time_delta_ns") and rows.get("memory_usage_B")


def test_default_profile_gives_per_process_rows_as_the_service(installed: Container) -> None:
    """Item 1: `alumet-agent --config /etc/alumet/alumet-config.toml run` must measure processes.

    Fails while the default profile sets `strategy = "event"`: under `run` nothing announces a process.
    """
    log, rows, text = run_as_service(installed)
    assert parse_agent_log(log).ready, log[-3000:]
    pids = process_rows(text, "cpu_percent_%")
    assert pids, (f"no per-process cpu_percent rows under `run` with the default profile "
                  f"(rows: {rows}); procfs said: {[line for line in log.splitlines() if 'procfs' in line]}")
