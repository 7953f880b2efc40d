"""agent.probe (doctor --probe): the log parser on real agent log shapes, the verdicts, and a run end to end."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest
from checkhelpers import FIXTURES, ScriptedHost, done, evaluate, probe_question, probe_ran, stand_in

from alumet_setup import doctor
from alumet_setup.doctor.checks import agent_probe
from alumet_setup.doctor.checks.agent_probe import PluginOutcome, csv_metric_rows, judge, parse_agent_log
from alumet_setup.doctor.findings import Options, Status
from alumet_setup.targets.hosts import CommandResult, LocalHost

LOGS = Path(FIXTURES) / "agent-logs"
ROOT = Path(__file__).resolve().parents[2]
RAPL_CSV = (
    "metric;timestamp;value;resource_kind;resource_id;consumer_kind;consumer_id;domain;__late_attributes\n"
    "rapl_consumed_energy_J;2026-06-12T09:14:02.2Z;1.93;cpu_package;0;local_machine;;package;\n"
    "rapl_consumed_energy_J;2026-06-12T09:14:02.2Z;1.93;local_machine;;local_machine;;package_total;\n"
)


def log(name: str) -> agent_probe.AgentLog:
    return parse_agent_log((LOGS / f"{name}.log").read_text(encoding="utf-8"))


def test_success_log() -> None:
    parsed = log("success")
    assert parsed.ready and parsed.failed_plugin is None and parsed.error is None
    assert parsed.messages == []


def test_perf_events_denied_log_falls_back_to_powercap() -> None:
    parsed = log("perf-events-denied")
    assert parsed.ready and parsed.failed_plugin is None
    assert parsed.rapl_message() == ("I could not use perf_events to read RAPL energy counters: "
                                     "Permission denied (os error 13).")
    [rapl] = judge(parsed, csv_metric_rows(RAPL_CSV), ["rapl"])
    assert rapl.outcome == "measured" and rapl.message.startswith("through powercap: I could not use perf_events")


def test_powercap_denied_log_stops_the_agent() -> None:
    parsed = log("powercap-denied")
    assert not parsed.ready and parsed.failed_plugin == "rapl"
    assert parsed.error_chain == [
        "startup failure",
        "plugin failed to start: rapl v0.3.1",
        "Could not open /sys/devices/virtual/powercap/intel-rapl/intel-rapl:0/energy_uj. Try to adjust file "
        "permissions.",
        "Permission denied (os error 13)",
    ]
    assert parsed.rapl_message().startswith("I could not use the powercap sysfs to read RAPL energy counters: "
                                            "Could not open /sys/devices/virtual/powercap/")
    rapl, csv = judge(parsed, {}, ["rapl", "csv"])
    assert rapl.outcome == "failed" and "powercap sysfs" in rapl.message
    assert csv == PluginOutcome("csv", "not-started", "the agent stopped at rapl")


def test_no_rapl_pmu_log_is_not_available() -> None:
    parsed = log("no-rapl-pmu")
    assert not parsed.ready and parsed.failed_plugin == "rapl"
    assert parsed.error.startswith("Both perf_events and powercap failed, unable to read RAPL counters: Could not "
                                   "read /sys/devices/power/events.")
    assert parsed.error.endswith("No such file or directory (os error 2)")  # the continuation line joined
    [rapl] = judge(parsed, {}, ["rapl"])
    assert rapl.outcome == "not-available"
    assert rapl.message.startswith("Both perf_events and powercap failed, unable to read RAPL counters")


def test_no_pmu_but_powercap_is_not_a_powercap_problem() -> None:
    parsed = log("no-rapl-pmu-powercap")
    assert parsed.ready
    [rapl] = judge(parsed, csv_metric_rows(RAPL_CSV), ["rapl"])
    assert rapl.outcome == "measured"
    assert rapl.message == "through powercap, the only RAPL interface here (/sys/devices/power does not exist)"


def test_no_powercap_zone_without_pmu_is_not_available() -> None:
    parsed = log("powercap-no-zones")
    assert not parsed.ready and parsed.failed_plugin == "rapl"
    assert parsed.error == "At least one power zone is required for PowercapProbe"
    [rapl] = judge(parsed, {}, ["rapl"])
    assert rapl.outcome == "not-available"


def test_powercap_list_failed_then_perf_refused_is_a_perf_problem() -> None:
    parsed = log("powercap-list-failed")
    assert parsed.messages[0].startswith("Cannot read the list of RAPL domains available via the powercap interface")
    assert parsed.error == "At least one power zone is required for PowercapProbe"
    [rapl] = judge(parsed, {}, ["rapl"])
    assert rapl.outcome == "failed" and rapl.message.startswith("I could not use perf_events")


@pytest.mark.parametrize(("fixture", "plugin", "cause"), [
    ("pre-pipeline-start-failed", "aggregation", 'metric "cpu_percent" not found'),
    ("post-pipeline-start-failed", "socket-control", "Address already in use (os error 98)"),
])
def test_a_plugin_failing_after_its_start_is_named(fixture: str, plugin: str, cause: str) -> None:
    parsed = log(fixture)
    assert not parsed.ready and parsed.failed_plugin == plugin and parsed.error == cause
    rapl, csv = judge(parsed, {}, ["rapl", "csv"])
    assert rapl == PluginOutcome("rapl", "not-started", f"the agent stopped at {plugin}")
    assert csv.outcome == "not-started"


def test_pipeline_failure_is_no_plugins_fault() -> None:
    parsed = log("pipeline-failed")
    assert not parsed.ready and parsed.failed_plugin is None and parsed.pipeline_failed
    outcomes = judge(parsed, {}, ["rapl", "csv"])
    assert {o.outcome for o in outcomes} == {"failed"}
    assert outcomes[0].message == ("the measurement pipeline failed to build: Resource temporarily unavailable "
                                   "(os error 11)")


def test_ready_without_rows_is_no_data() -> None:
    rapl, csv = judge(log("success"), {"standin_exec_time_s": 1}, ["rapl", "csv"])
    assert rapl.outcome == "no-data" and csv == PluginOutcome("csv", "measured", "1 row")


def test_csv_rows_per_metric() -> None:
    assert csv_metric_rows(RAPL_CSV) == {"rapl_consumed_energy_J": 2}
    assert csv_metric_rows("") == {} and csv_metric_rows("not;a;header\n1;2;3\n") == {}


# ---- the check ----------------------------------------------------------------------------------

def test_not_run_unless_asked_and_no_verdict_uses_it() -> None:
    f = evaluate(LocalHost(), "agent.probe", Options())
    assert f.status is Status.NOT_AVAILABLE and f.detail == "not run (use --probe)"
    assert all("agent.probe" not in needs.required + needs.recommended for needs in doctor.PLUGINS.values())


def test_refuses_to_run_an_unsafe_binary(monkeypatch: pytest.MonkeyPatch) -> None:
    stand_in(monkeypatch, "agent.binary", Status.FAIL, "unsafe to carry capabilities: /tmp is writable",
             path="/tmp/alumet-agent")
    host = ScriptedHost(os.path.join(FIXTURES, "agent-logs"))
    f = evaluate(host, "agent.probe", Options(probe=True))
    assert f.status is Status.FAIL and f.detail.startswith("cannot probe: unsafe")
    assert host.calls == []


class ProbeHost(ScriptedHost):
    """The probe's one command (host_answers.run_in_tmpdir, through python3) answered with a fixture agent log
    and CSV; `asked` keeps the question it got."""

    def __init__(self, agent_log: str, csv_text: str | None, paranoid: str | None = "2\n"):
        super().__init__(root=FIXTURES)
        self.agent_log, self.csv_text, self.paranoid = agent_log, csv_text, paranoid
        self.script = self.answer
        self.asked: list = []

    def answer(self, argv: Sequence[str]) -> CommandResult:
        asked = probe_question(argv)
        if asked is not None:
            self.asked.append(asked[1])
            return probe_ran(argv, asked[0], 0 if self.csv_text is not None else 1, self.agent_log, self.csv_text)
        return done(argv, "1000\n" if argv[0] == "id" else "")

    def read_text(self, path: str) -> str | None:
        return self.paranoid if path == "/proc/sys/kernel/perf_event_paranoid" else None


@pytest.mark.parametrize(
    ("fixture", "csv_text", "status", "step"),
    [
        ("success", RAPL_CSV, Status.OK, None),
        ("perf-events-denied", RAPL_CSV, Status.WARN, "capabilities"),
        ("powercap-denied", None, Status.FAIL, "powercap"),
        ("no-rapl-pmu", None, Status.NOT_AVAILABLE, None),
        ("no-rapl-pmu-powercap", RAPL_CSV, Status.OK, None),
        ("powercap-no-zones", None, Status.NOT_AVAILABLE, None),
        ("powercap-list-failed", None, Status.FAIL, "capabilities"),
        ("pre-pipeline-start-failed", None, Status.FAIL, None),
        ("post-pipeline-start-failed", None, Status.FAIL, None),
        ("pipeline-failed", None, Status.FAIL, None),
    ],
)
def test_probe_on_each_agent_log(monkeypatch: pytest.MonkeyPatch, fixture: str, csv_text: str | None,
                                 status: Status, step: str | None) -> None:
    stand_in(monkeypatch, "agent.binary", Status.OK, path="/usr/local/bin/alumet-agent")
    host = ProbeHost((LOGS / f"{fixture}.log").read_text(encoding="utf-8"), csv_text)
    f = evaluate(host, "agent.probe", Options(probe=True))
    assert (f.status, f.install_step) == (status, step), f.detail
    [[prefix, files, argv, timeout, read]] = host.asked  # one command for the whole run
    assert prefix == "/tmp/alumet-probe." and read == ["probe.csv"] and timeout == agent_probe.AGENT_TIMEOUT
    assert 'output_path = "probe.csv"' in files["alumet-config.toml"]  # in the run's own directory
    assert argv == ["/usr/local/bin/alumet-agent", "--config", "alumet-config.toml", "exec", "sleep", "1"]
    assert f.data["tmpdir"] == "/tmp/alumet-probe.abc123"


@pytest.mark.parametrize(("paranoid", "step"), [("3\n", "sysctl"), ("4\n", "sysctl"), ("2\n", "capabilities"),
                                               ("1\n", "capabilities"), (None, "capabilities")])
@pytest.mark.parametrize("fixture", ["perf-events-denied", "powercap-list-failed"])
def test_perf_refusal_points_at_sysctl_above_2(monkeypatch: pytest.MonkeyPatch, fixture: str, paranoid: str | None,
                                              step: str) -> None:
    # Debian's paranoid 3 (Ubuntu's 4) refuses perf_event_open even with cap_perfmon: capabilities cannot fix it.
    stand_in(monkeypatch, "agent.binary", Status.OK, path="/usr/local/bin/alumet-agent")
    csv_text = RAPL_CSV if fixture == "perf-events-denied" else None
    host = ProbeHost((LOGS / f"{fixture}.log").read_text(encoding="utf-8"), csv_text, paranoid)
    f = evaluate(host, "agent.probe", Options(probe=True))
    assert f.install_step == step, f.detail
    assert ("lower it to 2" in f.detail) == (step == "sysctl")
    assert f.data["perf_event_paranoid"] == (int(paranoid) if paranoid else None)


# ---- end to end with the test bed's stand-in agent ----------------------------------------------

@pytest.fixture(scope="module")
def standin_agent(tmp_path_factory: pytest.TempPathFactory) -> str:
    """tests/bed/standin built with cargo (a few seconds; it needs only pkg-config and libssl-dev)."""
    source = ROOT / "tests" / "bed" / "standin"
    missing = [tool for tool in ("cargo", "pkg-config") if shutil.which(tool) is None]
    if missing or not (source / "Cargo.toml").is_file():
        pytest.skip(f"stand-in agent not buildable here: {', '.join(missing) or 'tests/bed/standin is missing'}")
    target = tmp_path_factory.mktemp("standin-target")
    build = subprocess.run(["cargo", "build", "--offline", "--release", "--target-dir", str(target)], cwd=source,
                           capture_output=True, text=True, timeout=300, check=False)
    if build.returncode != 0:
        pytest.skip(f"stand-in agent did not build: {(build.stderr.strip().splitlines() or ['?'])[-1]}")
    return str(target / "release" / "alumet-agent")


@pytest.mark.processes
def test_probe_end_to_end_with_the_standin(monkeypatch: pytest.MonkeyPatch, standin_agent: str) -> None:
    # The stand-in sits under /tmp, which agent.binary rightly calls unsafe: vouch for it here.
    stand_in(monkeypatch, "agent.binary", Status.OK, path=standin_agent)
    f = evaluate(LocalHost(), "agent.probe", Options(probe=True))
    assert f.data["tmpdir"].startswith("/tmp/alumet-probe.") and not os.path.exists(f.data["tmpdir"])
    # The stand-in reads RAPL as upstream does: where neither the PMU nor powercap exists, the agent stops.
    if not os.path.exists("/sys/devices/power") and not os.path.exists("/sys/devices/virtual/powercap/intel-rapl"):
        assert not f.data["ready"] and f.data["rc"] == 1
        assert f.data["plugins"]["rapl"]["outcome"] == "not-available"
        assert f.data["plugins"]["csv"] == {"outcome": "not-started", "message": "the agent stopped at rapl"}
        assert f.status is Status.NOT_AVAILABLE and f.install_step is None
    else:
        assert f.data["plugins"]["rapl"]["outcome"] in ("measured", "failed"), f.detail


@pytest.mark.processes
def test_the_probe_keeps_its_order_where_a_remote_host_is_read_in_batches(monkeypatch: pytest.MonkeyPatch,
                                                                          standin_agent: str) -> None:
    """Over SSH doctor asks its questions in rounds (alumet_setup/targets/batched_host.py): the probe's steps (its
    directory, the configuration, the run, the CSV, the cleanup) are one question, so they keep their order."""
    from alumet_setup.targets.batched_host import BatchedHost, one_command_each

    stand_in(monkeypatch, "agent.binary", Status.OK, path=standin_agent)
    host = BatchedHost(one_command_each(lambda argv, timeout: LocalHost().run(argv, timeout), "here"), "here")
    batched = doctor.diagnose(host, Options(probe=True), only=["agent.binary", "agent.probe"])
    f = {r.id: r.finding for r in batched.results}["agent.probe"]
    here = evaluate(LocalHost(), "agent.probe", Options(probe=True))
    assert (f.status, f.data["rc"], f.data["plugins"]) == (here.status, here.data["rc"], here.data["plugins"]), f.detail
    assert f.data["tmpdir"].startswith("/tmp/alumet-probe.") and not os.path.exists(f.data["tmpdir"])


@pytest.mark.parametrize(("name", "plugin", "at", "said"), [
    ("panic-invalid-regex", "procfs", "plugins/procfs/src/serde_regex.rs:18:32", "error: unrecognized flag"),
    ("panic-zero-poll-interval", "rapl", "plugins/rapl/src/lib.rs:167:14", "poll_interval must be non-zero"),
])
def test_a_panic_is_the_finding_not_a_generic_failure_to_start(name: str, plugin: str, at: str, said: str) -> None:
    parsed = log(name)
    assert not parsed.ready and parsed.failed_plugin == plugin and parsed.panic_at == at
    assert said in parsed.panic and "\n" not in parsed.panic
    [outcome] = judge(parsed, {}, [plugin])
    assert outcome.outcome == "failed" and outcome.message.startswith(f"the agent panicked at {at}: called ")
    assert said in outcome.message


def test_measuring_through_powercap_is_told_by_the_info_record_too() -> None:
    """`Available RAPL domains (from powercap)` is an INFO record: the only sign when no WARN says it."""
    parsed = parse_agent_log("[2026-06-12T10:02:11Z INFO  plugin_rapl] Available RAPL domains (from powercap): "
                             "package\n[2026-06-12T10:02:11Z INFO  alumet::agent::builder] 🔥 ALUMET agent is ready.\n")
    [rapl] = judge(parsed, csv_metric_rows(RAPL_CSV), ["rapl"])
    assert rapl.outcome == "measured" and rapl.message.startswith("through powercap")


def test_inconsistent_rapl_domains_are_surfaced_as_a_warning() -> None:
    parsed = log("rapl-inconsistent-domains")
    outcomes = judge(parsed, csv_metric_rows(RAPL_CSV), ["rapl"])
    assert "Powercap and perf_events don't report the same RAPL domains" in outcomes[0].message
    assert agent_probe._status(outcomes) is Status.WARN
