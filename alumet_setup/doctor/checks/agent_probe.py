"""agent.probe (doctor --probe): start the real alumet-agent for a second and read what it measured.

The other checks predict; this one asks the agent. It renders the `rapl` profile with a CSV output
in a temporary directory on the host, runs `alumet-agent --config F exec sleep 1`, and reads the
agent's log (the messages of alumet-dev/alumet v0.9.5, see tests/fixtures/agent-logs/) and the CSV.
It only runs when asked: starting the agent takes a second and writes to the host's /tmp.
Its finding is not used by the plugin verdicts (plugin_needs.PLUGINS), asked for or not.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from ...targets.hosts import CommandResult
from ..findings import Context, Finding, Status, check, not_available
from . import rapl

PROFILE = "rapl"
# Short intervals, so that one second of `sleep 1` yields rows; the agent flushes again when it stops.
PROBE_SETTINGS = {"poll_interval": "200ms", "flush_interval": "500ms"}
PROBE_SECONDS = 1
AGENT_TIMEOUT = 30.0
TMP_PREFIX = "/tmp/alumet-probe."
CONFIG_NAME, CSV_NAME = "alumet-config.toml", "probe.csv"  # in the probe's directory, the agent's working one

READY = "ALUMET agent is ready"
# Rows of these metrics in the CSV mean the plugin measured (the csv output appends the unit: _J).
PLUGIN_METRICS: dict[str, tuple[str, ...]] = {
    "rapl": ("rapl_consumed_energy",),
    "procfs": ("kernel_", "cpu_percent", "cpu_time_delta", "memory_usage", "mem_", "network_"),
    "energy-attribution": ("attributed_energy",),
    "perf": ("perf_",),
    "nvml": ("nvml_",),
}
# The rapl plugin's own explanations (checks/rapl.py holds their words), most telling first.
RAPL_MESSAGES = (
    rapl.AGENT_BOTH_FAILED,
    "I can use neither perf_events nor powercap",
    rapl.AGENT_POWERCAP_REFUSED,
    rapl.AGENT_PERF_REFUSED,
    "I could not determine how to use perf_events to read RAPL energy counters",
    rapl.AGENT_NO_ZONES,
    "Cannot read the list of RAPL domains available via the powercap interface",
    "Cannot read the list of RAPL domains available via the perf_events interface",
    rapl.AGENT_NO_PMU,
)
NO_PMU = rapl.AGENT_NO_PMU  # no RAPL PMU: the hardware path is absent, not refused
NO_ZONES = rapl.AGENT_NO_ZONES  # powercap has no RAPL zone here
PERF_REFUSED = rapl.AGENT_PERF_REFUSED
# A failure of the pipeline itself, not of one plugin (core/alumet/src/agent/builder.rs).
PIPELINE_FAILED = "Pipeline failed to build"
PARANOID_FILE = "/proc/sys/kernel/perf_event_paranoid"
# Said when rapl measures through powercap: WARN records, and the INFO record "Available RAPL domains (from
# powercap): ..." (plugins/rapl/src/consistency.rs), hence INFO records are kept too.
_FALLBACK = ("I will fallback to the powercap sysfs", "(from powercap)", "I will disable perf_events")
# Rust's panic report: `thread 'NAME' panicked at FILE:LINE:COL:` then the message (Rust 1.73 and later), or
# `thread 'NAME' panicked at 'MESSAGE', FILE:LINE:COL` (earlier); then a `note: run with RUST_BACKTRACE` line.
_PANIC = re.compile(r"^thread '(?P<thread>[^']*)' panicked at (?:'(?P<old>.*)', (?P<old_at>\S+)|(?P<at>\S+?):?)$")
_PANIC_IN_PLUGIN = re.compile(r"(?:^|/)plugins/(?P<dir>[\w-]+)/src/")
_PLUGIN_OF_DIR = {"nvidia-nvml": "nvml"}  # the crate directories whose plugin has another name
_RECORD = re.compile(r"^\[(?P<time>\S+) (?P<level>[A-Z]+)\s+(?P<target>[^\]]*)\] (?P<message>.*)$")
# The contexts builder.rs puts on a plugin's failure, at each phase of the start.
_FAILED_PLUGIN = re.compile(r"^plugin (?:failed to (?:start|initialize)|pre_pipeline_start failed"
                            r"|post_pipeline_start method failed|post-pipeline-start action failed)"
                            r": (?P<name>[\w-]+) v\S+$")
_CAUSE = re.compile(r"^\s+(?:\d+: )?(?P<text>.*)$")


@dataclass
class AgentLog:
    """What the agent said about itself: ready or not, which plugin broke it, and RAPL's own words."""

    ready: bool
    messages: list[str] = field(default_factory=list)  # first line of every WARN/ERROR record, in order
    error_chain: list[str] = field(default_factory=list)  # "Error: X" then each "Caused by" item
    failed_plugin: str | None = None
    info: list[str] = field(default_factory=list)  # first line of every INFO record
    panic: str | None = None  # the message of a Rust panic, on one line
    panic_at: str | None = None  # its source location, FILE:LINE:COL

    @property
    def error(self) -> str | None:
        return self.error_chain[-1] if self.error_chain else None

    @property
    def pipeline_failed(self) -> bool:
        return PIPELINE_FAILED in self.error_chain

    def said(self, text: str) -> bool:
        """Whether a WARN/ERROR record, an item of the error chain or a panic contains `text`."""
        return any(text in m for m in [*self.messages, *self.error_chain, self.panic or ""])

    @property
    def stopped_because(self) -> str:
        """Why the agent did not start, in its own words: the panic, else the error chain's last item."""
        if self.panic:
            return f"the agent panicked at {self.panic_at}: {self.panic}"
        return self.error or "the agent did not start"

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
    in_error = in_panic = False
    panic_lines: list[str] = []
    for line in text.splitlines():
        record = _RECORD.match(line)
        panicked = _PANIC.match(line)
        if panicked and log.panic_at is None:
            in_panic, in_error = True, False
            log.panic_at = panicked["old_at"] or panicked["at"]
            if panicked["old"] is not None:
                panic_lines.append(panicked["old"])
                in_panic = False
        elif in_panic:
            if line.startswith("note: ") or record:
                in_panic = False
            elif line.strip():
                panic_lines.append(line.strip())
            continue
        if panicked:
            continue
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
            elif record["level"] == "INFO":
                log.info.append(record["message"].strip())
        elif "[INFO]" in line and READY in line:
            log.ready = True  # a plainer format (the test bed's stand-in agent)
    for item in log.error_chain:
        match = _FAILED_PLUGIN.match(item)
        if match:
            log.failed_plugin = match["name"]
    if log.panic_at is not None:
        log.panic = " ".join(panic_lines)[:500] or "(no message)"
        in_plugin = _PANIC_IN_PLUGIN.search(log.panic_at)
        if in_plugin and log.failed_plugin is None:
            log.failed_plugin = _PLUGIN_OF_DIR.get(in_plugin["dir"], in_plugin["dir"])
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
            if log.pipeline_failed:
                why = f"the measurement pipeline failed to build: {log.error}"
                outcomes.append(PluginOutcome(plugin, "failed", why))
                continue
            if log.failed_plugin not in (None, plugin):
                outcomes.append(PluginOutcome(plugin, "not-started", f"the agent stopped at {log.failed_plugin}"))
                continue
            message = (log.rapl_message() if plugin == "rapl" else None) or log.stopped_because
            outcomes.append(PluginOutcome(plugin, "not-available" if _rapl_absent(log, plugin) else "failed", message))
        elif produced:
            note = ""
            if plugin == "rapl" and any(marker in m for m in log.messages + log.info for marker in _FALLBACK):
                if log.said(NO_PMU) and not log.said(PERF_REFUSED):
                    # Nothing refused perf_events: this host has no RAPL PMU, and powercap is the only way.
                    note = f"through powercap, the only RAPL interface here ({NO_PMU})"
                else:
                    note = "through powercap: " + (log.rapl_message() or "perf_events was not usable")
            note = note or f"{produced} row{'s' * (produced != 1)}"
            if plugin == "rapl" and log.said(rapl.AGENT_INCONSISTENT):
                note += f"; the agent warns: {rapl.AGENT_INCONSISTENT} (a kernel bug a newer kernel may fix)"
            outcomes.append(PluginOutcome(plugin, "measured", note))
        else:
            what = ", ".join(prefixes) if prefixes else "any"
            outcomes.append(PluginOutcome(plugin, "no-data", f"started, but wrote no {what} rows"))
    return outcomes


