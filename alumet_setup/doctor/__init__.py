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

from .. import __version__
from ..plugin_needs import PLUGINS
from ..steps import STEPS
from ..targets.hosts import Host, in_rounds, read_each
from ..textsafe import visible
from ..threads import parallel_map
from .checks import load_all
from .findings import GROUPS, REGISTRY, Context, Finding, Options, Status, dependency_order

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
    # The ids of the checks that decided the verdict (the blocking ones of a blocked plugin, the missing
    # hardware of a not-available one): what the text report names. Not in --json (its reasons say it).
    deciding: list[str] = field(default_factory=list)


@dataclass
class Report:
    host: str
    results: list[CheckResult]
    plugins: list[PluginVerdict]
    seconds: float
    error: str | None = None  # the host could not be reached: no check ran
    asked: tuple[str, ...] = ()  # the plugins named with --plugin: each must be judged ready
    checks_only: bool = False  # --only-check: the selected checks are the verdict, failures stay failures
    round_trips: int = 0  # commands run on a remote host to read it (batched_host.BatchedHost); 0 here

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
            "round_trips": self.round_trips,
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
        missing_hw: list[str] = []  # check ids; the reason is "<id>: <detail>"
        blocked: list[str] = []
        degraded: list[str] = []
        for check_id in required_checks(plugin, by_id):
            status = by_id[check_id].finding.status
            if status is Status.NOT_AVAILABLE:
                missing_hw.append(check_id)
            elif status in (Status.FAIL, Status.ERROR):
                blocked.append(check_id)
            elif status is Status.WARN:
                degraded.append(check_id)
        for check_id in needs.recommended:
            result = by_id.get(check_id)
            if check_id in required_checks(plugin, by_id):
                continue  # already judged as required
            if result and result.finding.status in (Status.WARN, Status.FAIL, Status.ERROR):
                degraded.append(check_id)
        if missing_hw:
            verdicts.append(_verdict(plugin, Readiness.NOT_AVAILABLE, by_id, missing_hw))
        elif blocked:
            verdicts.append(_verdict(plugin, Readiness.BLOCKED, by_id, blocked, degraded))
        elif degraded:
            verdicts.append(_verdict(plugin, Readiness.DEGRADED, by_id, degraded))
        else:
            verdicts.append(PluginVerdict(plugin, Readiness.READY))
    return verdicts


def _verdict(plugin: str, readiness: str, by_id: Mapping[str, CheckResult], deciding: list[str],
             also: Sequence[str] = ()) -> PluginVerdict:
    """The verdict, its reasons ("<check id>: <detail>", the deciding checks first) and its deciding checks."""
    reasons = [f"{c}: {by_id[c].finding.detail}" for c in [*deciding, *also]]
    return PluginVerdict(plugin, readiness, reasons, deciding)


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
    results = in_rounds(host, lambda: run_checks(host, options, only))
    verdicts = judge_plugins(results, plugins)
    checks_only = only is not None
    return Report(host.name, settle(results, verdicts, checks_only), verdicts, time.perf_counter() - start,
                  asked=tuple(plugins or ()), checks_only=checks_only, round_trips=getattr(host, "round_trips", 0))


def diagnose_many(connectors: Sequence[tuple[str, Callable[[], Host]]], options: Options | None = None,
                  plugins: Sequence[str] | None = None, only: Iterable[str] | None = None,
                  workers: int = HOST_WORKERS) -> list[Report]:
    """Diagnose several hosts at once, in the order given. `connectors` are (name, connect) pairs; a host that
    cannot be reached or read gets an unreachable report, and the others go on (hosts.read_each)."""
    only = None if only is None else list(only)
    reports = []
    for reading in read_each(connectors, lambda host: diagnose(host, options, plugins=plugins, only=only), workers):
        if reading.value is None:
            reports.append(Report.unreachable(reading.name, reading.error or "no answer", reading.seconds))
        else:
            # The time to read the host, every round: the report's own is its last round's.
            reports.append(dataclasses.replace(reading.value, host=reading.name, seconds=reading.seconds))
    return reports


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


# ---- what to do: each root cause once, in the order of doing

PROBLEMS = (Status.WARN, Status.FAIL, Status.ERROR)


