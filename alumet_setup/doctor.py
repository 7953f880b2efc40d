"""Run the registered checks against a host, derive a verdict per Alumet plugin, render the report.

Checks run concurrently (they mostly wait on subprocesses or on the network), needs first, each
isolated: a check that raises is reported with status `error` and never stops the others.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import __version__
from .checks import load_all
from .findings import GROUPS, REGISTRY, Context, Finding, Options, Status, dependency_order
from .hosts import Host, HostError
from .textsafe import visible
from .threads import parallel_map

SCHEMA_VERSION = 2  # 2: "fix" is a list of commands (docs/doctor-schema.json)
WORKERS = 12
# Hosts diagnosed at once (each runs WORKERS checks, over one ssh connection).
HOST_WORKERS = 10


class Readiness:
    """A plugin's verdict (PluginVerdict.verdict, "verdict" in --json)."""

    READY = "ready"
    DEGRADED = "degraded"
    BLOCKED = "blocked"
    NOT_AVAILABLE = "not-available"


@dataclass(frozen=True)
class PluginNeeds:
    required: tuple[str, ...]
    recommended: tuple[str, ...] = ()


# What each Alumet plugin needs from the host, by check id (docs/alumet-upstream.md).
PLUGINS: dict[str, PluginNeeds] = {
    "rapl": PluginNeeds(required=("agent.binary", "rapl.access"), recommended=("rapl.persistence",)),
    "perf": PluginNeeds(
        required=("agent.binary", "kernel.perf_event_paranoid", "kernel.perf_probe"),
        recommended=("agent.capabilities",),
    ),
    "procfs": PluginNeeds(required=("agent.binary", "procfs.hidepid")),
    "nvml": PluginNeeds(required=("agent.binary", "nvml.device", "nvml.library")),
    "energy-attribution": PluginNeeds(
        required=("agent.binary", "rapl.access", "procfs.hidepid"),
        recommended=("rapl.persistence", "config.file"),
    ),
    "csv": PluginNeeds(required=("agent.binary",)),
}


@dataclass
class CheckResult:
    id: str
    title: str
    group: str
    finding: Finding
    seconds: float
    blocks: list[str] = field(default_factory=list)  # the judged plugins this failure blocks

    def to_json(self) -> dict[str, Any]:
        f = self.finding
        document = {
            "id": self.id, "title": self.title, "group": self.group, "status": str(f.status),
            "detail": f.detail, "fix": list(f.fix), "install": f.install_command, "data": _jsonable(f.data),
        }
        if self.blocks:
            document["blocks"] = self.blocks
        return document


@dataclass
class PluginVerdict:
    plugin: str
    verdict: str
    reasons: list[str] = field(default_factory=list)


