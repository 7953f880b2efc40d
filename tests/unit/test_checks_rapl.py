"""rapl.* checks on fixture trees: a two-socket Intel server, an AMD host, a VM, and this machine."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from checkhelpers import FIXTURES, evaluate, stand_in

from alumet_setup import paths
from alumet_setup.doctor.checks import rapl
from alumet_setup.doctor.findings import Options, Status
from alumet_setup.targets.hosts import LocalHost

ENERGY = rapl.POWERCAP_DIR.lstrip("/")


def tree(tmp_path: Path, name: str, mode: int = 0o400, alumet_gid: int | None = None) -> LocalHost:
    """A writable copy of a fixture with every energy_uj at `mode`; the files belong to our gid, so
    `alumet_gid=os.getgid()` makes them group alumet and any other value leaves them to another group."""
    root = tmp_path / name
    shutil.copytree(os.path.join(FIXTURES, name), root)
    for energy in root.joinpath(ENERGY).rglob("energy_uj"):
        energy.chmod(mode)
    if alumet_gid is not None:
        with open(root / "etc/group", "a") as group:
            group.write(f"alumet:x:{alumet_gid}:\n")
    return LocalHost(root=str(root))


def fixture(name: str) -> LocalHost:
    return LocalHost(root=os.path.join(FIXTURES, name))


def test_pmu_on_a_two_socket_intel_server() -> None:
    f = evaluate(fixture("rapl-intel-2s"), "rapl.pmu")
    assert f.status is Status.OK
    assert f.data["type"] == 24 and f.data["cpumask"] == "0,16" and f.data["vendor"] == "GenuineIntel"
    assert set(f.data["events"]) == {"energy-cores", "energy-pkg", "energy-ram", "energy-psys"}
    assert f.data["events"]["energy-pkg"] == {"config": 2, "scale": 2.3283064365386962890625e-10, "unit": "Joules"}
    assert f.data["events"]["energy-ram"]["scale"] == 1.52587890625e-05


def test_pmu_absent_in_a_vm() -> None:
    f = evaluate(fixture("rapl-none"), "rapl.pmu")
    assert f.status is Status.NOT_AVAILABLE
    assert "/sys/devices/power does not exist" in f.detail


@pytest.mark.parametrize(("release", "status"), [("6.1.0-18-amd64", Status.OK), ("5.15.0-91-generic", Status.WARN)])
def test_pmu_on_amd_is_buggy_before_5_17(tmp_path: Path, release: str, status: Status) -> None:
    host = tree(tmp_path, "rapl-amd")
    Path(host.root, "proc/sys/kernel/osrelease").write_text(release + "\n")
    f = evaluate(host, "rapl.pmu")
    assert f.status is status
    assert list(f.data["events"]) == ["energy-pkg"] and f.data["vendor"] == "AuthenticAMD"


def test_powercap_root_only(tmp_path: Path) -> None:
    f = evaluate(tree(tmp_path, "rapl-intel-2s", 0o400, alumet_gid=os.getgid() + 4242), "rapl.powercap")
    assert f.status is Status.WARN and f.install_step == "powercap"
    assert [z["zone"] for z in f.data["zones"]] == [
        "intel-rapl:0", "intel-rapl:0:0", "intel-rapl:0:1", "intel-rapl:1", "intel-rapl:1:0", "intel-rapl:1:1"]
    assert [z["name"] for z in f.data["zones"]][:3] == ["package-0", "core", "dram"]
    assert {z["mode"] for z in f.data["zones"]} == {"0400"}
    assert not f.data["group_readable"] and not f.data["world_readable"]
    assert len(f.fix) == 1 and "chgrp alumet" in f.fix[0] and "chmod 0440" in f.fix[0]


def test_powercap_group_readable(tmp_path: Path) -> None:
    f = evaluate(tree(tmp_path, "rapl-intel-2s", 0o440, alumet_gid=os.getgid()), "rapl.powercap")
    assert f.status is Status.OK, f.detail
    assert f.data["group_readable"] and {z["group"] for z in f.data["zones"]} == {"alumet"}


def test_powercap_without_the_group(tmp_path: Path) -> None:
    f = evaluate(tree(tmp_path, "rapl-amd", 0o440), "rapl.powercap")
    assert f.status is Status.WARN and f.install_step == "group"
    assert f.fix[0] == "sudo groupadd --system alumet" and "chgrp alumet" in f.fix[1]


def test_powercap_world_readable_is_the_platypus_side_channel(tmp_path: Path) -> None:
    host = tree(tmp_path, "rapl-amd", 0o444, alumet_gid=os.getgid())
    f = evaluate(host, "rapl.powercap")
    assert f.status is Status.WARN and "CVE-2020-8694" in f.detail and f.data["world_readable"]
    asked = evaluate(host, "rapl.powercap", Options(powercap_world_readable=True))
    assert asked.status is Status.OK


def test_powercap_absent_in_a_vm() -> None:
    assert evaluate(fixture("rapl-none"), "rapl.powercap").status is Status.NOT_AVAILABLE


def test_persistence(tmp_path: Path) -> None:
    host = tree(tmp_path, "rapl-intel-2s", 0o440, alumet_gid=os.getgid())
    missing = evaluate(host, "rapl.persistence")
    assert missing.status is Status.WARN and missing.install_step == "powercap"
    assert paths.UDEV_RULE in missing.fix[0] and "udevadm trigger" in missing.fix[1]
    rule = Path(host.root, paths.UDEV_RULE.lstrip("/"))
    rule.parent.mkdir(parents=True)
    rule.write_text("# written by alumet-setup\n" + rapl.udev_rule("alumet") + "\n")
    assert evaluate(host, "rapl.persistence").status is Status.OK
    rule.write_text('ACTION=="add", SUBSYSTEM=="powercap", RUN+="/bin/chmod a+r /sys%p/energy_uj"\n')
    assert evaluate(host, "rapl.persistence").status is Status.WARN
    assert evaluate(host, "rapl.persistence", Options(powercap_world_readable=True)).status is Status.OK
    assert evaluate(fixture("rapl-none"), "rapl.persistence").status is Status.NOT_AVAILABLE


def _agent(monkeypatch: pytest.MonkeyPatch, perfmon: bool, paranoid: int, probe: dict | None = None) -> None:
    stand_in(monkeypatch, "agent.capabilities", Status.OK if perfmon else Status.FAIL,
             fix=None if perfmon else "sudo setcap cap_perfmon=ep /opt/alumet/bin/alumet-agent",
             has_perfmon=perfmon, effective=["cap_perfmon"] if perfmon else [])
    stand_in(monkeypatch, "kernel.perf_event_paranoid", Status.OK, live=paranoid, boot=paranoid)
    stand_in(monkeypatch, "kernel.perf_probe", Status.OK, **(probe or {"judged": "agent", "rapl": False}))


@pytest.mark.parametrize(("perfmon", "paranoid", "status"), [
    (True, 2, Status.OK), (False, 0, Status.OK), (False, 2, Status.FAIL), (True, 3, Status.FAIL),
])
def test_access_through_perf_events(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, perfmon: bool,
                                    paranoid: int, status: Status) -> None:
    _agent(monkeypatch, perfmon, paranoid)
    f = evaluate(tree(tmp_path, "rapl-intel-2s", 0o400, alumet_gid=os.getgid() + 4242), "rapl.access")
    assert f.status is status, f.detail
    if status is Status.FAIL:
        # perf_events refused, then powercap's energy_uj (0400): the agent's last words are powercap's.
        assert rapl.AGENT_POWERCAP_REFUSED in f.detail and f.fix


def test_access_measured_by_the_probe_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # cap_perfmon and paranoid 2 predict success; the probe, run with those privileges, was refused (seccomp).
    _agent(monkeypatch, True, 2, {"judged": "agent", "rapl": True, "cpu_wide_ok": False})
    assert evaluate(tree(tmp_path, "rapl-intel-2s"), "rapl.access").status is Status.FAIL
    _agent(monkeypatch, False, 2, {"judged": "agent", "rapl": True, "cpu_wide_ok": True})
    assert evaluate(tree(tmp_path / "b", "rapl-intel-2s"), "rapl.access").status is Status.OK


def test_access_through_powercap_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _agent(monkeypatch, False, 2)
    f = evaluate(tree(tmp_path, "rapl-amd", 0o440, alumet_gid=os.getgid()), "rapl.access")
    assert f.status is Status.OK and "powercap" in f.detail


def test_access_not_available_in_a_vm() -> None:
    f = evaluate(fixture("rapl-none"), "rapl.access")
    assert f.status is Status.NOT_AVAILABLE


def test_this_machine_is_honest() -> None:
    """Whatever this machine has, no rapl.* check may crash; without RAPL none may claim ok."""
    host = LocalHost()
    found = {c: evaluate(host, c) for c in ("rapl.pmu", "rapl.powercap", "rapl.persistence", "rapl.access")}
    assert all(f.status is not Status.ERROR for f in found.values()), found
    if not rapl.pmu_dir(host) and not rapl.zones(host):
        assert {f.status for f in found.values()} == {Status.NOT_AVAILABLE}


@pytest.mark.parametrize(("pmu", "zones", "powercap_dir", "words"), [
    (True, True, True, rapl.AGENT_POWERCAP_REFUSED),  # perf_events refused, the fallback to powercap too
    (False, True, True, rapl.AGENT_POWERCAP_REFUSED),  # no PMU: powercap only, refused
    (True, False, False, rapl.AGENT_PERF_REFUSED),  # no powercap zone: perf_events only, refused
    (False, False, True, rapl.AGENT_NO_ZONES),  # an empty powercap directory: an empty list of zones
    (False, False, False, rapl.AGENT_BOTH_FAILED),  # neither interface lists anything
])
def test_the_words_the_agent_stops_with_follow_its_own_paths(pmu: bool, zones: bool, powercap_dir: bool,
                                                              words: str) -> None:
    """plugins/rapl/src/lib.rs, consistency.rs, powercap.rs, perf_event.rs at v0.9.5 (docs/alumet-upstream.md)."""
    assert rapl.agent_refusal(pmu, zones, powercap_dir) == words
