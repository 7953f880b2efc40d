"""The doctor runner: isolation of broken checks, plugin verdicts, the JSON contract."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from alumet_setup import doctor
from alumet_setup.doctor.findings import REGISTRY, Finding, Status, check
from alumet_setup.targets.hosts import LocalHost

SCHEMA = json.loads((Path(__file__).parents[2] / "docs" / "doctor-schema.json").read_text())


@pytest.fixture
def broken_check():
    doctor.check_ids()  # load the real checks first, so ours comes last

    @check("system.zz_broken", "Broken on purpose")
    def broken(ctx):
        raise RuntimeError("boom")

    yield "system.zz_broken"
    del REGISTRY["system.zz_broken"]


@pytest.mark.processes
def test_a_check_that_raises_is_an_error_and_the_others_still_run(broken_check):
    results = doctor.run_checks(LocalHost())
    by_id = {r.id: r for r in results}
    assert by_id[broken_check].finding.status is Status.ERROR
    assert "RuntimeError: boom" in by_id[broken_check].finding.detail
    assert by_id["system.os"].finding.status is not Status.ERROR
    assert len(results) == len(REGISTRY)


def test_a_check_id_is_registered_once_in_a_known_group():
    from alumet_setup.doctor.findings import RegistryError, check

    existing = doctor.check_ids()[0]
    first = REGISTRY[existing]
    with pytest.raises(RegistryError, match="registered twice"):
        check(existing, "again")(lambda ctx: Finding(Status.OK, "x"))
    with pytest.raises(RegistryError, match="unknown group"):
        check("nogroup.x", "x")
    assert REGISTRY[existing] is first


def test_plugins_only_name_registered_checks():
    ids = set(doctor.check_ids())
    for plugin, needs in doctor.PLUGINS.items():
        missing = set(needs.required + needs.recommended) - ids
        assert not missing, f"{plugin} needs unregistered checks {missing}"


def _result(check_id: str, status: Status, detail: str = "x") -> doctor.CheckResult:
    return doctor.CheckResult(check_id, check_id, check_id.split(".")[0], Finding(status, detail), 0.0)


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ({"agent.binary": Status.OK, "procfs.hidepid": Status.OK}, doctor.Readiness.READY),
        ({"agent.binary": Status.OK, "procfs.hidepid": Status.WARN}, doctor.Readiness.DEGRADED),
        ({"agent.binary": Status.FAIL, "procfs.hidepid": Status.OK}, doctor.Readiness.BLOCKED),
        ({"agent.binary": Status.OK, "procfs.hidepid": Status.ERROR}, doctor.Readiness.BLOCKED),
    ],
)
def test_procfs_verdict_follows_its_required_checks(statuses, expected):
    results = [_result(c, s) for c, s in statuses.items()]
    (verdict,) = doctor.judge_plugins(results, ["procfs"])
    assert verdict.verdict == expected


def test_missing_hardware_makes_a_plugin_not_available_rather_than_blocked():
    results = [_result("agent.binary", Status.FAIL), _result("nvml.device", Status.NOT_AVAILABLE, "no GPU"),
               _result("nvml.library", Status.FAIL)]
    (verdict,) = doctor.judge_plugins(results, ["nvml"])
    assert verdict.verdict == doctor.Readiness.NOT_AVAILABLE
    assert verdict.reasons == ["nvml.device: no GPU"]


def test_a_failing_recommended_check_only_degrades():
    results = [_result("agent.binary", Status.OK), _result("rapl.access", Status.OK),
               _result("rapl.persistence", Status.FAIL, "no udev rule")]
    (verdict,) = doctor.judge_plugins(results, ["rapl"])
    assert verdict.verdict == doctor.Readiness.DEGRADED
    assert "no udev rule" in verdict.reasons[0]


@pytest.mark.processes
def test_report_on_this_machine_matches_the_json_schema():
    report = doctor.diagnose(LocalHost())
    document = json.loads(doctor.to_json([report]))
    jsonschema.validate(document, SCHEMA)
    statuses = {c["id"]: c["status"] for c in document["hosts"][0]["checks"]}
    assert set(statuses) == set(REGISTRY)


def test_missing_rapl_and_gpu_are_not_available_never_ok(tmp_path):
    """On a host tree without the power PMU, powercap zones or an NVIDIA device (a fixture, whatever this
    machine has): "not available", never "ok"."""
    report = doctor.diagnose(LocalHost(root=str(tmp_path)), only=["rapl.pmu", "rapl.powercap", "nvml.device"])
    statuses = {r.id: r.finding.status for r in report.results}
    assert statuses == dict.fromkeys(["rapl.pmu", "rapl.powercap", "nvml.device"], Status.NOT_AVAILABLE)


@pytest.mark.processes
def test_verbose_text_report_groups_checks_and_ends_with_the_summary_and_next():
    report = doctor.diagnose(LocalHost())
    text = doctor.render_text(report, verbose=True)
    lines = text.splitlines()
    assert lines[0] == "alumet-setup doctor: localhost"
    assert "System" in lines and "Plugins" in lines
    assert len([line for line in lines if line == "alumet-agent"]) == 1  # a group once, though registered in parts
    assert lines[-2].startswith(("Ready: ", "Not ready: "))
    assert lines[-2].endswith(report.summary())
    assert lines[-1] == f"Next: {doctor.next_step(report)}"


# The report agrees with its legend (issue 15): ✗ only where a plugin is blocked, and then the summary
# says "Not ready" and the exit code is 1; a failure that blocks nothing judged is a warning.

def _report(statuses: dict[str, Status], plugins: list[str]) -> doctor.Report:
    results = [_result(c, s, f"{c} detail") for c, s in statuses.items()]
    verdicts = doctor.judge_plugins(results, plugins)
    return doctor.Report("h", doctor.settle(results, verdicts), verdicts, 0.0)


def _symbols(text: str) -> dict[str, str]:
    """check title -> the symbol of its line, from the Checks part of the verbose text report."""
    checks = text.split("\nPlugins\n")[0]
    return {line.split()[1]: line.split()[0] for line in checks.splitlines() if line.startswith("  ")
            and not line.startswith("      ")}


def test_lost_capabilities_where_perf_is_not_available_is_a_warning_not_a_blocker():
    # The reported case: the binary lost its capabilities, in a container without perf or RAPL.
    report = _report({"agent.binary": Status.OK, "agent.capabilities": Status.FAIL,
                      "kernel.perf_event_paranoid": Status.OK, "kernel.perf_probe": Status.NOT_AVAILABLE,
                      "rapl.access": Status.NOT_AVAILABLE, "rapl.persistence": Status.FAIL},
                     ["perf", "rapl", "csv"])
    text = doctor.render_text(report, verbose=True)
    assert "✗" not in text
    assert _symbols(text)["agent.capabilities"] == "!"
    assert report.ready and text.splitlines()[-2].startswith("Ready: ")
    statuses = {c["id"]: c["status"] for c in report.to_json()["checks"]}
    assert statuses["agent.capabilities"] == "warn" and statuses["rapl.persistence"] == "warn"


def test_a_failure_that_blocks_names_the_plugins_and_the_report_is_not_ready():
    report = _report({"agent.binary": Status.OK, "procfs.hidepid": Status.FAIL, "rapl.access": Status.OK},
                     ["procfs", "energy-attribution", "csv"])
    text = doctor.render_text(report, verbose=True)
    assert _symbols(text)["procfs.hidepid"] == "✗"
    assert "      blocks: procfs, energy-attribution" in text.splitlines()
    assert not report.ready and text.splitlines()[-2].startswith("Not ready: ")
    (hidepid,) = [c for c in report.to_json()["checks"] if c["id"] == "procfs.hidepid"]
    assert hidepid["status"] == "fail" and hidepid["blocks"] == ["procfs", "energy-attribution"]


def test_a_failure_of_a_plugin_left_out_by_plugin_selection_is_a_warning():
    report = _report({"agent.binary": Status.OK, "procfs.hidepid": Status.FAIL}, ["csv"])
    assert report.ready and _symbols(doctor.render_text(report, verbose=True))["procfs.hidepid"] == "!"


def test_a_check_that_broke_stays_an_error_and_names_what_it_blocks():
    report = _report({"agent.binary": Status.ERROR, "toolchain.git": Status.FAIL}, ["csv"])
    text = doctor.render_text(report, verbose=True)
    assert _symbols(text)["agent.binary"] == "?" and "      blocks: csv" in text.splitlines()
    assert _symbols(text)["toolchain.git"] == "!"  # no plugin needs git to run
    assert not report.ready


def test_every_cross_is_a_blocker_and_the_exit_code_follows():
    """A failure of a required check is a cross naming the plugin it blocks, and the host is not ready (the
    same failure where no judged plugin requires it: test_a_failure_of_a_plugin_left_out_...)."""
    blocking = _report({"agent.binary": Status.OK, "procfs.hidepid": Status.FAIL}, ["procfs"])
    text = doctor.render_text(blocking, verbose=True)
    assert _symbols(text)["procfs.hidepid"] == "✗" and "      blocks: procfs" in text.splitlines()
    assert not blocking.ready


def _check_result(finding: Finding, check_id: str = "config.file") -> doctor.CheckResult:
    return doctor.CheckResult(check_id, "Title", check_id.split(".")[0], finding, 0.0)


def test_fix_commands_are_numbered_steps_and_the_install_step_an_alternative():
    finding = Finding(Status.FAIL, "x", fix=["sudo groupadd --system alumet", "sudo mount -o remount /proc"],
                      install_step="hidepid")
    assert doctor.remedy_lines(finding) == [
        "      fix:",
        "        1. sudo groupadd --system alumet",
        "        2. sudo mount -o remount /proc",
        "       or: alumet-setup install --only hidepid",
    ]
    one = Finding(Status.FAIL, "x", fix="sudo sysctl -w kernel.perf_event_paranoid=2", install_step="sysctl")
    assert doctor.remedy_lines(one) == ["      fix: sudo sysctl -w kernel.perf_event_paranoid=2",
                                        "       or: alumet-setup install --only sysctl"]


def test_no_orphan_or_duplicate_or_line():
    # An install step alone is the fix itself (check config.file).
    alone = Finding(Status.WARN, "x", install_step="config")
    assert doctor.remedy_lines(alone) == ["      fix: alumet-setup install --only config"]
    # A fix that already runs alumet-setup install gets no second install line (agent.binary).
    same = Finding(Status.FAIL, "x", fix="alumet-setup install --only agent", install_step="agent")
    assert doctor.remedy_lines(same) == ["      fix: alumet-setup install --only agent"]
    assert doctor.remedy_lines(Finding(Status.OK, "x", install_step="agent")) == []


def test_json_fix_is_a_list_of_commands():
    finding = Finding(Status.FAIL, "x", fix=("a", "b"), install_step="config")
    report = doctor.Report("h", [_check_result(finding), _check_result(Finding(Status.OK, "y"), "config.zz")], [], 0.1)
    document = json.loads(doctor.to_json([report]))
    assert document["schema_version"] == 2
    checks = document["hosts"][0]["checks"]
    assert checks[0]["fix"] == ["a", "b"] and checks[1]["fix"] == []
    assert checks[0]["install"] == "alumet-setup install --only config"
    jsonschema.validate(document, SCHEMA)
    checks[0]["fix"] = "a && b"  # the schema_version 1 shape is refused
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, SCHEMA)


# Verdicts never say Ready when nothing was judged ready (issue 25, item 3).

def test_a_configuration_the_agent_refuses_blocks_every_plugin_it_would_start():
    refused = Finding(Status.FAIL, "alumet-config.toml: invalid regex", data={"present": True})
    results = [_result("agent.binary", Status.OK), _result("procfs.hidepid", Status.OK),
               doctor.CheckResult("config.file", "config", "config", refused, 0.0)]
    verdicts = doctor.judge_plugins(results, ["procfs", "csv"])
    assert [v.verdict for v in verdicts] == [doctor.Readiness.BLOCKED, doctor.Readiness.BLOCKED]
    report = doctor.Report("h", doctor.settle(results, verdicts), verdicts, 0.0)
    assert not report.ready
    [config] = [r for r in report.results if r.id == "config.file"]
    assert config.finding.status is Status.FAIL and config.blocks == ["procfs", "csv"]
    # A missing file is the agent's default, not a refusal: it blocks nothing.
    missing = Finding(Status.FAIL, "missing", data={"present": False})
    results[-1] = doctor.CheckResult("config.file", "config", "config", missing, 0.0)
    assert [v.verdict for v in doctor.judge_plugins(results, ["procfs"])] == [doctor.Readiness.READY]


def test_a_plugin_asked_for_that_is_not_available_here_is_not_ready():
    results = [_result("agent.binary", Status.OK), _result("rapl.access", Status.NOT_AVAILABLE, "no RAPL")]
    verdicts = doctor.judge_plugins(results, ["rapl"])
    asked = doctor.Report("h", doctor.settle(results, verdicts), verdicts, 0.0, asked=("rapl",))
    assert not asked.ready and asked.summary() == "not available here: rapl"
    assert doctor.next_step(asked) == "nothing alumet-setup can do: rapl not available here (rapl.access)"
    assert doctor.Report("h", results, verdicts, 0.0).ready  # not asked for: nothing to say against the host


def test_only_check_runs_say_what_they_judged_and_exit_by_it():
    failing = [_result("system.os", Status.FAIL, "Debian 11 is not supported")]
    report = doctor.Report("h", doctor.settle(failing, [], checks_only=True), [], 0.0, checks_only=True)
    assert report.results[0].finding.status is Status.FAIL  # not turned into a warning
    assert not report.ready and report.summary() == "1 check judged: failed system.os"
    passing = doctor.Report("h", [_result("system.os", Status.OK)], [], 0.0, checks_only=True)
    assert passing.ready and passing.summary() == "1 check judged: none failed"
