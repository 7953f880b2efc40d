"""The doctor runner: isolation of broken checks, plugin verdicts, the JSON contract."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from alumet_setup import doctor
from alumet_setup.findings import REGISTRY, Finding, Status, check
from alumet_setup.hosts import LocalHost

SCHEMA = json.loads((Path(__file__).parents[2] / "docs" / "doctor-schema.json").read_text())


@pytest.fixture
def broken_check():
    doctor.check_ids()  # load the real checks first, so ours comes last

    @check("system.zz_broken", "Broken on purpose")
    def broken(ctx):
        raise RuntimeError("boom")

    yield "system.zz_broken"
    del REGISTRY["system.zz_broken"]


def test_a_check_that_raises_is_an_error_and_the_others_still_run(broken_check):
    results = doctor.run_checks(LocalHost())
    by_id = {r.id: r for r in results}
    assert by_id[broken_check].finding.status is Status.ERROR
    assert "RuntimeError: boom" in by_id[broken_check].finding.detail
    assert by_id["system.os"].finding.status is not Status.ERROR
    assert len(results) == len(REGISTRY)


def test_every_registered_check_has_a_unique_dotted_id_in_a_known_group():
    ids = doctor.check_ids()
    assert len(ids) == len(set(ids))
    for check_id in ids:
        assert REGISTRY[check_id].group in doctor.GROUPS


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
        ({"agent.binary": Status.OK, "procfs.hidepid": Status.OK}, doctor.Verdict.READY),
        ({"agent.binary": Status.OK, "procfs.hidepid": Status.WARN}, doctor.Verdict.DEGRADED),
        ({"agent.binary": Status.FAIL, "procfs.hidepid": Status.OK}, doctor.Verdict.BLOCKED),
        ({"agent.binary": Status.OK, "procfs.hidepid": Status.ERROR}, doctor.Verdict.BLOCKED),
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
    assert verdict.verdict == doctor.Verdict.NOT_AVAILABLE
    assert verdict.reasons == ["nvml.device: no GPU"]


def test_a_failing_recommended_check_only_degrades():
    results = [_result("agent.binary", Status.OK), _result("rapl.access", Status.OK),
               _result("rapl.persistence", Status.FAIL, "no udev rule")]
    (verdict,) = doctor.judge_plugins(results, ["rapl"])
    assert verdict.verdict == doctor.Verdict.DEGRADED
    assert "no udev rule" in verdict.reasons[0]


def test_report_on_this_machine_matches_the_json_schema():
    report = doctor.diagnose(LocalHost())
    document = json.loads(doctor.to_json([report]))
    jsonschema.validate(document, SCHEMA)
    statuses = {c["id"]: c["status"] for c in document["hosts"][0]["checks"]}
    assert set(statuses) == set(REGISTRY)
    # This machine has no RAPL and no NVIDIA GPU: that is "not available", never "ok".
    assert statuses["rapl.pmu"] == "not-available"
    assert statuses["nvml.device"] == "not-available"


def test_text_report_groups_checks_and_ends_with_the_summary():
    report = doctor.diagnose(LocalHost())
    text = doctor.render_text(report)
    lines = text.splitlines()
    assert lines[0] == "alumet-setup doctor: localhost"
    assert "System" in lines and "Plugins" in lines
    assert lines[-1].startswith(("Ready: ", "Not ready: "))
    assert lines[-1].endswith(report.summary())
