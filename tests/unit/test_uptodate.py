"""install's fast path (alumet_setup/uptodate.py): which inputs make a run new, what the install record
must vouch for, which of doctor's findings send a host back to the full run. End to end (the real CLI
against installed hosts): tests/integration/test_remote.py."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml
from checkhelpers import FixtureHost

from alumet_setup import uptodate
from alumet_setup.doctor import CheckResult, Report, choices
from alumet_setup.doctor.findings import Finding, Status
from alumet_setup.playbook import settings

ROOT = Path(__file__).parents[2]
DIGEST = "a" * 64
DEFAULT_STEPS = [s for s in settings.STEPS if s != "service"]


def test_the_role_records_every_step_and_the_unit_file() -> None:
    role_vars = yaml.safe_load((ROOT / "roles/install_record/vars/main.yml").read_text())
    assert role_vars["install_record_steps"] == list(settings.STEPS)
    assert "alumet_service_unit_path" in role_vars["install_record_witness_vars"]


@pytest.mark.parametrize(("only", "skip", "extravars", "expected"), [
    ([], [], {}, DEFAULT_STEPS),
    (["sysctl", "hidepid"], [], {}, ["sysctl", "hidepid"]),
    ([], ["rustup", "powercap"], {}, [s for s in DEFAULT_STEPS if s not in ("rustup", "powercap")]),
    (["service"], [], {}, ["service"]),  # the unit file's sha256 and doctor's agent.service vouch for it
    ([], [], {"alumet_service_enabled": True}, [*DEFAULT_STEPS, "service"]),
    ([], ["service"], {"alumet_service_enabled": True}, DEFAULT_STEPS),
])
def test_the_steps_of_a_run(only: list[str], skip: list[str], extravars: dict, expected: list[str]) -> None:
    assert uptodate.run_steps(only, skip, extravars) == expected


def test_the_digest_changes_with_every_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("lab01\n")
    base = uptodate.run_digest({"perf_paranoid_value": 2}, str(inventory))
    assert base is not None and len(base) == 64
    assert uptodate.run_digest({"perf_paranoid_value": 2}, str(inventory)) == base
    assert uptodate.run_digest({"perf_paranoid_value": 1}, str(inventory)) != base
    assert uptodate.run_digest({"perf_paranoid_value": 2}, None) != base
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "all.yml").write_text("hidepid_policy: disable\n")  # Ansible reads it too
    assert uptodate.run_digest({"perf_paranoid_value": 2}, str(inventory)) != base
    monkeypatch.setattr(uptodate, "MAX_INVENTORY_BYTES", 10)
    assert uptodate.run_digest({}, str(inventory)) is None  # too much to hash: every host runs
    assert uptodate.run_digest({}, str(tmp_path / "missing.ini")) is None


def test_a_new_role_content_is_a_new_digest(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from alumet_setup.hostside import resources

    base = uptodate.run_digest({}, None)
    for name in ("roles", "playbooks", "templates"):
        (tmp_path / name).mkdir()
    monkeypatch.setattr(resources, "bundled", lambda name: tmp_path / name)
    empty = uptodate.run_digest({}, None)
    (tmp_path / "roles" / "main.yml").write_text("---\n")
    assert len({base, empty, uptodate.run_digest({}, None)}) == 3


def record(applied: dict[str, str], files: dict[str, str] | None = None) -> choices.Record:
    return choices.parse(json.dumps({"version": 1, "choices": {}, "applied": applied, "files": files or {}}))


def test_the_record_must_vouch_for_every_step_of_the_run() -> None:
    steps = ["sysctl", "hidepid"]
    assert uptodate.not_applied(record({"sysctl": DIGEST, "hidepid": DIGEST}), steps, DIGEST) is None
    assert uptodate.not_applied(record({"sysctl": DIGEST}), steps, DIGEST) == \
        "not applied with these settings: hidepid"
    assert uptodate.not_applied(record({"sysctl": "b" * 64, "hidepid": "b" * 64}), steps, DIGEST) == \
        "no earlier install with these settings"


@pytest.mark.parametrize("document", [
    {"applied": {"sysctl": "short"}},
    {"applied": {"sysctl; rm": DIGEST}},
    {"applied": ["sysctl"]},
    {"applied": {"sysctl": DIGEST}, "files": {"relative/path": ""}},
    {"applied": {"sysctl": DIGEST}, "files": {"/etc/fstab": "not a digest"}},
    {"applied": {"sysctl": DIGEST}, "files": {f"/f{i}": "" for i in range(17)}},
])
def test_a_malformed_fast_path_record_vouches_for_nothing(document: dict) -> None:
    parsed = choices.parse(json.dumps({"version": 1, "choices": {"perf_paranoid_value": 2}, **document}))
    assert parsed.status == "ok" and parsed.values == {"perf_paranoid_value": 2}  # doctor still judges by it
    assert parsed.applied == {} and parsed.files == {}


def test_a_changed_or_vanished_file_is_seen(tmp_path: Path) -> None:
    host = FixtureHost(tmp_path)
    (tmp_path / "etc").mkdir()
    conf = tmp_path / "etc" / "local.conf"
    conf.write_text("kernel.perf_event_paranoid = 2\n")
    sums = {"/etc/local.conf": hashlib.sha256(conf.read_bytes()).hexdigest(), "/etc/absent.rules": ""}
    assert uptodate.changed_file(host, sums) is None
    conf.write_text("kernel.perf_event_paranoid = 1\n")
    assert uptodate.changed_file(host, sums) == "/etc/local.conf changed since the last install"
    conf.unlink()
    assert uptodate.changed_file(host, sums) == "/etc/local.conf changed since the last install"
    conf.mkdir()  # not a file any more
    assert uptodate.changed_file(host, sums) == "/etc/local.conf changed since the last install"
    (tmp_path / "etc" / "absent.rules").write_text("")  # a file that was absent appeared
    assert uptodate.changed_file(host, {"/etc/absent.rules": ""}) == \
        "/etc/absent.rules changed since the last install"


def report(*findings: tuple[str, Finding]) -> Report:
    return Report("lab01", [CheckResult(check_id, check_id, check_id.split(".")[0], finding, 0.0)
                            for check_id, finding in findings], [], 0.1)


def test_doctor_objects_only_to_what_a_step_of_the_run_would_fix() -> None:
    steps = ["sysctl", "capabilities"]
    harmless = report(
        ("rapl.access", Finding(Status.NOT_AVAILABLE, "no RAPL")),
        ("toolchain.rustup", Finding(Status.WARN, "no rustup (only needed to rebuild alumet-agent)",
                                     install_step="rustup", data={"agent_installed": True})),
        ("toolchain.git", Finding(Status.WARN, "git not found: optional", install_step="prereqs")),
        ("procfs.hidepid", Finding(Status.FAIL, "hidepid=2", install_step="hidepid")),  # not a step of this run
        ("kernel.perf_event_paranoid", Finding(Status.OK, "live 2 with cap_perfmon")),
    )
    assert uptodate.doctor_objection(harmless, steps) is None
    assert uptodate.doctor_objection(harmless, [*steps, "rustup", "prereqs"]) is None  # only a rebuild needs them
    rustup = report(("toolchain.rustup", Finding(Status.FAIL, "no rustup", install_step="rustup")))
    assert uptodate.doctor_objection(rustup, ["rustup"]) == "doctor: toolchain.rustup: no rustup"
    sysctl = report(("kernel.perf_event_paranoid", Finding(Status.WARN, "a reboot will set 3", install_step="sysctl")))
    assert uptodate.doctor_objection(sysctl, steps) == "doctor: kernel.perf_event_paranoid: a reboot will set 3"
    broken = report(("agent.binary", Finding(Status.ERROR, "check crashed")))
    assert uptodate.doctor_objection(broken, steps) == "doctor: agent.binary: check crashed"


def test_a_survey_that_breaks_runs_the_host_instead(monkeypatch: pytest.MonkeyPatch) -> None:
    from alumet_setup import doctor
    from alumet_setup.targets import connection

    monkeypatch.setattr(connection, "connect", lambda target, sessions=None: FixtureHost("/nonexistent"))
    monkeypatch.setattr(doctor, "diagnose", lambda host: (_ for _ in ()).throw(RuntimeError("boom")))
    monkeypatch.setattr(choices, "read", lambda host: record({"sysctl": DIGEST}))
    [survey] = uptodate.survey([("lab01", None)], ["sysctl"], DIGEST)
    assert not survey.up_to_date and survey.reason == "not surveyed (RuntimeError: boom)"


def test_uninstall_has_nothing_to_do_only_where_install_recorded_nothing(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """uptodate.untouched: no /var/lib/alumet-setup, nothing to remove; the directory (even empty, even a link
    somewhere else) or a host that cannot be read sends the host through the play."""
    from alumet_setup.targets import connection, hosts

    fresh, installed, linked = tmp_path / "fresh", tmp_path / "installed", tmp_path / "linked"
    (installed / "var/lib/alumet-setup").mkdir(parents=True)
    (linked / "var/lib").mkdir(parents=True)
    (linked / "var/lib/alumet-setup").symlink_to("/nonexistent")
    fresh.mkdir()
    roots = {"fresh": fresh, "installed": installed, "linked": linked}

    def connect(target: str, sessions: object = None) -> FixtureHost:
        if target == "gone":
            raise hosts.HostError("gone: connection refused")
        return FixtureHost(roots[target])

    monkeypatch.setattr(connection, "connect", connect)
    found = {s.host: (s.up_to_date, s.reason) for s in uptodate.untouched(
        [(name, name) for name in ("fresh", "installed", "linked", "gone")])}
    assert found == {"fresh": (True, "up to date"), "installed": (False, "/var/lib/alumet-setup is there"),
                     "linked": (False, "/var/lib/alumet-setup is there"), "gone": (False, "connection refused")}