def follows_from(results: Sequence[CheckResult]) -> dict[str, str]:
    """Each problem that only follows from another: its id -> the id of the need it follows from.

    A problem follows from a check it needs when that check has a problem too, the same install step fixes
    both and its fix commands are among that check's (nothing more to do): agent.capabilities' "no
    alumet-agent binary" follows from agent.binary. A problem with a cause of its own (a sysctl.d file that
    overrides the tool's, beside the missing cap_perfmon) stands alone. The text report says a cause once,
    at the check it follows from."""
    by_id = {r.id: r for r in results}
    follows: dict[str, str] = {}
    for r in results:
        step = r.finding.install_step
        spec = REGISTRY.get(r.id)
        if r.finding.status not in PROBLEMS or step is None or spec is None:
            continue
        for need in spec.needs:
            cause = by_id.get(need)
            if cause is not None and cause.finding.status in PROBLEMS and cause.finding.install_step == step \
                    and set(r.finding.fix) <= set(cause.finding.fix):
                follows[r.id] = need
                break
    return follows


def root_causes(results: Sequence[CheckResult]) -> dict[str, str]:
    """Each problem that follows from another (follows_from): its id -> the id of the problem at the root."""
    follows = follows_from(results)
    roots = {}
    for check_id in follows:
        root = check_id
        while root in follows:
            root = follows[root]
        roots[check_id] = root
    return roots


@dataclass
class Problem:
    """A root cause: a check with a problem that follows from no other, and the problems that follow from it."""

    result: CheckResult
    consequences: list[CheckResult]
    blocks: list[str]  # the plugins it blocks, itself or through its consequences

    @property
    def status(self) -> Status:
        # A warning whose consequences block plugins blocks them too: fixing it unblocks them.
        status = self.result.finding.status
        return Status.FAIL if status is Status.WARN and self.blocks else status


def problems(report: Report) -> list[Problem]:
    """The root causes of `report` in the order of doing: those that block a plugin first, then the other
    failures, then warnings; within each, by install step (the playbook's order), hand-made fixes last."""
    roots = root_causes(report.results)
    consequences: dict[str, list[CheckResult]] = {}
    for r in report.results:
        if r.id in roots:
            consequences.setdefault(roots[r.id], []).append(r)
    order = [p.plugin for p in report.plugins]
    found = []
    for r in report.results:
        if r.finding.status not in PROBLEMS or r.id in roots:
            continue
        behind = consequences.get(r.id, [])
        blocked = {plugin for c in (r, *behind) for plugin in c.blocks}
        found.append(Problem(r, behind, [p for p in order if p in blocked]))

    def urgency(problem: Problem) -> tuple[int, int]:
        rank = 0 if problem.blocks else 1 if problem.status in (Status.FAIL, Status.ERROR) else 2
        step = problem.result.finding.install_step
        return rank, STEPS.index(step) if step in STEPS else len(STEPS)

    return sorted(found, key=urgency)  # stable: registry order among equals


def install_fix(finding: Finding) -> str | None:
    """The alumet-setup command that fixes `finding`: a fix command that runs alumet-setup install, else
    its install step; None when no step of install fixes it."""
    return next((c for c in finding.fix if "alumet-setup install" in c), None) or finding.install_command


def one_command(finding: Finding) -> str | None:
    """The one command that fixes `finding`: install_fix, else its only (or first) fix command; None when
    there is nothing to run."""
    return install_fix(finding) or (finding.fix[0] if finding.fix else None)


def next_step(report: Report) -> str:
    """What the closing `Next:` line says: the command that moves the host forward, or why there is none."""
    todo = problems(report)
    if report.ready:
        better = next((c for p in todo if (c := one_command(p.result.finding))), None)
        return "nothing, this host is ready" + (f" (to improve it: {better})" if better else "")
    failing = [p for p in todo if p.status in (Status.FAIL, Status.ERROR)]
    if failing:
        command = one_command(failing[0].result.finding)
        return command or f"no command fixes {failing[0].result.id}: see its line above"
    judged = {p.plugin: p for p in report.plugins}
    absent = [name for name in report.asked if name in judged and judged[name].verdict == Readiness.NOT_AVAILABLE]
    if absent:
        why = sorted({c for name in absent for c in judged[name].deciding})
        return f"nothing alumet-setup can do: {', '.join(absent)} not available here ({', '.join(why)})"
    unjudged = [name for name in report.asked if name not in judged]
    if unjudged:  # --only-check left out what judges them
        return f"alumet-setup doctor --plugin {','.join(unjudged)}"
    return "see the problems above"


