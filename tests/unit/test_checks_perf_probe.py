"""The perf_event_open probe script, and kernel.perf_probe's judgement of what it measured."""

from __future__ import annotations

import errno
import json
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Sequence

import pytest
from checkhelpers import FIXTURES, ScriptedHost, done, evaluate, fresh_host, fresh_tree, stand_in

from alumet_setup import doctor
from alumet_setup.doctor.checks import perf_probe
from alumet_setup.doctor.findings import Status
from alumet_setup.hostside import perf_event
from alumet_setup.targets.hosts import CommandResult, LocalHost


def event(name: str, err: int | None = None) -> dict:
    return perf_event._result(err is None, err, 1234 if err is None else None,
                              extra={"event": name, "pid": -1, "cpu": 0})


def raw(uid: int, own: int | None = None, cpu_wide: int | None = None, rapl: bool = True) -> str:
    wide = "power/energy-pkg" if rapl else "cpu-clock"
    return json.dumps({"own": event("task-clock", own), "cpu_wide": event(wide, cpu_wide), "rapl": rapl, "uid": uid})


def test_attr_layout() -> None:
    buf = perf_event.perf_event_attr(24, 2, perf_event.ATTR_DISABLED)
    assert len(buf) == perf_event.PERF_ATTR_SIZE_VER5 == 112
    assert struct.unpack_from("=IIQ", buf, 0) == (24, 112, 2)
    assert struct.unpack_from("=Q", buf, 40) == (1,)
    assert set(bytes(buf)[48:]) == {0}


def test_rapl_event_from_the_pmu_fixture() -> None:
    pmu = os.path.join(FIXTURES, "rapl-intel-2s", "sys/devices/power")
    assert perf_event.rapl_event(pmu) == (24, 2, 0)
    assert perf_event.rapl_event(os.path.join(FIXTURES, "rapl-none", "sys/devices/power")) is None


@pytest.mark.processes
def test_script_runs_standalone_and_reports_consistently() -> None:
    out = subprocess.run([sys.executable, perf_event.__file__, "--pmu", "/nonexistent"], capture_output=True,
                         text=True, check=True, timeout=20).stdout
    result = json.loads(out)
    assert result["rapl"] is False and result["uid"] == os.geteuid()
    for which in ("own", "cpu_wide"):
        ev = result[which]
        assert ev["ok"] == (ev["errno"] is None) and ev["ok"] == (ev["value"] is not None)
        assert ev["ok"] or ev["error"].startswith(errno.errorcode[ev["errno"]])


def _python38() -> str | None:
    """A working Python 3.8 (pyenv shims answer 127 when that version is not selected)."""
    for candidate in (shutil.which("python3.8"), os.path.expanduser("~/.pyenv/versions/3.8.18/bin/python")):
        if candidate and subprocess.run([candidate, "-c", "pass"], capture_output=True).returncode == 0:
            return candidate
    return None


@pytest.mark.processes
def test_script_is_python38_compatible() -> None:
    python38 = _python38()
    if python38 is None:
        pytest.skip("no Python 3.8 here")
    out = subprocess.run([python38, "-c", perf_probe.probe_source()], capture_output=True, text=True, check=True)
    assert set(json.loads(out.stdout)) == {"own", "cpu_wide", "rapl", "uid"}


def test_cap_numbers_and_setpriv_argv() -> None:
    assert perf_probe.cap_numbers(["cap_perfmon", "cap_sys_nice", "cap_38", "cap_chown"]) == [38, 23]
    argv = perf_probe.setpriv_argv("/usr/bin/python3", [38, 23])
    assert argv[:4] == ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    assert "--inh-caps=+cap_38,+cap_23" in argv and "--ambient-caps=+cap_38,+cap_23" in argv
    assert argv[-5:-1] == ["/usr/bin/python3", "-I", "-S", "-c"]
    assert not any(a.startswith("--ambient") for a in perf_probe.setpriv_argv("python3", []))


def host(as_root: str, as_agent: str | None = None, setpriv: bool = True) -> ScriptedHost:
    def script(argv: Sequence[str]) -> CommandResult | None:
        if argv[0] == "setpriv":
            return done(argv, as_agent) if as_agent is not None else done(argv, "", 1, "setpriv: bad cap")
        return done(argv, as_root)

    h = ScriptedHost(os.path.join(FIXTURES, "rapl-intel-2s"), script)
    if not setpriv:
        h.which = lambda command, extra_dirs=(): None  # type: ignore[method-assign]
    else:
        h.which = lambda command, extra_dirs=(): f"/usr/bin/{command}"  # type: ignore[method-assign]
    return h


@pytest.fixture
def agent(monkeypatch: pytest.MonkeyPatch) -> None:
    stand_in(monkeypatch, "agent.binary", Status.OK, path="/usr/local/bin/alumet-agent",
             real_path="/opt/alumet/bin/alumet-agent")
    stand_in(monkeypatch, "agent.capabilities", Status.FAIL, fix="sudo setcap 'cap_perfmon=ep' /opt/alumet/bin/x",
             effective=["cap_perfmon", "cap_sys_nice"], has_perfmon=True)


def test_ok_with_the_agents_capabilities(agent: None) -> None:
    h = host(raw(0), raw(65534))
    f = evaluate(h, "kernel.perf_probe")
    assert f.status is Status.OK and f.data["judged"] == "agent" and f.data["cpu_wide_ok"]
    assert f.data["caps"] == [38, 23] and f.data["probes"]["agent"]["uid"] == 65534
    setpriv_call = next(argv for argv, _ in h.calls if argv[0] == "setpriv")
    assert "--ambient-caps=+cap_38,+cap_23" in setpriv_call


