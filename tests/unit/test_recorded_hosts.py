"""Doctor on hosts recorded on real hardware (tests/bed/host_recording.py; tests/fixtures/recorded/): what each
check asked and what the machine answered, replayed, so today's checks are judged on machines this project
cannot keep, whatever machine runs the tests.

h200-vm-ubuntu2404: the GPU machine lent to this project on 2026-12-04 (Ubuntu 24.04.3 in a container on a
Firecracker VM, kernel 6.18, 16 vCPUs, one NVIDIA H200, driver 580.159.04), doctor run as root before any
install. Its boot arguments were reduced to the kernel options (no check reads the rest).
"""

from __future__ import annotations

from pathlib import Path

import host_recording  # tests/bed, put on sys.path by tests/conftest.py
import pytest

from alumet_setup import doctor

RECORDED = Path(__file__).resolve().parents[1] / "fixtures" / "recorded"
H200 = RECORDED / "h200-vm-ubuntu2404.json"


@pytest.fixture(autouse=True)
def _home_as_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Doctor also looks in the caller's ~/.cargo/bin: the record was made by root."""
    monkeypatch.setenv("HOME", "/root")


def replayed(path: Path) -> tuple[doctor.Report, dict, host_recording.ReplayHost]:
    host, recorded = host_recording.load(path)
    return doctor.diagnose(host), recorded, host


@pytest.mark.parametrize("path", sorted(RECORDED.glob("*.json")), ids=lambda p: p.stem)
def test_todays_checks_judge_the_recorded_host_as_doctor_did_there(path: Path) -> None:
    """A check that now judges differently, or asks what the record never saw, is a change to look at:
    re-record on such hardware when it is meant (python tests/bed/host_recording.py OUT.json)."""
    report, recorded, host = replayed(path)
    unrecorded = list(host.unanswered)
    assert unrecorded == [], f"today's checks ask what {path.name} never recorded: {unrecorded[:5]}"
    then = {c["id"]: (c["status"], c["detail"]) for c in recorded["checks"]}
    now = {r.id: (str(r.finding.status), r.finding.detail) for r in report.results}
    assert now == then
    assert report.to_json()["plugins"] == recorded["plugins"]


def test_h200_has_nvml_and_only_the_psys_rapl_domain_through_perf() -> None:
    """What the real GPU machine showed: NVML ready, RAPL only as the perf PMU's psys domain (no powercap
    zones in that VM), paranoid 2, and the agent missing: every plugin blocked by it and nothing else."""
    report, _, _ = replayed(H200)
    status = {r.id: str(r.finding.status) for r in report.results}
    assert status["nvml.device"] == status["nvml.library"] == "ok"
    assert status["rapl.pmu"] == "ok" and "psys" in report.results[[r.id for r in report.results].index(
        "rapl.pmu")].finding.detail
    assert status["rapl.powercap"] == "not-available"
    assert status["agent.binary"] == "fail" and status["agent.service"] == "not-available"
    assert {p.plugin for p in report.plugins if p.verdict == "blocked"} == set(doctor.PLUGINS)
    text = doctor.render_text(report, width=80)
    assert text.splitlines()[-1] == "Next: alumet-setup install"
    # No Rust at all: one cause, said once at rustup (its step installs rustc and cargo too).
    assert "causes: toolchain.rust" in text and "toolchain.rust:" not in text