# ---- the text report

@dataclass
class _Row:
    """One line of the text report before wrapping; `mark` characters from `start` get a colour."""

    text: str
    hang: int = 4  # the indentation of its continuation lines
    start: int = 0
    mark: int = 0
    fg: str | None = None
    bold: bool = False

    def lines(self, width: int | None, paint: Callable[[str, str | None, bool], str]) -> list[str]:
        wrapped = wrap(self.text, width, self.hang)
        if not self.mark:
            return wrapped
        if self.start == 0 and self.mark >= len(self.text):  # a whole line in colour (a heading)
            return [paint(line, self.fg, self.bold) for line in wrapped]
        end = self.start + self.mark
        first = wrapped[0]
        if end <= len(first):
            wrapped[0] = first[:self.start] + paint(first[self.start:end], self.fg, self.bold) + first[end:]
        return wrapped


def _marked(indent: str, mark: str, rest: str, fg: str | None, hang: int = 4, bold: bool = False) -> _Row:
    return _Row(f"{indent}{mark}{rest}", hang, len(indent), len(mark), fg, bold)


MIN_WIDTH = 20


def wrap(text: str, width: int | None, hang: int = 4) -> list[str]:
    """`text` cut into lines of at most `width` characters, between words (a word longer than a line is
    cut), continuation lines indented by `hang`; None: one line, as is."""
    if width is None or len(text) <= width:
        return [text]
    import textwrap

    width = max(width, MIN_WIDTH)
    return textwrap.wrap(text, width, subsequent_indent=" " * min(hang, width // 2),
                         break_on_hyphens=False) or [text]


def _titles(results: Sequence[CheckResult], status: Status) -> list[str]:
    """The checks in `status`, by title; a group whose checks all are, by the group's name."""
    by_group: dict[str, list[CheckResult]] = {}
    for r in results:
        by_group.setdefault(r.group, []).append(r)
    names = []
    for group, members in by_group.items():
        chosen = [r.title for r in members if r.finding.status is status]
        whole = len(chosen) == len(members) > 1
        names += [f"{GROUPS.get(group, group)} (all {len(members)})"] if whole else chosen
    return names


def _problem_rows(problem: Problem) -> list[_Row]:
    r = problem.result
    symbol, fg = SYMBOLS[problem.status]
    rows = [_marked("", symbol, f" {r.id}: {r.finding.detail}", fg)]
    if problem.blocks:
        rows.append(_Row(f"      blocks: {', '.join(problem.blocks)}", 14))
    if problem.consequences:
        rows.append(_Row(f"      causes: {', '.join(c.id for c in problem.consequences)}", 14))
    command = install_fix(r.finding)  # one command; -v shows the commands it runs
    remedy = [f"      fix: {command}"] if command else remedy_lines(r.finding)
    rows += [_Row(line, 11) for line in remedy]
    return rows


def _plugin_rows(report: Report) -> list[_Row]:
    """The verdicts, plugins that share one and its deciding checks on one line: blocked, degraded, ready,
    then not available here. The checks are named by id: the problems above say why."""
    roots = root_causes(report.results)
    words = {Readiness.BLOCKED: "blocked by", Readiness.DEGRADED: "degraded by",
             Readiness.NOT_AVAILABLE: "not available here:", Readiness.READY: "ready"}
    rows = []
    for verdict in (Readiness.BLOCKED, Readiness.DEGRADED, Readiness.READY, Readiness.NOT_AVAILABLE):
        shared: dict[tuple[str, ...], list[str]] = {}
        for p in report.plugins:
            if p.verdict == verdict:
                deciding = list(dict.fromkeys(roots.get(c, c) for c in p.deciding))
                # One that needs another of them says nothing more (nvml.library after nvml.device).
                named = [c for c in deciding if not set(getattr(REGISTRY.get(c), "needs", ())) & set(deciding)]
                shared.setdefault(tuple(named), []).append(p.plugin)
        symbol, fg = VERDICT_SYMBOLS[verdict]
        for checks, names in shared.items():
            because = f" {', '.join(checks)}" if checks else ""
            rows.append(_marked("  ", symbol, f" {', '.join(names)}: {words[verdict]}{because}", fg, hang=6))
    unjudged = [name for name in report.asked if name not in {p.plugin for p in report.plugins}]
    if unjudged:
        rows.append(_Row(f"  ? {', '.join(unjudged)}: not judged (the selected checks do not cover it)", 6))
    return rows


def render_text(report: Report, color: bool = False, verbose: bool = False, quiet: bool = False,
                width: int | None = None) -> str:
    """The human report. By default: the passing checks named, each root cause once with what it blocks and
    the one command that fixes it (problems()), the plugin verdicts, and a closing `Next:` line. `verbose`:
    every check with its detail and fix commands, every plugin with its reasons; `quiet`: the problems and
    the Next line only. `width`: wrap lines to it (None: no wrapping). Host strings are escaped first
    (shown), the colours added after: only the tool's own escape sequences reach the terminal."""
    report = shown(report)

    def paint(text: str, fg: str | None, bold: bool = False) -> str:
        if not color or (fg is None and not bold):
            return text
        import click

        return click.style(text, fg=fg, bold=bold)

    heading = f"alumet-setup doctor: {report.host}"
    rows = [_Row(heading, mark=len(heading), bold=True)]
    if report.error is not None:
        rows += [_Row(""), _marked("", "Unreachable", f": {report.error}", "red", bold=True)]
    elif verbose:
        rows += _verbose_rows(report)
    else:
        if not quiet:
            passed, absent = _titles(report.results, Status.OK), _titles(report.results, Status.NOT_AVAILABLE)
            rows += [_marked("", "✓", f" {', '.join(passed)}", "green")] if passed else []
            rows += [_Row(f"– not here: {', '.join(absent)}")] if absent else []
        todo = problems(report)
        if todo and not quiet:
            rows.append(_Row(""))
        for problem in todo:
            rows += _problem_rows(problem)
        if not quiet:
            verdict = "Ready" if report.ready else "Not ready"
            fg = "green" if report.ready else "red"
            rows.append(_Row(""))
            if report.plugins:
                rows += [_marked("", verdict, ":", fg, bold=True), *_plugin_rows(report)]
            else:  # --only-check judged no plugin: the summary says what the checks say
                rows.append(_marked("", verdict, f": {report.summary()}", fg, bold=True))
    if report.error is None:
        rows.append(_marked("", "Next:", f" {next_step(report)}", None, hang=6, bold=True))
    return "\n".join(line for row in rows for line in row.lines(width, paint))


def _verbose_rows(report: Report) -> list[_Row]:
    """Every check with its detail and fix commands, by group, every plugin with all its reasons, and the
    one-line summary (--json's)."""
    rows: list[_Row] = []
    width = max((len(r.title) for r in report.results), default=10)
    first = {g: i for i, g in enumerate(dict.fromkeys(r.group for r in report.results))}
    group = None
    for r in sorted(report.results, key=lambda r: first[r.group]):  # a group once, though registered in parts
        if r.group != group:
            group = r.group
            title = GROUPS.get(group, group)
            rows += [_Row(""), _Row(title, mark=len(title), bold=True)]
        symbol, fg = SYMBOLS[r.finding.status]
        rows.append(_marked("  ", symbol, f" {r.title.ljust(width)}  {r.finding.detail}", fg, hang=width + 6))
        if r.blocks:
            rows.append(_Row(f"      blocks: {', '.join(r.blocks)}", 14))
        rows += [_Row(line, 11) for line in remedy_lines(r.finding)]
    rows += [_Row(""), _Row("Plugins", mark=7, bold=True)]
    pwidth = max((len(p.plugin) for p in report.plugins), default=4)
    for p in report.plugins:
        symbol, fg = VERDICT_SYMBOLS[p.verdict]
        why = f": {p.reasons[0]}" if p.reasons else ""
        rows.append(_marked("  ", symbol, f" {p.plugin.ljust(pwidth)}  {p.verdict}{why}", fg, hang=pwidth + 6))
        rows += [_Row(f"  {' ' * (pwidth + 2)}  also: {extra}", pwidth + 12) for extra in p.reasons[1:]]
    verdict = "Ready" if report.ready else "Not ready"
    rows += [_Row(""), _marked("", verdict, f": {report.summary()}", "green" if report.ready else "red", bold=True)]
    return rows