@dataclass
class Report:
    host: str
    results: list[CheckResult]
    plugins: list[PluginVerdict]
    seconds: float
    error: str | None = None  # the host could not be reached: no check ran
    asked: tuple[str, ...] = ()  # the plugins named with --plugin: each must be judged ready
    checks_only: bool = False  # --only-check: the selected checks are the verdict, failures stay failures

    @classmethod
    def unreachable(cls, host: str, error: str, seconds: float = 0.0) -> Report:
        return cls(host, [], [], seconds, error=error)

    @property
    def ready(self) -> bool:
        """Never said of what was not judged: a plugin asked for must be judged and available here, and a run
        that judged no plugin (--only-check) is ready only when none of its checks failed."""
        if self.error is not None or any(p.verdict == Readiness.BLOCKED for p in self.plugins):
            return False
        judged = {p.plugin: p.verdict for p in self.plugins}
        if any(judged.get(name) in (None, Readiness.NOT_AVAILABLE) for name in self.asked):
            return False
        if not self.plugins or self.checks_only:
            return not self.failed_checks()
        return True

    def failed_checks(self) -> list[str]:
        return [r.id for r in self.results if r.finding.status in (Status.FAIL, Status.ERROR)]

    def summary(self) -> str:
        """One line: "ready for rapl, procfs; blocked for perf, csv (<first reason>); ..."."""
        if self.error is not None:
            return f"unreachable: {self.error}"
        parts = []
        for verdict, label in ((Readiness.READY, "ready for"), (Readiness.DEGRADED, "degraded for"),
                               (Readiness.BLOCKED, "blocked for"), (Readiness.NOT_AVAILABLE, "not available here:")):
            # Plugins stopped by the same first reason are named together, the reason once.
            explained = verdict in (Readiness.DEGRADED, Readiness.BLOCKED)
            by_reason: dict[str, list[str]] = {}
            for p in self.plugins:
                if p.verdict == verdict:
                    by_reason.setdefault(p.reasons[0] if explained and p.reasons else "", []).append(p.plugin)
            for reason, names in by_reason.items():
                parts.append(f"{label} {', '.join(names)}" + (f" ({reason})" if reason else ""))
        judged = {p.plugin for p in self.plugins}
        unjudged = [name for name in self.asked if name not in judged]
        if unjudged:
            parts.append(f"not judged: {', '.join(unjudged)} (the selected checks do not cover it)")
        if not self.plugins or self.checks_only:
            failed = self.failed_checks()
            checks = f"{len(self.results)} check{'s' * (len(self.results) != 1)} judged: " + (
                f"failed {', '.join(failed)}" if failed else "none failed")
            parts.append(checks)
        return "; ".join(parts)

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "host": self.host,
            "ready": self.ready,
            "summary": self.summary(),
            "seconds": round(self.seconds, 3),
            "checks": [r.to_json() for r in self.results],
            "plugins": {p.plugin: {"verdict": p.verdict, "reasons": p.reasons} for p in self.plugins},
        }
        if self.error is not None:  # only then: other readers see nothing new
            document["error"] = self.error
        return document


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def check_ids() -> list[str]:
    load_all()
    return list(REGISTRY)


def run_checks(host: Host, options: Options | None = None, only: Iterable[str] | None = None) -> list[CheckResult]:
    """Run every registered check (or those in `only`) and return their results in registry order.

    Checks are handed to the workers needs first (findings.dependency_order); a check that reads a
    need still running waits for it, and one nobody has started (left out by `only`) runs on demand."""
    load_all()
    ctx = Context(host, options)
    wanted = list(REGISTRY) if only is None else [c for c in REGISTRY if c in set(only)]
    chosen = set(wanted)
    order = [c for c in dependency_order(wanted) if c in chosen]
    timings: dict[str, float] = {}

    def timed(check_id: str) -> Finding:
        start = time.perf_counter()
        finding = ctx.evaluate(check_id)
        timings.setdefault(check_id, time.perf_counter() - start)
        return finding

    findings = dict(zip(order, parallel_map(timed, order, WORKERS), strict=True))
    return [
        CheckResult(c, REGISTRY[c].title, REGISTRY[c].group, findings[c], timings.get(c, 0.0)) for c in wanted
    ]


def required_checks(plugin: str, by_id: Mapping[str, CheckResult]) -> tuple[str, ...]:
    """The checks whose failure blocks `plugin`: its own needs, and a configuration file the agent refuses
    (config.file failing on a present file): the agent then starts no plugin at all."""
    config = by_id.get("config.file")
    refused = config is not None and config.finding.status in (Status.FAIL, Status.ERROR) \
        and config.finding.data.get("present") is True
    return PLUGINS[plugin].required + (("config.file",) if refused else ())


def judge_plugins(results: Sequence[CheckResult], plugins: Iterable[str] | None = None) -> list[PluginVerdict]:
    """ready / degraded / blocked / not-available per plugin, with the reasons that decided it."""
    by_id = {r.id: r for r in results}
    verdicts = []
    for plugin in plugins or PLUGINS:
        needs = PLUGINS[plugin]
        if not all(c in by_id for c in needs.required):
            continue  # a --check selection left this plugin unjudgeable
        missing_hw, blocked, degraded = [], [], []
        for check_id in required_checks(plugin, by_id):
            f = by_id[check_id].finding
            reason = f"{check_id}: {f.detail}"
            if f.status is Status.NOT_AVAILABLE:
                missing_hw.append(reason)
            elif f.status in (Status.FAIL, Status.ERROR):
                blocked.append(reason)
            elif f.status is Status.WARN:
                degraded.append(reason)
        for check_id in needs.recommended:
            result = by_id.get(check_id)
            if check_id in required_checks(plugin, by_id):
                continue  # already judged as required
            if result and result.finding.status in (Status.WARN, Status.FAIL, Status.ERROR):
                degraded.append(f"{check_id}: {result.finding.detail}")
        if missing_hw:
            verdicts.append(PluginVerdict(plugin, Readiness.NOT_AVAILABLE, missing_hw))
        elif blocked:
            verdicts.append(PluginVerdict(plugin, Readiness.BLOCKED, blocked + degraded))
        elif degraded:
            verdicts.append(PluginVerdict(plugin, Readiness.DEGRADED, degraded))
        else:
            verdicts.append(PluginVerdict(plugin, Readiness.READY))
    return verdicts


