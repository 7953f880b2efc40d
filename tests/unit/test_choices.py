"""The install record (alumet_setup/doctor/choices.py, written by roles/install_record): doctor judges a host
against the choices install applied, reads the record safely, and says which choices it used."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from checkhelpers import FIXTURES, FixtureHost, caps_finding, context, copy_fixture, record_choices, stub

from alumet_setup import paths
from alumet_setup.doctor import choices, diagnose, render_text, to_json
from alumet_setup.doctor.checks import agent, hidepid, rapl, sysctl, system  # noqa: F401  (registers the checks)
from alumet_setup.doctor.findings import Finding, Status
from alumet_setup.targets.hosts import LocalHost

ROOT = Path(__file__).parents[2]
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the record must be owned by root (uid 0)")


# ---- the record and the role agree

def test_the_role_records_exactly_the_names_doctor_reads() -> None:
    role_vars = yaml.safe_load((ROOT / "roles/install_record/vars/main.yml").read_text())
    recorded = {name for names in role_vars["install_record_names"].values() for name in names}
    assert recorded == set(choices.CHOICES)
    assert role_vars["install_record_version"] == choices.VERSION
    defaults = yaml.safe_load((ROOT / "roles/install_record/defaults/main.yml").read_text())
    assert defaults["install_record_file"] == paths.CHOICES_FILE


def test_every_recorded_name_is_a_role_option_or_the_granted_fact() -> None:
    options = set()
    for spec in ROOT.glob("roles/*/meta/argument_specs.yml"):
        for entry in (yaml.safe_load(spec.read_text())["argument_specs"] or {}).values():
            options |= set((entry or {}).get("options") or {})
    assert set(choices.CHOICES) - options == {"capabilities_ptrace_granted"}  # set by the capabilities role


# ---- parsing and validation

def test_parse_a_record() -> None:
    record = choices.parse(json.dumps({"version": 1, "choices": {
        "perf_paranoid_value": 1, "perf_paranoid_sysctl_file": "/etc/sysctl.d/zz-alumet.conf",
        "powercap_world_readable": True, "capabilities_ptrace": "auto", "later_option": 3}}))
    assert record.status == "ok" and record.ignored == ("later_option",)
    assert record.values == {"perf_paranoid_value": 1, "perf_paranoid_sysctl_file": "/etc/sysctl.d/zz-alumet.conf",
                             "powercap_world_readable": True, "capabilities_ptrace": "auto"}
    assert choices.describe(record) == (
        "perf_paranoid_value=1, perf_paranoid_sysctl_file=/etc/sysctl.d/zz-alumet.conf, capabilities_ptrace=auto, "
        "powercap_world_readable=true")


@pytest.mark.parametrize(("text", "problem"), [
    ("{", "not valid JSON"),
    ("[" * 9000 + "]" * 9000, "not valid JSON"),  # deeper than Python's recursion limit
    ('{"version": 2, "choices": {}}', "not an install record of version 1"),
    ('{"choices": []}', "not an install record of version 1"),
    ('{"version": 1, "choices": {"perf_paranoid_value": 9}}', "perf_paranoid_value: unexpected value 9"),
    ('{"version": 1, "choices": {"perf_paranoid_value": true}}', "perf_paranoid_value: unexpected value true"),
    ('{"version": 1, "choices": {"powercap_world_readable": "yes"}}',
     'powercap_world_readable: unexpected value "yes"'),
    ('{"version": 1, "choices": {"perf_paranoid_sysctl_file": "local.conf"}}', "perf_paranoid_sysctl_file:"),
    ('{"version": 1, "choices": {"powercap_group": "alumet; rm -rf /"}}', "powercap_group:"),
    ('{"version": 1, "choices": {"capabilities_ptrace": 1}}', "capabilities_ptrace: unexpected value 1"),
    ('{"version": 1, "choices": {"hidepid_policy": "off"}}', "hidepid_policy:"),
])
def test_a_bad_record_is_invalid_as_a_whole(text: str, problem: str) -> None:
    record = choices.parse(text)
    assert record.status == "invalid" and record.values == {}
    assert record.problem is not None and problem in record.problem


@needs_root
def test_read_refuses_what_root_did_not_write(tmp_path: Path) -> None:
    host = FixtureHost(tmp_path)
    assert choices.read(host).status == "absent"
    target = record_choices(tmp_path, {"powercap_world_readable": True})
    assert choices.read(host).values == {"powercap_world_readable": True}
    target.chmod(0o664)
    assert "root-only writable" in (choices.read(host).problem or "")
    target.chmod(0o644)
    os.chown(target, 1000, 1000)
    assert "uid 1000" in (choices.read(host).problem or "")
    os.chown(target, 0, 0)
    target.write_text(" " * (choices.MAX_BYTES + 1))
    assert "more than 16384" in (choices.read(host).problem or "")
    target.unlink()
    other = tmp_path / "elsewhere.json"
    other.write_text(json.dumps({"version": 1, "choices": {"powercap_world_readable": True}}))
    target.symlink_to(other)  # a link could point anywhere: not followed
    assert choices.read(host).problem == "not a regular file (link)"


# ---- the report says what it judged against

@needs_root
def test_system_choices_names_the_choices(tmp_path: Path) -> None:
    record_choices(tmp_path, {"powercap_world_readable": True, "powercap_group": "energy"})
    finding = context(FixtureHost(tmp_path)).finding("system.choices")
    assert finding.status is Status.OK
    assert finding.detail == (f"judged against powercap_group=energy, powercap_world_readable=true "
                              f"({paths.CHOICES_FILE})")
    assert finding.data["choices"] == {"powercap_world_readable": True, "powercap_group": "energy"}


def test_no_record_means_the_defaults(tmp_path: Path) -> None:
    finding = context(FixtureHost(tmp_path)).finding("system.choices")
    assert finding.status is Status.OK and "judged against the install defaults" in finding.detail
    assert finding.data["status"] == "absent"


@needs_root
@pytest.mark.parametrize("text", ["\x00\xff garbage", '{"version": 1, "choices": {"powercap_group": "../../x"}}',
                                  "[" * 9000])
def test_a_corrupt_record_warns_and_the_defaults_apply(tmp_path: Path, text: str) -> None:
    root = copy_fixture("rapl-amd", tmp_path)
    record_choices(root, text=text)
    host = FixtureHost(root)
    report = diagnose(host, only=["system.choices", "rapl.powercap", "agent.capabilities"])
    by_id = {r.id: r.finding for r in report.results}
    assert by_id["system.choices"].status is Status.WARN
    assert f"{paths.CHOICES_FILE} ignored" in by_id["system.choices"].detail
    assert by_id["system.choices"].fix == (f"sudo rm -- {paths.CHOICES_FILE}",)
    assert all(f.status is not Status.ERROR for f in by_id.values()), by_id
    assert "! system.choices: " in render_text(report)  # the warning, in the problems
    json.loads(to_json([report]))


# ---- each recorded choice that changes a verdict

def _energy(root: Path, mode: int, group: str) -> None:
    gid = os.getgid()
    with open(root / "etc/group", "a") as handle:
        handle.write(f"{group}:x:{gid}:\n")
    for energy in root.joinpath(rapl.POWERCAP_DIR.lstrip("/")).rglob("energy_uj"):
        energy.chmod(mode)


@needs_root
def test_powercap_world_readable_as_asked(tmp_path: Path) -> None:
    root = tmp_path / "rapl"
    shutil.copytree(FIXTURES / "rapl-amd", root)
    _energy(root, 0o444, "alumet")
    assert context(LocalHost(root=str(root))).finding("rapl.powercap").status is Status.WARN  # PLATYPUS
    record_choices(root, {"powercap_world_readable": True})
    assert context(LocalHost(root=str(root))).finding("rapl.powercap").status is Status.OK


@needs_root
def test_powercap_group_as_asked(tmp_path: Path) -> None:
    root = tmp_path / "rapl"
    shutil.copytree(FIXTURES / "rapl-amd", root)
    _energy(root, 0o440, "energy")
    assert context(LocalHost(root=str(root))).finding("rapl.powercap").status is Status.WARN  # no group alumet
    record_choices(root, {"alumet_group_name": "energy", "powercap_group": "energy"})
    finding = context(LocalHost(root=str(root))).finding("rapl.powercap")
    assert finding.status is Status.OK and "readable by group energy" in finding.detail


@needs_root
def test_hidepid_group_as_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stub(monkeypatch, "agent.capabilities", caps_finding(has_ptrace=False))
    root = copy_fixture("hidepid/invisible-gid", tmp_path)
    mountinfo = root / "proc/self/mountinfo"
    mountinfo.write_text(mountinfo.read_text().replace("gid=998", "gid=1000"))  # the group alice
    fstab = root / "etc/fstab"
    fstab.write_text(fstab.read_text().replace("gid=998", "gid=1000"))
    assert context(FixtureHost(root)).finding("procfs.hidepid").status is Status.FAIL
    record_choices(root, {"hidepid_group": "alice"})
    finding = context(FixtureHost(root)).finding("procfs.hidepid")
    assert finding.status is Status.OK and finding.data["group"] == "alice"


@needs_root
def test_sysctl_file_as_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stub(monkeypatch, "kernel.perf_probe", Finding(Status.NOT_AVAILABLE, "not probed in this test"))
    stub(monkeypatch, "agent.capabilities", caps_finding())
    root = copy_fixture("sysctl/debian13", tmp_path)
    (root / "etc/sysctl.d/local.conf").write_text("kernel.perf_event_paranoid = 3\n")  # the admin's own
    (root / "etc/sysctl.d/zz-alumet.conf").write_text("kernel.perf_event_paranoid = 2\n")  # written by install
    default = context(FixtureHost(root)).finding("kernel.perf_event_paranoid")
    assert default.status is Status.WARN and "overrides /etc/sysctl.d/local.conf" in default.detail
    record_choices(root, {"perf_paranoid_sysctl_file": "/etc/sysctl.d/zz-alumet.conf", "perf_paranoid_value": 2})
    finding = context(FixtureHost(root)).finding("kernel.perf_event_paranoid")
    assert finding.status is Status.OK, finding.detail
    assert finding.data["overriding_files"] == []


@needs_root
def test_paranoid_value_as_asked_is_what_the_fix_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stub(monkeypatch, "kernel.perf_probe", Finding(Status.NOT_AVAILABLE, "not probed in this test"))
    stub(monkeypatch, "agent.capabilities", caps_finding())
    root = copy_fixture("sysctl/debian13", tmp_path)  # Debian kernel: boots at 3 when nothing sets it
    record_choices(root, {"perf_paranoid_value": 1})
    finding = context(FixtureHost(root)).finding("kernel.perf_event_paranoid")
    assert finding.status is Status.WARN
    assert "echo 'kernel.perf_event_paranoid = 1' | sudo tee /etc/sysctl.d/local.conf" in finding.fix


@pytest.mark.processes
@needs_root
def test_config_file_as_asked_decides_the_ptrace_need(tmp_path: Path) -> None:
    from test_checks_agent import PROCESSES, setcap

    root = copy_fixture("agent/installed", tmp_path)
    custom = root / "etc/alumet/custom.toml"
    custom.parent.mkdir(parents=True)
    custom.write_text(PROCESSES.format(strategy="watcher", regex="", group_mode="slow_but_accurate",
                                       event_mode="quick"))
    setcap(root, "cap_perfmon,cap_sys_nice=ep")
    assert context(FixtureHost(root)).finding("agent.capabilities").status is Status.OK  # default path: no file
    record_choices(root, {"alumet_config_file": "/etc/alumet/custom.toml"})
    finding = context(FixtureHost(root)).finding("agent.capabilities")
    assert finding.status is Status.WARN and "smaps_rollup" in finding.detail


@pytest.mark.processes
@needs_root
def test_ptrace_choice_as_asked(tmp_path: Path) -> None:
    from test_checks_agent import setcap

    root = copy_fixture("agent/installed", tmp_path)
    setcap(root, "cap_perfmon,cap_sys_nice,cap_sys_ptrace=ep")
    assert context(FixtureHost(root)).finding("agent.capabilities").status is Status.OK
    record_choices(root, {"capabilities_ptrace": False})
    finding = context(FixtureHost(root)).finding("agent.capabilities")
    assert finding.status is Status.WARN and "capabilities_ptrace=false" in finding.detail


def test_ptrace_settings_are_what_the_record_accepts() -> None:
    from alumet_setup.hostside import resources
    from alumet_setup.playbook.settings import SettingError, load_specs, parse_settings

    options = load_specs(resources.bundled("roles"))
    for raw, value in (("auto", "auto"), ("true", True), ("false", False)):
        parsed = parse_settings([f"capabilities_ptrace={raw}", f"alumet_service_ptrace={raw}"], options)
        assert parsed == {"capabilities_ptrace": value, "alumet_service_ptrace": value}
        assert choices.parse(json.dumps({"version": 1, "choices": {"capabilities_ptrace": value}})).status == "ok"
    with pytest.raises(SettingError, match="not one of"):
        parse_settings(["capabilities_ptrace=maybe"], options)