def test_refused_for_the_agent_points_at_capabilities(agent: None) -> None:
    f = evaluate(host(raw(0), raw(65534, cpu_wide=errno.EACCES)), "kernel.perf_probe")
    assert f.status is Status.FAIL and "EACCES" in f.detail
    assert f.install_step == "capabilities" and f.fix[0].startswith("sudo setcap")


@pytest.mark.parametrize("paranoid", ["3\n", "4\n"])
def test_refused_above_2_points_at_sysctl_not_capabilities(agent: None, paranoid: str) -> None:
    # Debian's 3 and Ubuntu's 4 refuse perf_event_open to an agent holding cap_perfmon: setcap cannot help.
    h = host(raw(0), raw(65534, cpu_wide=errno.EACCES))
    real_read = h.read_text
    h.read_text = lambda path, *a, **k: paranoid if path.endswith("perf_event_paranoid") else real_read(path, *a, **k)  # type: ignore[method-assign]
    f = evaluate(h, "kernel.perf_probe")
    assert f.status is Status.FAIL and f.install_step == "sysctl"
    assert f.fix == ("sudo sysctl -w kernel.perf_event_paranoid=2",) and "too strict even with cap_perfmon" in f.detail


def test_without_agent_probes_with_no_capabilities(monkeypatch: pytest.MonkeyPatch) -> None:
    stand_in(monkeypatch, "agent.binary", Status.FAIL)
    h = host(raw(0), raw(65534, cpu_wide=errno.EACCES))
    f = evaluate(h, "kernel.perf_probe")
    assert f.status is Status.FAIL and f.data["caps"] == []


def test_without_agent_the_fix_is_what_installs_and_grants_it() -> None:
    """A fresh host (agent.binary's real check finds no agent): the probe repeats agent.binary's remedy, the
    full install. `install --only agent` grants no capability and stops where Rust is missing (issue 25)."""
    h = host(raw(0), raw(65534, cpu_wide=errno.EACCES))
    h.which = lambda command, extra_dirs=(): None if command == "alumet-agent" else f"/usr/bin/{command}"  # type: ignore[method-assign]
    binary, f = evaluate(h, "agent.binary"), evaluate(h, "kernel.perf_probe")
    assert binary.status is Status.FAIL and binary.fix == ("alumet-setup install",)
    assert f.status is Status.FAIL and f.fix == binary.fix and "no usable alumet-agent" in f.detail
    assert doctor.remedy_lines(f) == ["      fix: alumet-setup install"]


def test_fresh_host_json_fix_of_the_probe_is_the_full_install(tmp_path) -> None:
    """What test_printed_fixes runs on a fresh bed host: --json's `fix` of every agent-dependent check."""
    report = doctor.diagnose(fresh_host(fresh_tree(tmp_path / "root")))
    checks = {c["id"]: c for c in json.loads(doctor.to_json([report]))["hosts"][0]["checks"]}
    for check_id in ("agent.binary", "agent.capabilities", "kernel.perf_probe", "kernel.perf_event_paranoid"):
        assert checks[check_id]["status"] in ("fail", "warn") and checks[check_id]["fix"] == ["alumet-setup install"]


@pytest.mark.parametrize("as_root", [raw(0, own=errno.EPERM, cpu_wide=errno.EPERM), raw(0, cpu_wide=errno.EACCES),
                                     raw(0, own=errno.ENOSYS, cpu_wide=errno.ENOSYS)])
def test_not_available_when_root_is_refused_too(agent: None, as_root: str) -> None:
    f = evaluate(host(as_root, raw(65534)), "kernel.perf_probe")
    assert f.status is Status.NOT_AVAILABLE


def test_not_root_cannot_probe_the_agent(agent: None) -> None:
    assert evaluate(host(raw(1000)), "kernel.perf_probe").status is Status.OK
    f = evaluate(host(raw(1000, cpu_wide=errno.EACCES)), "kernel.perf_probe")
    assert f.status is Status.WARN and f.data["judged"] == "self"


def test_setpriv_missing_or_broken(agent: None) -> None:
    assert evaluate(host(raw(0), setpriv=False), "kernel.perf_probe").status is Status.WARN
    assert evaluate(host(raw(0), None), "kernel.perf_probe").status is Status.ERROR
    assert evaluate(host("Traceback ..."), "kernel.perf_probe").status is Status.ERROR


@pytest.mark.processes
def test_this_machine() -> None:
    """The real probe, as doctor runs it here: measured results, an honest status, never a crash."""
    f = evaluate(LocalHost(), "kernel.perf_probe")
    assert f.status is not Status.ERROR, f.detail
    judged = f.data["probes"][f.data["judged"]]
    assert f.status is not Status.OK or judged["cpu_wide"]["ok"]
    if os.geteuid() == 0 and shutil.which("setpriv") and f.status is not Status.NOT_AVAILABLE:
        assert f.data["judged"] == "agent" and judged["uid"] == perf_probe.NOBODY


def test_probe_json_without_the_json_module_round_trips() -> None:
    from alumet_setup.hostside import perf_event

    value = {"error": 'EACCES: "quoted" \\ back\nslash', "ok": False, "errno": 13, "value": None,
             "nested": {"cpu": -1}}
    assert json.loads(perf_event.to_json(value)) == value
