"""agent.probe (doctor --probe): start the real alumet-agent for a second and read what it measured.

The other checks predict; this one asks the agent. It renders the `rapl` profile with a CSV output
in a temporary directory on the host, runs `alumet-agent --config F exec sleep 1`, and reads the
agent's log (the messages of alumet-dev/alumet v0.9.5, see tests/fixtures/agent-logs/) and the CSV.
It only runs when asked: starting the agent takes a second and writes to the host's /tmp.
Its finding is not used by the plugin verdicts (doctor.PLUGINS), asked for or not.
"""

from __future__ import annotations

import csv
import io
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from ..findings import Context, Finding, Status, check, not_available

PROFILE = "rapl"
# Short intervals, so that one second of `sleep 1` yields rows; the agent flushes again when it stops.
PROBE_SETTINGS = {"poll_interval": "200ms", "flush_interval": "500ms"}
PROBE_SECONDS = 1
AGENT_TIMEOUT = 30.0
TMP_PREFIX = "/tmp/alumet-probe."

READY = "ALUMET agent is ready"
# Rows of these metrics in the CSV mean the plugin measured (the csv output appends the unit: _J).
PLUGIN_METRICS: dict[str, tuple[str, ...]] = {
    "rapl": ("rapl_consumed_energy",),
    "procfs": ("kernel_", "cpu_percent", "cpu_time_delta", "memory_usage", "mem_", "network_"),
    "energy-attribution": ("attributed_energy",),
    "perf": ("perf_",),
    "nvml": ("nvml_",),
}
# The rapl plugin's own explanations (plugins/rapl/src at v0.9.5), most telling first.
RAPL_MESSAGES = (
    "Both perf_events and powercap failed, unable to read RAPL counters",
    "I can use neither perf_events nor powercap",
    "I could not use the powercap sysfs to read RAPL energy counters",
    "I could not use perf_events to read RAPL energy counters",
    "I could not determine how to use perf_events to read RAPL energy counters",
    "/sys/devices/power does not exist",
)
_FALLBACK = ("I will fallback to the powercap sysfs", "(from powercap)", "I will disable perf_events")
_RECORD = re.compile(r"^\[(?P<time>\S+) (?P<level>[A-Z]+)\s+(?P<target>[^\]]*)\] (?P<message>.*)$")
_FAILED_PLUGIN = re.compile(r"^plugin failed to (?:start|initialize): (?P<name>[\w-]+) v\S+$")
_CAUSE = re.compile(r"^\s+(?:\d+: )?(?P<text>.*)$")


@dataclass
class AgentLog:
    """What the agent said about itself: ready or not, which plugin broke it, and RAPL's own words."""

    ready: bool
    messages: list[str] = field(default_factory=list)  # first line of every WARN/ERROR record, in order
    error_chain: list[str] = field(default_factory=list)  # "Error: X" then each "Caused by" item
    failed_plugin: str | None = None

    @property
    def error(self) -> str | None:
        return self.error_chain[-1] if self.error_chain else None

    def rapl_message(self) -> str | None:
        """The most telling RAPL message in the log or the error chain."""
        texts = self.error_chain + self.messages
        for prefix in RAPL_MESSAGES:
            for text in texts:
                if text.startswith(prefix):
                    return text
        return None


def parse_agent_log(text: str) -> AgentLog:
    """Parse the agent's stderr (env_logger records, then anyhow's `Error:` chain on failure)."""
    log = AgentLog(ready=False)
    in_error = False
    for line in text.splitlines():
        record = _RECORD.match(line)
        if line.startswith("Error: "):
            in_error = True
            log.error_chain.append(line[len("Error: "):].strip())
        elif in_error:
            cause = _CAUSE.match(line)
            if line.strip() in ("", "Caused by:") or cause is None:
                continue
            item = cause["text"].strip()
            # anyhow numbers the causes ("0: ...") and indents the continuation of a multi-line one.
            if re.match(r"^\s+\d+: ", line) or len(log.error_chain) == 1:
                log.error_chain.append(item)
            else:
                log.error_chain[-1] += " " + item
        elif record:
            if READY in record["message"]:
                log.ready = True
            if record["level"] in ("WARN", "ERROR"):
                log.messages.append(record["message"].strip())
        elif "[INFO]" in line and READY in line:
            log.ready = True  # a plainer format (the test bed's stand-in agent)
    for item in log.error_chain:
        match = _FAILED_PLUGIN.match(item)
        if match:
            log.failed_plugin = match["name"]
    return log


def csv_metric_rows(text: str, delimiter: str = ";") -> dict[str, int]:
    """Rows per metric name in an Alumet CSV output (first column `metric`)."""
    counts: dict[str, int] = {}
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    header = next(reader, None)
    if not header or header[0] != "metric":
        return counts
    for row in reader:
        if row and row[0]:
            counts[row[0]] = counts.get(row[0], 0) + 1
    return counts


@dataclass(frozen=True)
class PluginOutcome:
    plugin: str
    outcome: str  # measured, failed, not-available, no-data, not-started
    message: str = ""


