"""The VM tier: what the VM scenario (tests/bed/vm_scenario.py, run in the background from the start of the session
by tests/conftest.py) saw on Debian 13 and, in the full tier, Ubuntu 24.04 virtual machines.

What containers cannot show: a kernel of its own (perf_event_paranoid set at boot, /proc remounted from
the fstab, perf_event_open under the kernel's rules), systemd and udev, and a reboot. The tests marked
`kernel` are the kernel scenario that every CI run proves (tests/run.sh, Debian 13); the others need the
full tier's steps (ALUMET_VM_TIER=1). The container tier proves idempotence and check mode; an fstab that
findmnt --verify refuses is test_faults.py's (the VM restored it before its reboot, so booting proved nothing).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, TypeVar

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "bed"))
sys.path.insert(0, str(ROOT / "tests" / "integration"))

import vm as vmbed  # noqa: E402
from bedhost import install_summary  # noqa: E402
from vm_scenario import GROUP, Seen, check  # noqa: E402

pytestmark = pytest.mark.vm
kernel = pytest.mark.kernel

PLATFORMS = vmbed.selected()  # ALUMET_VM_PLATFORMS picks some
SERVICE_USER = "alumet"  # alumet_service_user's default
CAP_PERFMON = 38
CAP_SYS_NICE = 23
CAP_SYS_PTRACE = 19
# The scenario's own steps have timeouts; this only bounds a wait on a thread that never ends.
SCENARIO_WAIT_S = 4 * 3600
T = TypeVar("T")


@pytest.fixture(scope="module")
def seen(vm_scenario: Any) -> Seen:
    s: Seen = vm_scenario.wait(SCENARIO_WAIT_S)
    print(f"VM scenario: timings {s.timings}; VMs {s.vm_timings}")
    return s


def need(value: T | None, seen: Seen, step: str) -> T:
    """What a test judges, or a failure with what stopped the scenario before `step` (a VM that did not boot
    shows its console's last lines there)."""
    if value is None or value == {}:
        pytest.fail(f"the VM scenario stopped before {step}:\n{seen.error[-6000:] or '(no error recorded)'}",
                    pytrace=False)
    return value


@kernel
@pytest.mark.parametrize("name", PLATFORMS)
def test_perf_event_paranoid_is_2_after_the_reboot_as_doctor_predicted(seen: Seen, name: str) -> None:
    before = need(seen.before.get(name), seen, "the first facts")
    boot_default = vmbed.PLATFORMS[name].boot_paranoid
    assert before.paranoid == boot_default, (
        f"{name}: the kernel booted with paranoid {before.paranoid}, expected {boot_default}")
    predicted_by = check(need(seen.doctor_before_reboot.get(name), seen, "doctor after install"),
                         "kernel.perf_event_paranoid")
    assert "boot" in predicted_by["data"], (
        f"{name}: doctor made no boot prediction: {predicted_by['status']}: {predicted_by['detail']}")
    predicted = predicted_by["data"]["boot"]
    after = need(seen.after_reboot.get(name), seen, "the reboot after install")
    shows = f"the host's settings for it:\n{after.paranoid_sources}"
    assert predicted == 2, (f"{name}: doctor predicted paranoid {predicted} at next boot, not 2 "
                            f"({predicted_by['detail']}); {shows}")
    assert after.paranoid == 2, (
        f"{name}: perf_event_paranoid is {after.paranoid} after the reboot, not the 2 the sysctl step set; {shows}")
    assert after.paranoid == predicted, f"{name}: doctor's prediction {predicted} was wrong; {shows}"
    now = check(need(seen.doctor_after_reboot.get(name), seen, "doctor after the reboot"), "kernel.perf_event_paranoid")
    assert now["status"] == "ok", f"{name}: after the reboot doctor says {now['status']}: {now['detail']}"


@kernel
@pytest.mark.parametrize("name", PLATFORMS)
def test_proc_is_remounted_at_boot_with_hidepid_and_the_group_exempt(seen: Seen, name: str) -> None:
    before = need(seen.before.get(name), seen, "the first facts")
    assert "hidepid=invisible" in before.proc_options, (
        f"{name}: the image should boot with hidepid=2: {before.proc_options}")
    after = need(seen.after_reboot.get(name), seen, "the reboot after install")
    c = need(seen.checks.get(name), seen, "the checks after the reboot")
    options = after.proc_options.split(",")
    assert "hidepid=invisible" in options and f"gid={c['gid']}" in options, (
        f"{name}: /proc after the reboot is mounted {after.proc_options}, expected hidepid=invisible,gid={c['gid']}; "
        f"/etc/fstab:\n{after.fstab}")
    assert c["member_sees"], f"{name}: a member of {GROUP} does not see another user's process ({after.proc_options})"
    assert not c["outsider_sees"], (
        f"{name}: a non-member sees another user's process (/proc is mounted {after.proc_options})")


@kernel
@pytest.mark.parametrize("name", PLATFORMS)
def test_udev_rule_is_valid_and_rapl_is_not_available(seen: Seen, name: str) -> None:
    c = need(seen.checks.get(name), seen, "the checks after the reboot")
    assert "70-alumet-powercap.rules" in c["udev_rule"], f"{name}: no udev rule installed: {c['udev_rule']}"
    rc, text = c["udev_verify"]
    assert rc == 0, f"{name}: udevadm refuses the rule:\n{text[-2000:]}"
    report = need(seen.doctor_after_reboot.get(name), seen, "doctor after the reboot")
    rapl = check(report, "rapl.access")
    assert rapl["status"] == "not-available", (
        f"{name}: no RAPL in a VM, doctor says {rapl['status']}: {rapl['detail']}; "
        f"rapl.pmu: {check(report, 'rapl.pmu')['detail']}")
    failed = {c["id"]: c["detail"] for c in report["checks"] if c["status"] == "fail"}
    assert not failed, f"{name}: doctor fails after install and reboot: {failed}"


@kernel
@pytest.mark.parametrize("name", PLATFORMS)
def test_the_service_runs_unprivileged_with_ambient_capabilities(seen: Seen, name: str) -> None:
    c = need(seen.checks.get(name), seen, "the checks after the reboot")
    assert c["is_active"] == "active", f"{name}: alumet.service is {c['is_active']} after the reboot:\n{c['journal']}"
    assert c["uid_name"] == SERVICE_USER, f"{name}: the agent runs as {c['uid_name']!r}, not {SERVICE_USER}"
    assert c["CapAmb"] >> CAP_PERFMON & 1, (
        f"{name}: the agent has no ambient cap_perfmon (CapAmb {c['CapAmb']:#x}): unit {c['unit']}")
    assert c["CapEff"] >> CAP_PERFMON & 1, f"{name}: cap_perfmon is not effective (CapEff {c['CapEff']:#x})"
    # What the stand-in agent does on `run`: it says it is ready, then measures.
    assert "ALUMET agent is ready" in c["journal"], f"{name}: the agent did not start:\n{c['journal']}"
    rows = c["output"].splitlines()
    assert len(rows) >= 2 and rows[0].startswith("metric;"), (
        f"{name}: the agent wrote no measurement to /var/lib/alumet/alumet-output.csv: {c['output'][:500]!r}")
    rc, out, err = c["probe_caps"]
    assert rc == 0, f"{name}: the probe as the service did not run: {err}"
    cpu_wide = json.loads(out)["cpu_wide"]
    paranoid = need(seen.after_reboot.get(name), seen, "the reboot after install").paranoid
    assert cpu_wide["ok"], (
        f"{name}: a CPU-wide perf event is refused to the service's user, with its capabilities, at paranoid "
        f"{paranoid}: {out}")


@kernel
@pytest.mark.parametrize("name", PLATFORMS)
def test_the_service_measures_every_process_root_s_included_through_hidepid(seen: Seen, name: str) -> None:
    """The unit as systemd runs it, with the procfs section every profile includes (its "watcher" strategy: under
    `run` nothing announces a process): per-process cpu_percent rows, PID 1 (root's systemd) among them, which
    the agent's user sees only as a member of the group /proc's hidepid exempts."""
    c = need(seen.checks.get(name), seen, "the checks after the reboot")
    pids = c["process_pids"]
    assert pids, (f"{name}: no per-process cpu_percent_% rows in /var/lib/alumet/alumet-output.csv; the agent "
                  f"said:\n{c['journal'][-2000:]}")
    assert "1" in pids, f"{name}: rows for PIDs {pids[:20]} but not PID 1: the service does not see root's processes"


@pytest.mark.parametrize("name", PLATFORMS)
def test_a_rerun_leaves_the_host_that_runs_the_service_out_as_up_to_date(seen: Seen, name: str) -> None:
    """The unit file is a witness of the install record and doctor's agent.service finds the unit active: the
    host with the service costs a survey, as one without it does (alumet_setup/uptodate.py)."""
    run = need(seen.rerun, seen, "the rerun")
    assert run.returncode == 0, f"the rerun failed:\n{run.stdout[-4000:]}"
    said = [line for line in run.stdout.splitlines() if line.startswith(f"{name}: ")]
    assert said and said[0].startswith(f"{name}: up to date, left out"), f"{name}: {said}\n{run.stdout[-3000:]}"


@pytest.mark.parametrize("name", PLATFORMS)
def test_the_service_step_is_idempotent_and_previews_nothing_when_done(seen: Seen, name: str) -> None:
    for run, what in ((seen.service_check, "install --only service --check"),
                      (seen.service_rerun, "install --only service")):
        run = need(run, seen, what)
        assert run.returncode == 0, f"{what} failed:\n{run.stdout[-4000:]}"
        changed = install_summary(run.stdout)[name][1]
        assert changed == "0", f"{name}: {what} on the installed host changed {changed}:\n{run.stdout[-4000:]}"


@kernel
@pytest.mark.parametrize("name", PLATFORMS)
def test_the_service_keeps_its_ambient_capabilities_because_the_binary_is_on_a_nosuid_mount_there(
        seen: Seen, name: str) -> None:
    """What docs/SECURITY.md says: file capabilities applied at exec would clear the ambient set; the unit's
    sandbox (NoNewPrivileges with a mount namespace) mounts the binary nosuid, so they are not applied."""
    c = need(seen.checks.get(name), seen, "the checks after the reboot")
    assert "cap_perfmon" in c["file_caps"], f"{name}: the binary has no file capabilities: {c['file_caps']!r}"
    assert "nosuid" in c["service_mount"].split(","), (
        f"{name}: the service sees /opt/alumet/bin/alumet-agent on a mount with {c['service_mount']!r}: no nosuid, "
        f"so the kernel applies the file capabilities (CapAmb {c['CapAmb']:#x}, CapEff {c['CapEff']:#x})")
    assert c["CapAmb"] == c["CapEff"], f"{name}: CapAmb {c['CapAmb']:#x} != CapEff {c['CapEff']:#x}"


@kernel
@pytest.mark.parametrize("name", PLATFORMS)
def test_doctor_sees_the_service_and_its_printed_fix_restarts_it(seen: Seen, name: str) -> None:
    now = check(need(seen.doctor_after_reboot.get(name), seen, "doctor after the reboot"), "agent.service")
    assert now["status"] == "ok", f"{name}: after the reboot doctor says {now['status']}: {now['detail']}"
    down, ran, again = need(seen.service_down.get(name), seen, "the stopped service's printed fix")
    assert down["status"] in ("fail", "warn") and down["fix"], f"{name}: doctor on a stopped service: {down}"
    assert ran is not None and ran.returncode == 0, f"{name}: the printed fix {down['fix']} failed: {ran}"
    assert again["status"] == "ok", f"{name}: after {down['fix']}, doctor says {again['status']}: {again['detail']}"


@kernel
@pytest.mark.parametrize("name", PLATFORMS)
def test_without_the_capabilities_the_cpu_wide_event_is_refused(seen: Seen, name: str) -> None:
    rc, out, err = need(seen.checks.get(name), seen, "the checks after the reboot")["probe_nocaps"]
    assert rc == 0, f"{name}: the probe did not run: {err}"
    result = json.loads(out)
    assert result["uid"] != 0, f"{name}: the probe ran as root"
    assert not result["cpu_wide"]["ok"], (
        f"{name}: a CPU-wide event opened without capabilities at paranoid 2: the capabilities prove nothing")


@pytest.mark.parametrize("name", PLATFORMS)
def test_the_service_has_exactly_the_units_capabilities_whatever_the_binarys_file_capabilities(
        seen: Seen, name: str) -> None:
    """docs/SECURITY.md: systemd mounts a NoNewPrivileges= unit's namespace nosuid (no SELinux here), so the
    binary's file capabilities are never applied to the service and its ambient set survives the exec: for
    every combination the service runs with exactly the unit's set, cap_sys_ptrace where the unit grants it."""
    for (file_ptrace, unit_ptrace), caps in need(seen.ptrace.get(name), seen, "the ptrace combinations").items():
        which = f"{name}, capabilities_ptrace={file_ptrace} alumet_service_ptrace={unit_ptrace}"
        assert caps["is_active"] == "active", f"{which}: alumet.service is {caps['is_active']}"
        assert ("cap_sys_ptrace" in caps["file_caps"]) == file_ptrace, f"{which}: file caps {caps['file_caps']!r}"
        assert "nosuid" in caps["service_mount"].split(","), (
            f"{which}: the service sees the binary on a mount with {caps['service_mount']!r}")
        unit = 1 << CAP_PERFMON | 1 << CAP_SYS_NICE | (1 << CAP_SYS_PTRACE if unit_ptrace else 0)
        got = {k: f"{caps[k]:#x}" for k in ("CapAmb", "CapEff", "CapPrm")}
        assert caps["CapAmb"] == caps["CapEff"] == caps["CapPrm"] == unit, (
            f"{which}: the service runs with {got}, the unit grants {unit:#x}")


@kernel
@pytest.mark.parametrize("name", PLATFORMS)
def test_uninstall_and_a_reboot_give_back_the_system_before_install(seen: Seen, name: str) -> None:
    run = need(seen.uninstall, seen, "uninstall")
    assert run.returncode == 0, f"uninstall failed:\n{run.stdout[-6000:]}"
    before = need(seen.before.get(name), seen, "the first facts")
    after = need(seen.after_uninstall.get(name), seen, "the reboot after uninstall")
    assert after.paranoid == before.paranoid, (
        f"{name}: paranoid {after.paranoid} at boot after uninstall, {before.paranoid} before install; the host's "
        f"settings for it:\n{after.paranoid_sources}")
    assert after.proc_options == before.proc_options, f"{name}: /proc {after.proc_options} != {before.proc_options}"
    assert after.fstab == before.fstab, f"{name}: /etc/fstab differs from before install:\n{after.fstab}"
    diff = sorted(set(before.listing.splitlines()) ^ set(after.listing.splitlines()))
    assert not diff, f"{name}: files differ from before install (udev's /etc/udev/rules.d removed?):\n" + "\n".join(
        diff[:40])


@kernel
def test_the_scenario_leaves_the_sessions_stdin_blocking(seen: Seen) -> None:
    """The scenario runs beside every other test of the session, so what its children do to the file descriptions
    they share with it counts: ssh sets O_NONBLOCK on a stdin it inherits, and ansible-playbook (every later role
    test) then refuses to start. Seen once: 52 tests failed after the first kernel scenario in CI."""
    try:
        blocking = os.get_blocking(0)
    except OSError:
        return  # the session has no stdin: nothing shared
    assert blocking, "the test session's stdin is non-blocking after the VM scenario: a child was given it"