def _rapl_absent(log: AgentLog, plugin: str) -> bool:
    """RAPL hardware missing, not refused: no PMU and no powercap tree, or no PMU and no powercap zone."""
    if plugin != "rapl" or log.said(PERF_REFUSED):
        return False
    no_tree = log.said(NO_PMU) and "(os error 2)" in " ".join(log.error_chain)
    return no_tree or log.said(NO_ZONES)


def _status(outcomes: list[PluginOutcome]) -> Status:
    kinds = {o.outcome for o in outcomes}
    # Only not-started: the agent stopped at a plugin outside the probe's (a failure all the same).
    if kinds & {"failed", "no-data"} or kinds == {"not-started"}:
        return Status.FAIL
    if "not-available" in kinds:
        return Status.NOT_AVAILABLE
    if any(o.message.startswith("through powercap:") or rapl.AGENT_INCONSISTENT in o.message for o in outcomes):
        return Status.WARN
    return Status.OK


@check("agent.probe", "alumet-agent probe run", needs=("agent.binary",))
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
    from ...hostside import alumet_schema, profiles  # jinja2 only when the probe really runs
    from ...hostside.host_answers import pack
    from ...targets.batched_host import answers_argv

    host = ctx.host
    # The agent runs in a private temporary directory with its configuration, and writes its CSV there; the
    # directory goes whatever happens. One command on the host (host_answers.run_in_tmpdir): its steps keep
    # their order wherever doctor asks a remote host in batches.
    text = profiles.render(PROFILE, {**PROBE_SETTINGS, "output_path": CSV_NAME})
    argv = [agent, "--config", CONFIG_NAME, "exec", "sleep", str(PROBE_SECONDS)]
    question = [TMP_PREFIX, {CONFIG_NAME: text}, argv, AGENT_TIMEOUT, [CSV_NAME]]
    # /usr/bin/python3 first, as kernel.perf_probe: the host's own interpreter.
    python = "/usr/bin/python3" if host.exists("/usr/bin/python3") else "python3"
    ran = host.run(answers_argv(python, pack([["probe", "run_in_tmpdir", question]])), timeout=AGENT_TIMEOUT + 10)
    try:
        outcome = json.loads(ran.stdout)["probe"]["tmprun"]
    except (ValueError, KeyError, TypeError):
        why = (ran.stderr.strip().splitlines() or [ran.stdout.strip() or f"exit code {ran.rc}"])[-1]
        return Finding(Status.ERROR, f"the probe did not run: {why}")
    tmp = outcome["dir"]
    run = CommandResult(tuple(argv), outcome["rc"], outcome["stdout"], outcome["stderr"])
    log = parse_agent_log(run.stderr + "\n" + run.stdout)
    rows = csv_metric_rows(outcome["files"][CSV_NAME] or "", profiles.PARAMETERS_BY_NAME["csv_delimiter"].default)
    uid = host.run(["id", "-u"], timeout=5).stdout.strip()
    paranoid_text = (host.read_text(PARANOID_FILE) or "").strip()
    plugins = alumet_schema.enabled_plugins(alumet_schema.parse_toml(text))
    outcomes = judge(log, rows, plugins)
    summary = "; ".join(f"{o.plugin} {o.outcome}" + (f" ({o.message})" if o.message else "") for o in outcomes)
    who = " as root (an unprivileged user may fare worse)" if uid == "0" else ""
    detail = f"`{shlex.join([*argv[:1], '...', *argv[-3:]])}`{who}: {summary}"
    if run.rc == 124:
        detail = f"the agent did not finish within {AGENT_TIMEOUT:g}s; {detail}"
    paranoid = int(paranoid_text) if paranoid_text.lstrip("-").isdigit() else None
    step = _install_step(outcomes, paranoid)
    if step == "sysctl":
        detail += (f"; perf_event_paranoid {paranoid} refuses perf_event_open even with cap_perfmon "
                   "(Debian: 3, Ubuntu: 4): lower it to 2")
    data: dict[str, Any] = {
        "requested": True, "perf_event_paranoid": paranoid,
        "profile": PROFILE, "tmpdir": tmp, "rc": run.rc, "ready": log.ready, "uid": uid,
        "plugins": {o.plugin: {"outcome": o.outcome, "message": o.message} for o in outcomes},
        "messages": log.messages, "error": log.error_chain, "csv_rows": rows,
    }
    return Finding(_status(outcomes), detail, data=data, install_step=step)


def _install_step(outcomes: list[PluginOutcome], paranoid: int | None) -> str | None:
    """The alumet-setup step that addresses a RAPL refusal.

    perf_events refused: above 2, perf_event_paranoid refuses even an agent with cap_perfmon (distribution
    patches), so the sysctl step; at 2 or less, the capabilities step. powercap refused: the powercap step.
    """
    for o in outcomes:
        if (o.plugin == "rapl" and o.outcome == "failed") or o.message.startswith("through powercap:"):
            if "perf_events" in o.message:
                return "sysctl" if paranoid is not None and paranoid > 2 else "capabilities"
            return "powercap" if "powercap" in o.message else None
    return None