def settle(results: Sequence[CheckResult], verdicts: Sequence[PluginVerdict],
           checks_only: bool = False) -> list[CheckResult]:
    """Make each check's state say what it does to the judged plugins, as the legend reads: a failure
    names the plugins it blocks, and a failure that blocks none (only recommended, or its plugin is not
    available here, or not selected) is a warning. The verdicts are unchanged by this (a warning on a
    recommended check degrades as a failure does; not-available wins over both). With checks_only (the
    user chose the checks), a failure stays a failure: the checks are the verdict."""
    by_id = {r.id: r for r in results}
    blocked = [p.plugin for p in verdicts if p.verdict == Readiness.BLOCKED]
    settled = []
    for r in results:
        status = r.finding.status
        if status not in (Status.FAIL, Status.ERROR):
            settled.append(r)
            continue
        blocks = [p for p in blocked if r.id in required_checks(p, by_id)]
        finding = r.finding
        if status is Status.FAIL and not blocks and not checks_only:
            finding = dataclasses.replace(finding, status=Status.WARN)
        settled.append(dataclasses.replace(r, finding=finding, blocks=blocks))
    return settled


def diagnose(host: Host, options: Options | None = None, plugins: Sequence[str] | None = None,
             only: Iterable[str] | None = None) -> Report:
    start = time.perf_counter()
    results = run_checks(host, options, only)
    verdicts = judge_plugins(results, plugins)
    checks_only = only is not None
    return Report(host.name, settle(results, verdicts, checks_only), verdicts, time.perf_counter() - start,
                  asked=tuple(plugins or ()), checks_only=checks_only)


def diagnose_many(connectors: Sequence[tuple[str, Callable[[], Host]]], options: Options | None = None,
                  plugins: Sequence[str] | None = None, only: Iterable[str] | None = None,
                  workers: int = HOST_WORKERS) -> list[Report]:
    """Diagnose several hosts at once, in the order given. `connectors` are (name, connect) pairs; a
    connect that raises HostError gives that host an unreachable report, and the others go on."""
    only = None if only is None else list(only)

    def one(item: tuple[str, Callable[[], Host]]) -> Report:
        name, connect = item
        start = time.perf_counter()
        try:
            host = connect()
            report = diagnose(host, options, plugins=plugins, only=only)
        except HostError as exc:
            message = str(exc)
            prefix = f"{name}: "
            return Report.unreachable(name, message.removeprefix(prefix), time.perf_counter() - start)
        report.host = name
        return report

    if len(connectors) == 1:
        return [one(connectors[0])]
    return parallel_map(one, connectors, workers)


def shown(report: Report) -> Report:
    """The report as the text output shows it: every string that came from the host or the user (its name,
    why it is unreachable, details, fix commands, plugin reasons) escaped by textsafe.visible, so that none
    can drive the terminal or forge a line. --json needs none of it (json.dumps escapes)."""
    results = [dataclasses.replace(r, finding=dataclasses.replace(
        r.finding, detail=visible(r.finding.detail), fix=tuple(visible(c) for c in r.finding.fix)))
        for r in report.results]
    plugins = [dataclasses.replace(p, reasons=[visible(reason) for reason in p.reasons]) for p in report.plugins]
    return dataclasses.replace(report, host=visible(report.host), results=results, plugins=plugins,
                               error=None if report.error is None else visible(report.error))


