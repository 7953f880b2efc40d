"""agent.binary and agent.capabilities on fixture trees (tests/fixtures/agent) and on this machine."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from checkhelpers import FixtureHost, context, copy_fixture, result

from alumet_setup.doctor.checks import agent, system  # noqa: F401  (registers the checks)
from alumet_setup.doctor.findings import Context, Status
from alumet_setup.targets.hosts import LocalHost

REAL = "/opt/alumet/bin/alumet-agent"
LINK = "/usr/local/bin/alumet-agent"
SETCAP = shutil.which("setcap") or next((p for p in ("/usr/sbin/setcap", "/sbin/setcap") if os.path.exists(p)), None)
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="fixture files must be owned by root (uid 0)")
needs_setcap = pytest.mark.skipif(SETCAP is None or os.geteuid() != 0,
                                  reason="needs setcap (libcap2-bin) and root to set a real file capability")


@pytest.fixture
def installed(tmp_path: Path) -> Path:
    return copy_fixture("agent/installed", tmp_path)


def setcap(root: Path, caps: str, path: str = REAL) -> None:
    assert SETCAP is not None
    subprocess.run([SETCAP, caps, str(root / path.lstrip("/"))], check=True)


@pytest.mark.parametrize(("output", "version"), [
    ("alumet-agent 0.9.5\n", "0.9.5"),
    ("alumet-agent 0.9.5-alpha-unknown (built without git)\n", "0.9.5-alpha-unknown"),
    ("warning: config not found\nalumet-agent v0.10.0-rc.1\n", "0.10.0-rc.1"),
    ("1.2.3\n", "1.2.3"),
    ("alumet-agent\n", None),
])
def test_parse_version(output: str, version: str | None) -> None:
    assert agent.parse_version(output) == version


@pytest.mark.processes
@needs_root
def test_installed_link_resolved_and_version_read(installed: Path) -> None:
    host = FixtureHost(installed)
    finding = context(host).finding("agent.binary")
    assert finding.status is Status.OK, finding.detail
    assert finding.data == {"path": LINK, "real_path": REAL, "version": "0.9.5", "problems": []}
    assert finding.detail == f"alumet-agent 0.9.5 at {LINK} -> {REAL}"
    assert host.ran == [(LINK, "--version")]


def test_missing_agent_fails_with_install_fix(tmp_path: Path) -> None:
    finding = context(FixtureHost(tmp_path)).finding("agent.binary")
    assert finding.status is Status.FAIL
    assert (finding.fix, finding.install_step) == (("alumet-setup install",), "agent")
    assert finding.data["path"] is None and finding.data["real_path"] is None


@pytest.mark.processes
@needs_root
def test_agent_path_option(installed: Path) -> None:
    finding = context(FixtureHost(installed), agent_path=REAL).finding("agent.binary")
    assert finding.status is Status.OK and finding.data["path"] == REAL == finding.data["real_path"]
    missing = context(FixtureHost(installed), agent_path="/srv/alumet-agent").finding("agent.binary")
    assert missing.status is Status.FAIL and "/srv/alumet-agent" in missing.detail


@pytest.mark.processes
@needs_root
def test_found_in_search_dirs_off_path(tmp_path: Path) -> None:
    root = copy_fixture("agent/cargo-home", tmp_path)
    finding = context(FixtureHost(root)).finding("agent.binary")
    assert finding.status is Status.OK, finding.detail
    assert finding.data["path"] == "/root/.cargo/bin/alumet-agent"
    assert finding.data["version"] == "0.9.5-alpha-unknown"


@needs_root
def test_group_writable_binary_fails_and_is_not_run(installed: Path) -> None:
    (installed / REAL.lstrip("/")).chmod(0o775)
    host = FixtureHost(installed)
    finding = context(host).finding("agent.binary")
    assert finding.status is Status.FAIL
    assert f"{REAL} is writable by group (mode 0775)" in finding.data["problems"]
    assert finding.fix == (f"sudo chmod go-w {REAL}",)
    assert finding.install_step == "agent"
    assert host.ran == []  # whoever could write it could make doctor run their code


@needs_root
def test_world_writable_directory_fails(installed: Path) -> None:
    (installed / "opt/alumet").chmod(0o777)
    finding = context(FixtureHost(installed)).finding("agent.binary")
    assert finding.status is Status.FAIL
    assert finding.data["problems"] == ["/opt/alumet is writable by group and others (mode 0777)"]
    assert finding.fix == ("sudo chmod go-w /opt/alumet",)


@needs_root
def test_writable_link_directory_fails(installed: Path) -> None:
    (installed / "usr/local/bin").chmod(0o1777)
    finding = context(FixtureHost(installed)).finding("agent.binary")
    assert finding.status is Status.FAIL
    assert finding.data["problems"] == ["/usr/local/bin is writable by group and others (mode 1777)"]


@needs_root
def test_binary_owned_by_a_user_fails(installed: Path) -> None:
    os.chown(installed / REAL.lstrip("/"), 1000, 1000)
    finding = context(FixtureHost(installed)).finding("agent.binary")
    assert finding.status is Status.FAIL
    assert finding.data["problems"] == [f"{REAL} is owned by uid 1000, not root"]
    assert finding.fix == (f"sudo chown root:root {REAL}",)


@needs_root
def test_version_failure_fails(installed: Path) -> None:
    broken = result(rc=127, stderr="alumet-agent: error while loading shared libraries: libssl.so.3: "
                                   "cannot open shared object file: No such file or directory\n")
    finding = context(FixtureHost(installed, canned={"alumet-agent": broken})).finding("agent.binary")
    assert finding.status is Status.FAIL
    assert "libssl.so.3" in finding.detail
    assert finding.install_step == "agent"


@needs_root
def test_unparsable_version_warns(installed: Path) -> None:
    odd = context(FixtureHost(installed, canned={"alumet-agent": result("ALUMET agent, dev build\n")}))
    finding = odd.finding("agent.binary")
    assert finding.status is Status.WARN and finding.data["version"] is None


# ---- agent.capabilities

def test_capabilities_without_agent(tmp_path: Path) -> None:
    finding = context(FixtureHost(tmp_path)).finding("agent.capabilities")
    assert finding.status is Status.FAIL and finding.detail == "no alumet-agent binary"
    assert finding.data["has_perfmon"] is False and finding.data["has_ptrace"] is False


@pytest.mark.processes
@needs_root
def test_no_capabilities_fails_with_one_setcap(installed: Path) -> None:
    finding = context(FixtureHost(installed)).finding("agent.capabilities")
    assert finding.status is Status.FAIL
    assert finding.detail == f"no file capabilities on {REAL}"
    assert finding.fix == (f"sudo setcap 'cap_perfmon=ep cap_sys_nice=ep' {REAL}",)  # nothing here needs ptrace
    assert finding.install_step == "capabilities"


@pytest.mark.processes
@needs_setcap
def test_real_capabilities_ok(installed: Path) -> None:
    setcap(installed, "cap_perfmon=ep cap_sys_nice=ep cap_sys_ptrace=ep")
    finding = context(FixtureHost(installed)).finding("agent.capabilities")
    assert finding.status is Status.OK, finding.detail
    assert finding.data["effective"] == ["cap_sys_ptrace", "cap_sys_nice", "cap_perfmon"]
    assert (finding.data["has_perfmon"], finding.data["has_sys_nice"], finding.data["has_ptrace"]) == (True,) * 3
    assert finding.data["source"] == "xattr"
    assert finding.fix == ()


@pytest.mark.processes
@needs_setcap
def test_no_ptrace_is_ok_where_nothing_needs_it(installed: Path) -> None:
    setcap(installed, "cap_perfmon,cap_sys_nice=ep")  # the user book's cargo section; upstream's before 2026-02
    finding = context(FixtureHost(installed)).finding("agent.capabilities")
    assert finding.status is Status.OK, finding.detail  # no config (agent default), hidepid off
    assert finding.data["ptrace_needed_by"] == [] and finding.data["ptrace_choice"] == "auto"
    assert finding.data["has_perfmon"] and not finding.data["has_ptrace"]


def write(root: Path, path: str, text: str) -> None:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


PROCESSES = """[plugins.procfs.processes]
strategy = "{strategy}"
refresh_interval = "2s"