def judge(log: AgentLog, rows: dict[str, int], plugins: list[str]) -> list[PluginOutcome]:
    """Per plugin of the probe configuration: measured / failed / not-available / no-data / not-started."""
    outcomes = []
    for plugin in plugins:
        prefixes = PLUGIN_METRICS.get(plugin)
        produced = sum(n for metric, n in rows.items() if prefixes and metric.startswith(prefixes))
        if plugin == "csv":
            produced = sum(rows.values())
        if not log.ready:
            if log.failed_plugin not in (None, plugin):
                outcomes.append(PluginOutcome(plugin, "not-started", f"the agent stopped at {log.failed_plugin}"))
                continue
            message = (log.rapl_message() if plugin == "rapl" else None) or log.error or "the agent did not start"
            hardware_absent = plugin == "rapl" and "/sys/devices/power does not exist" in " ".join(log.messages) \
                and "(os error 2)" in " ".join(log.error_chain)
            outcomes.append(PluginOutcome(plugin, "not-available" if hardware_absent else "failed", message))
        elif produced:
            note = ""
            if plugin == "rapl" and any(marker in m for m in log.messages for marker in _FALLBACK):
                note = "through powercap: " + (log.rapl_message() or "perf_events was not usable")
            outcomes.append(PluginOutcome(plugin, "measured", note or f"{produced} row{'s' * (produced != 1)}"))
        else:
            what = ", ".join(prefixes) if prefixes else "any"
            outcomes.append(PluginOutcome(plugin, "no-data", f"started, but wrote no {what} rows"))
    return outcomes


def _status(outcomes: list[PluginOutcome]) -> Status:
    kinds = {o.outcome for o in outcomes}
    if kinds & {"failed", "no-data"}:
        return Status.FAIL
    if "not-available" in kinds:
        return Status.NOT_AVAILABLE
    if any(o.message.startswith("through powercap") for o in outcomes):
        return Status.WARN
    return Status.OK


@check("agent.probe", "alumet-agent probe run")
def agent_probe(ctx: Context) -> Finding:
    if not ctx.options.probe:
        return not_available("not run (use --probe)", requested=False)
    binary = ctx.finding("agent.binary")
    agent = binary.data.get("path")
    # agent.binary refuses to run a binary others could have replaced; doctor may be root: so do we.
    if not agent or binary.status not in (Status.OK, Status.WARN):
        return Finding(Status.FAIL, f"cannot probe: {binary.detail}", fix=binary.fix,
                       install_step=binary.install_step or "agent", data={"requested": True})
    return _probe(ctx, agent)


def _probe(ctx: Context, agent: str) -> Finding:
    from .. import alumet_schema, profiles  # jinja2 only when the probe really runs

    host = ctx.host
    made = host.run(["mktemp", "-d", f"{TMP_PREFIX}XXXXXX"], timeout=5)
    tmp = made.stdout.strip()
    if not made.ok or not tmp.startswith(TMP_PREFIX):
        return Finding(Status.ERROR, f"cannot create a temporary directory: {made.stderr.strip() or made.rc}")
    config_path, csv_path = f"{tmp}/alumet-config.toml", f"{tmp}/probe.csv"
    try:
        text = profiles.render(PROFILE, {**PROBE_SETTINGS, "output_path": csv_path})
        # The Host protocol has no write: a shell redirect carries the text, passed as an argument.
        wrote = host.run(["sh", "-c", 'printf %s "$1" > "$2"', "sh", text, config_path], timeout=5)
        if not wrote.ok:
            return Finding(Status.ERROR, f"cannot write {config_path}: {wrote.stderr.strip()}")
        argv = [agent, "--config", config_path, "exec", "sleep", str(PROBE_SECONDS)]
        run = host.run(argv, timeout=AGENT_TIMEOUT)
        log = parse_agent_log(run.stderr + "\n" + run.stdout)
        rows = csv_metric_rows(host.read_text(csv_path) or "", profiles.PARAMETERS_BY_NAME["csv_delimiter"].default)
        uid = host.run(["id", "-u"], timeout=5).stdout.strip()
    finally:
        host.run(["rm", "-rf", "--", tmp], timeout=10)
    import tomllib

    plugins = alumet_schema.enabled_plugins(tomllib.loads(text))
    outcomes = judge(log, rows, plugins)
    summary = "; ".join(f"{o.plugin} {o.outcome}" + (f" ({o.message})" if o.message else "") for o in outcomes)
    who = " as root (an unprivileged user may fare worse)" if uid == "0" else ""
    detail = f"`{shlex.join([*argv[:1], '...', *argv[-3:]])}`{who}: {summary}"
    if run.rc == 124:
        detail = f"the agent did not finish within {AGENT_TIMEOUT:g}s; {detail}"
    data: dict[str, Any] = {
        "requested": True, "profile": PROFILE, "tmpdir": tmp, "rc": run.rc, "ready": log.ready, "uid": uid,
        "plugins": {o.plugin: {"outcome": o.outcome, "message": o.message} for o in outcomes},
        "messages": log.messages, "error": log.error_chain, "csv_rows": rows,
    }
    return Finding(_status(outcomes), detail, data=data, install_step=_install_step(outcomes))


def _install_step(outcomes: list[PluginOutcome]) -> str | None:
    """The alumet-setup step that addresses a RAPL refusal: capabilities for perf_events, else powercap."""
    for o in outcomes:
        if (o.plugin == "rapl" and o.outcome == "failed") or o.message.startswith("through powercap"):
            return "capabilities" if "perf_events" in o.message else "powercap" if "powercap" in o.message else None
    return None