def render_table(reports: Sequence[Report]) -> str:
    """host | ready | summary, one row per host, after the reports of several hosts."""
    reports = [shown(r) for r in reports]
    rows = [(r.host, "unreachable" if r.error is not None else "yes" if r.ready else "no", r.summary())
            for r in reports]
    width = max(4, *(len(h) for h, _, _ in rows))
    lines = [f"{'host':<{width}}  {'ready':<11}  summary"]
    lines += [f"{h:<{width}}  {ready:<11}  {summary}" for h, ready, summary in rows]
    return "\n".join(lines)


def to_json(reports: Sequence[Report]) -> str:
    """The --json document: versioned, one object per host (docs/doctor-schema.json)."""
    return json.dumps(
        {"schema_version": SCHEMA_VERSION, "tool_version": __version__, "hosts": [r.to_json() for r in reports]},
        indent=2,
    )


SYMBOLS = {
    Status.OK: ("✓", "green"),
    Status.WARN: ("!", "yellow"),
    Status.FAIL: ("✗", "red"),
    Status.NOT_AVAILABLE: ("–", None),
    Status.ERROR: ("?", "magenta"),
}
VERDICT_SYMBOLS = {
    Readiness.READY: ("✓", "green"),
    Readiness.DEGRADED: ("!", "yellow"),
    Readiness.BLOCKED: ("✗", "red"),
    Readiness.NOT_AVAILABLE: ("–", None),
}


def remedy_lines(finding: Finding) -> list[str]:
    """What fixes it: one command on the `fix:` line, several as numbered steps; then the install step
    as an alternative, unless a command already runs alumet-setup install. With no command, the
    install step is the fix itself (never an `or:` with nothing before it)."""
    commands = list(finding.fix)
    install = finding.install_command if finding.status is not Status.OK else None
    if not commands:
        return [f"      fix: {install}"] if install else []
    lines = ([f"      fix: {commands[0]}"] if len(commands) == 1
             else ["      fix:", *(f"        {n}. {c}" for n, c in enumerate(commands, 1))])
    if install and not any("alumet-setup install" in c for c in commands):
        lines.append(f"       or: {install}")
    return lines


def render_text(report: Report, color: bool = False, verbose: bool = False) -> str:
    """The grouped human report, ending in the one-line summary. Host strings are escaped first (shown),
    the colours added after: only the tool's own escape sequences reach the terminal."""
    report = shown(report)

    def paint(text: str, fg: str | None, bold: bool = False) -> str:
        if not color or (fg is None and not bold):
            return text
        import click

        return click.style(text, fg=fg, bold=bold)

    lines = [paint(f"alumet-setup doctor: {report.host}", None, bold=True)]
    if report.error is not None:
        return "\n".join([*lines, "", f"{paint('Unreachable', 'red', bold=True)}: {report.error}"])
    width = max((len(r.title) for r in report.results), default=10)
    group = None
    for r in report.results:
        if r.group != group:
            group = r.group
            lines += ["", paint(GROUPS[group], None, bold=True)]
        symbol, fg = SYMBOLS[r.finding.status]
        lines.append(f"  {paint(symbol, fg)} {r.title.ljust(width)}  {r.finding.detail}")
        if r.blocks:
            lines.append(f"      blocks: {', '.join(r.blocks)}")
        if r.finding.status is not Status.OK or verbose:
            lines += remedy_lines(r.finding)
    lines += ["", paint("Plugins", None, bold=True)]
    pwidth = max((len(p.plugin) for p in report.plugins), default=4)
    for p in report.plugins:
        symbol, fg = VERDICT_SYMBOLS[p.verdict]
        why = f": {p.reasons[0]}" if p.reasons else ""
        lines.append(f"  {paint(symbol, fg)} {p.plugin.ljust(pwidth)}  {p.verdict}{why}")
        for extra in p.reasons[1:]:
            lines.append(f"  {' ' * (pwidth + 2)}  also: {extra}")
    verdict = "ready" if report.ready else "not ready"
    lines += ["", f"{paint(verdict.capitalize(), 'green' if report.ready else 'red', bold=True)}: {report.summary()}"]
    return "\n".join(lines)