[[plugins.procfs.processes.groups]]
exe_regex = "{regex}"
poll_interval = "2s"
flush_interval = "4s"
memory_mode = "{group_mode}"

[plugins.procfs.processes.events]
poll_interval = "1s"
flush_interval = "4s"
memory_mode = "{event_mode}"
"""


@needs_setcap
@pytest.mark.parametrize(("settings", "needed"), [
    ({"strategy": "watcher", "regex": "", "group_mode": "quick", "event_mode": "quick"}, None),
    ({"strategy": "watcher", "regex": "", "group_mode": "slow_but_accurate", "event_mode": "quick"}, "smaps_rollup"),
    ({"strategy": "watcher", "regex": "^/usr/bin/python", "group_mode": "quick", "event_mode": "quick"},
     "/proc/PID/exe"),
    # The event strategy reads neither the groups' exe_regex nor their memory_mode.
    ({"strategy": "event", "regex": "x", "group_mode": "slow_but_accurate", "event_mode": "quick"}, None),
    ({"strategy": "event", "regex": "", "group_mode": "quick", "event_mode": "slow_but_accurate"}, "smaps_rollup"),
])
@pytest.mark.processes
def test_ptrace_needed_by_the_config(installed: Path, settings: dict[str, str], needed: str | None) -> None:
    write(installed, "/etc/alumet/alumet-config.toml", PROCESSES.format(**settings))
    setcap(installed, "cap_perfmon,cap_sys_nice=ep")
    finding = context(FixtureHost(installed)).finding("agent.capabilities")
    if needed is None:
        assert finding.status is Status.OK, finding.detail
        return
    assert finding.status is Status.WARN and needed in finding.detail
    assert finding.detail.startswith("cap_sys_ptrace missing: procfs ")
    assert finding.fix == (f"sudo setcap 'cap_perfmon=ep cap_sys_nice=ep cap_sys_ptrace=ep' {REAL}",)
    assert finding.install_step == "capabilities"
    setcap(installed, "cap_perfmon,cap_sys_nice,cap_sys_ptrace=ep")
    assert context(FixtureHost(installed)).finding("agent.capabilities").status is Status.OK


@pytest.mark.processes
@needs_setcap
def test_ptrace_needed_by_hidepid_without_the_group(installed: Path) -> None:
    mountinfo = installed / "proc/self/mountinfo"
    mountinfo.write_text(mountinfo.read_text().replace("- proc proc rw\n", "- proc proc rw,hidepid=invisible\n"))
    write(installed, "/etc/group", "root:x:0:\nalumet:x:998:\n")
    setcap(installed, "cap_perfmon,cap_sys_nice=ep")
    finding = context(FixtureHost(installed)).finding("agent.capabilities")
    assert finding.status is Status.WARN
    assert finding.detail == "cap_sys_ptrace missing: /proc is mounted hidepid=invisible without gid=998"
    mountinfo.write_text(mountinfo.read_text().replace("hidepid=invisible", "hidepid=invisible,gid=998"))
    assert context(FixtureHost(installed)).finding("agent.capabilities").status is Status.OK


@pytest.mark.processes
@needs_setcap
def test_ptrace_as_install_was_asked(installed: Path) -> None:
    write(installed, "/etc/alumet/alumet-config.toml", PROCESSES.format(
        strategy="watcher", regex="", group_mode="slow_but_accurate", event_mode="quick"))
    setcap(installed, "cap_perfmon,cap_sys_nice=ep")
    # capabilities_ptrace=false: the need is reported, not blamed on install; the fix grants it by hand.
    declined = context(FixtureHost(installed), capabilities_ptrace=False).finding("agent.capabilities")
    assert declined.status is Status.WARN and "capabilities_ptrace=false, as install was asked" in declined.detail
    assert declined.install_step is None and "cap_sys_ptrace=ep" in declined.fix[0]
    # Granted against the choice: more privilege than asked for.
    setcap(installed, "cap_perfmon,cap_sys_nice,cap_sys_ptrace=ep")
    extra = context(FixtureHost(installed), capabilities_ptrace=False).finding("agent.capabilities")
    assert extra.status is Status.WARN and "although install was asked capabilities_ptrace=false" in extra.detail
    assert extra.fix == (f"sudo setcap 'cap_perfmon=ep cap_sys_nice=ep' {REAL}",)
    # capabilities_ptrace=true where nothing needs it: fine, and said.
    (installed / "etc/alumet/alumet-config.toml").unlink()
    asked = context(FixtureHost(installed), capabilities_ptrace=True).finding("agent.capabilities")
    assert asked.status is Status.OK and asked.detail.endswith("cap_sys_ptrace as install was asked "
                                                                 "(capabilities_ptrace=true)")


@pytest.mark.processes
@needs_setcap
def test_permitted_but_not_effective_fails(installed: Path) -> None:
    setcap(installed, "cap_perfmon,cap_sys_nice,cap_sys_ptrace=p")
    finding = context(FixtureHost(installed)).finding("agent.capabilities")
    assert finding.status is Status.FAIL and "not effective" in finding.detail
    assert finding.data["has_perfmon"] is False and finding.data["effective"] == []


@pytest.mark.processes
@needs_setcap
def test_missing_required_fails(installed: Path) -> None:
    setcap(installed, "cap_sys_ptrace=ep")
    finding = context(FixtureHost(installed)).finding("agent.capabilities")
    assert finding.status is Status.FAIL
    assert finding.detail == f"missing cap_perfmon, cap_sys_nice on {REAL}"


@pytest.mark.processes
@needs_setcap
@pytest.mark.parametrize(("fixture", "why"), [("agent/nosuid-opt", "/opt is mounted nosuid"),
                                              ("agent/nfs-opt", "/opt is on nfs4")])
def test_capabilities_ignored_by_the_mount(tmp_path: Path, fixture: str, why: str) -> None:
    root = copy_fixture(fixture, tmp_path)
    setcap(root, "cap_perfmon=ep cap_sys_nice=ep cap_sys_ptrace=ep")
    finding = context(FixtureHost(root)).finding("agent.capabilities")
    assert finding.status is Status.WARN
    assert finding.detail == f"capabilities are set but ignored: {why}"
    assert finding.data["has_perfmon"] is False  # what the agent really gets at exec


@pytest.mark.processes
@needs_setcap
def test_prefix_named_mount_does_not_hold_the_binary(installed: Path) -> None:
    # The fixture mounts /opt/alumet-old nosuid: a string prefix of /opt/alumet/..., not a path prefix.
    setcap(installed, "cap_perfmon=ep cap_sys_nice=ep cap_sys_ptrace=ep")
    assert context(FixtureHost(installed)).finding("agent.capabilities").data["ignored_by"] is None


@pytest.mark.processes
@needs_setcap
def test_old_kernel_needs_cap_sys_admin(tmp_path: Path) -> None:
    root = copy_fixture("agent/cargo-home", tmp_path)  # kernel 5.4: no cap_perfmon yet
    real = "/root/.cargo/bin/alumet-agent"
    setcap(root, "cap_sys_nice=ep cap_sys_ptrace=ep", real)
    finding = context(FixtureHost(root)).finding("agent.capabilities")
    assert finding.status is Status.FAIL and finding.detail == f"missing cap_sys_admin on {real}"
    assert finding.fix == (f"sudo setcap 'cap_sys_admin=ep cap_sys_nice=ep' {real}",)
    setcap(root, "cap_sys_admin=ep cap_sys_nice=ep cap_sys_ptrace=ep", real)
    ok = context(FixtureHost(root)).finding("agent.capabilities")
    assert ok.status is Status.OK and ok.data["has_perfmon"] is True


@pytest.mark.processes
@needs_setcap
def test_getcap_disagreement_warns(installed: Path) -> None:
    setcap(installed, "cap_perfmon=ep cap_sys_nice=ep cap_sys_ptrace=ep")
    getcap = installed / "usr/sbin/getcap"
    getcap.parent.mkdir(parents=True)
    getcap.write_text("#!/bin/sh\n")
    getcap.chmod(0o755)
    agreeing = result(f"{REAL} cap_sys_ptrace,cap_sys_nice,cap_perfmon=ep\n")
    host = FixtureHost(installed, canned={"getcap": agreeing})
    assert context(host).finding("agent.capabilities").status is Status.OK
    assert ("/usr/sbin/getcap", REAL) in host.ran
    stale = result(f"{REAL} = cap_sys_nice+ep\n")  # the old output format
    finding = context(FixtureHost(installed, canned={"getcap": stale})).finding("agent.capabilities")
    assert finding.status is Status.WARN and "getcap disagrees" in finding.detail


@pytest.mark.processes
@needs_root
def test_getcap_fallback_when_xattr_unreadable(installed: Path) -> None:
    class NoXattr(FixtureHost):
        def getxattr(self, path: str, name: str) -> bytes | None:
            return None

    getcap = installed / "usr/sbin/getcap"
    getcap.parent.mkdir(parents=True)
    getcap.write_text("#!/bin/sh\n")
    getcap.chmod(0o755)
    host = NoXattr(installed, canned={"getcap": result(f"{REAL} cap_sys_ptrace,cap_sys_nice,cap_perfmon=ep\n")})
    finding = context(host).finding("agent.capabilities")
    assert finding.status is Status.OK and finding.data["source"] == "getcap"


def test_real_machine_gives_valid_findings() -> None:
    ctx = Context(LocalHost())
    for check_id in ("agent.binary", "agent.capabilities"):
        finding = ctx.finding(check_id)
        assert finding.status is not Status.ERROR, finding.detail
        assert finding.detail
        json.dumps(finding.data)
        if finding.status is not Status.OK:
            assert finding.fix and finding.install_step


def podman_bounding_set(installed: Path) -> Path:
    """Podman's default bounding set (no CAP_PERFMON, CAP_SYS_NICE, CAP_SYS_PTRACE) in the fixture's
    /proc/self/status; returns that file."""
    status = installed / "proc" / "self" / "status"
    status.parent.mkdir(parents=True, exist_ok=True)
    status.write_text("Name:\tpython3\nCapBnd:\t00000000800405fb\n")
    return status


@pytest.mark.processes
@needs_setcap
def test_capabilities_beyond_the_bounding_set_fail(installed: Path) -> None:
    # Podman's default bounding set (no CAP_PERFMON, CAP_SYS_NICE, CAP_SYS_PTRACE): execve gets EPERM.
    status = podman_bounding_set(installed)
    setcap(installed, "cap_perfmon=ep cap_sys_nice=ep cap_sys_ptrace=ep")
    finding = context(FixtureHost(installed)).finding("agent.capabilities")
    assert finding.status is Status.FAIL
    assert finding.data["beyond_bounding_set"] == ["cap_sys_ptrace", "cap_sys_nice", "cap_perfmon"]
    assert "EPERM" in finding.detail and "--cap-add=SYS_PTRACE,SYS_NICE,PERFMON" in finding.fix[0]
    status.write_text("Name:\tpython3\nCapBnd:\t000001ffffffffff\n")  # a host's full set
    assert context(FixtureHost(installed)).finding("agent.capabilities").status is Status.OK


@pytest.mark.processes
@needs_setcap
def test_agent_refused_by_the_bounding_set_says_what_to_do(installed: Path) -> None:
    # The agent's capabilities outside a container's bounding set: execve fails for everyone (exit 126).
    # Reinstalling cannot help, so agent.binary gives the --cap-add fix, the same words as agent.capabilities
    # (and as the capabilities role's final run: alumet_setup/hostside/capabilities.py), and no install command.
    podman_bounding_set(installed)
    setcap(installed, "cap_perfmon=ep cap_sys_nice=ep")
    refused = result(rc=126, stderr=f"{LINK}: Operation not permitted\n")
    ctx = context(FixtureHost(installed, canned={"alumet-agent": refused}))
    binary, caps = ctx.finding("agent.binary"), ctx.finding("agent.capabilities")
    assert binary.status is Status.FAIL and caps.status is Status.FAIL
    assert "outside this environment's capability bounding set" in binary.detail
    assert binary.fix == caps.fix == ("start the container with --cap-add=SYS_NICE,PERFMON (podman or docker run), "
                                      "or run the agent on the host",)
    assert binary.install_command is None


@needs_root
def test_a_failing_agent_names_the_install_command_once(installed: Path) -> None:
    ctx = context(FixtureHost(installed, canned={"alumet-agent": result(rc=1, stderr="boom\n")}))
    finding = ctx.finding("agent.binary")
    assert finding.status is Status.FAIL and finding.fix == ()
    assert finding.install_command == "alumet-setup install --only agent"
