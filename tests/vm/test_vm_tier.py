"""The VM tier: alumet-setup as the README installs it (the `tool` fixture) against Debian 13 and Ubuntu 24.04
virtual machines (tests/bed/vm.py).

What containers cannot show: a kernel of its own (perf_event_paranoid set at boot, /proc remounted from
the fstab, perf_event_open under the kernel's rules), systemd and udev, and a reboot. One scenario runs
once for both VMs (they boot and install concurrently); the tests below assert on what it saw:

  fstab with hidepid=2 -> install (default steps + service; the agent compiled once, in the Ubuntu 24.04
  bed container, the oldest glibc of the play, and copied by install's build-once) -> doctor -> reboot -> checks ->
  uninstall -> an fstab that would not boot is refused -> reboot -> back to the state before install.

The container tier already proves idempotence and check mode: no rerun here (TCG is slow).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "bed"))
sys.path.insert(0, str(ROOT / "tests" / "integration"))

import services  # noqa: E402
import sshd  # noqa: E402
import vm as vmbed  # noqa: E402
from bedhost import container, install_summary, podman_collection  # noqa: E402
from installed_tool import InstalledTool, without_sudo  # noqa: E402

pytestmark = pytest.mark.vm

PLATFORMS = vmbed.selected()  # ALUMET_VM_PLATFORMS picks some
GROUP = "alumet"  # alumet_group_name / alumet_service_user defaults
SERVICE_USER = "alumet"
CAP_PERFMON = 38
CAP_SYS_NICE = 23
CAP_SYS_PTRACE = 19
# capabilities_ptrace (the binary's file capabilities) x alumet_service_ptrace (the unit's ambient set).
PTRACE_COMBINATIONS = [(file_ptrace, unit_ptrace) for file_ptrace in (False, True) for unit_ptrace in (False, True)]
# The file listing compared before install and after uninstall (as molecule/_shared/snapshot does); the
# backups useradd/groupadd leave (/etc/passwd- ...) are not ours to remove.
LISTING = ("find /etc /opt /usr/local /var/lib/alumet-setup -xdev \\( -path /etc/gshadow- -o -path /etc/shadow- "
           "-o -path /etc/group- -o -path /etc/passwd- -o -path /etc/subuid- -o -path /etc/subgid- \\) -prune "
           "-o -printf '%p %M %u:%g %l\\n' 2>/dev/null | LC_ALL=C sort")
# A mount point that is not a path: findmnt --verify calls it an error (an fstab line for a missing
# device only gets a warning from findmnt, so that is not what is tested here).
BROKEN_LINE = "/dev/vdz srv ext4 defaults 0 2\n"


@dataclass
class Facts:
    """What one VM looked like at one point of the scenario."""

    paranoid: int
    proc_options: str
    listing: str
    fstab: str


@dataclass
class Seen:
    before: dict[str, Facts] = field(default_factory=dict)
    install: subprocess.CompletedProcess | None = None
    doctor_before_reboot: dict[str, dict] = field(default_factory=dict)
    after_reboot: dict[str, Facts] = field(default_factory=dict)
    doctor_after_reboot: dict[str, dict] = field(default_factory=dict)
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)
    uninstall: subprocess.CompletedProcess | None = None
    broken_fstab: dict[str, tuple[subprocess.CompletedProcess, str]] = field(default_factory=dict)
    after_uninstall: dict[str, Facts] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    inventory: Path | None = None
    service_check: subprocess.CompletedProcess | None = None
    service_rerun: subprocess.CompletedProcess | None = None
    rerun: subprocess.CompletedProcess | None = None  # the first install's command again, after the reboot
    # The service stopped by hand: doctor's finding, what its printed fix did, doctor's finding after it.
    service_down: dict[str, tuple[dict, subprocess.CompletedProcess | None, dict]] = field(default_factory=dict)


def facts(vm: vmbed.Vm) -> Facts:
    return Facts(
        paranoid=int(vm.ssh("cat /proc/sys/kernel/perf_event_paranoid").stdout),
        proc_options=vm.ssh("findmnt -n -o OPTIONS /proc").stdout.strip(),
        listing=vm.ssh(LISTING).stdout,
        fstab=vm.ssh("cat /etc/fstab").stdout,
    )


def each(vms: dict[str, vmbed.Vm], fn: Callable[[vmbed.Vm], Any]) -> dict[str, Any]:
    """fn on every VM at once (reboots and checks wait on slow guests)."""
    with concurrent.futures.ThreadPoolExecutor(len(vms)) as pool:
        futures = {name: pool.submit(fn, vm) for name, vm in vms.items()}
        return {name: f.result() for name, f in futures.items()}


def cli(tool: InstalledTool, work: Path, *args: str, timeout: int) -> subprocess.CompletedProcess:
    # The builders are bed containers, reached through containers.podman; fewer round trips per task:
    # under TCG every Python start in the guest is slow.
    return tool.cli(*args, state=work / "state", timeout=timeout,
                    ANSIBLE_COLLECTIONS_PATH=str(podman_collection(work)), ANSIBLE_PIPELINING="True")


def doctor(tool: InstalledTool, work: Path, inventory: Path, names: list[str]) -> dict[str, dict]:
    run = cli(tool, work, "doctor", "-i", str(inventory), *[a for n in names for a in ("--host", n)], "--json",
              timeout=300)
    assert run.returncode in (0, 1), f"doctor did not answer for every VM (rc {run.returncode}):\n{run.stderr}"
    return {h["host"]: h for h in json.loads(run.stdout)["hosts"]}


def service_capabilities(vm: vmbed.Vm) -> dict[str, Any]:
    """The running service's capability sets, the binary's file capabilities, and the options of the mount the
    binary is on as the service's own mount namespace sees it."""
    out: dict[str, Any] = {"is_active": vm.ssh("systemctl is-active alumet", check=False).stdout.strip()}
    pid = vm.ssh("systemctl show -p MainPID --value alumet", check=False).stdout.strip()
    status = vm.ssh(f"cat /proc/{pid}/status", check=False).stdout if pid not in ("", "0") else ""
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    for name in ("CapAmb", "CapEff", "CapPrm"):
        out[name] = int(fields.get(name, "0").strip() or "0", 16)
    out["uid"] = fields["Uid"].split()[0] if "Uid" in fields else ""
    out["file_caps"] = vm.ssh("getcap /opt/alumet/bin/alumet-agent", check=False).stdout.strip()
    out["service_mount"] = vm.ssh(f"findmnt --task {pid} -n -o OPTIONS --target /opt/alumet/bin/alumet-agent",
                                  check=False).stdout.strip() if pid not in ("", "0") else ""
    return out


def service_checks(vm: vmbed.Vm) -> dict[str, Any]:
    """Facts of the rebooted, installed system that doctor does not report, gathered over SSH."""
    out = service_capabilities(vm)
    out["uid_name"] = vm.ssh(f"id -un {out['uid']}", check=False).stdout.strip() if out["uid"] else ""
    out["journal"] = vm.ssh("journalctl -b -u alumet --no-pager -o cat", check=False).stdout
    out["output"] = vm.ssh("head -c 4000 /var/lib/alumet/alumet-output.csv", check=False).stdout
    out["udev_rule"] = vm.ssh("ls /etc/udev/rules.d/", check=False).stdout
    verify = vm.ssh("command -v udevadm >/dev/null && { udevadm verify --help >/dev/null 2>&1 "
                    "&& udevadm verify /etc/udev/rules.d/70-alumet-powercap.rules "
                    "|| udevadm test /sys/class/net/lo; }", check=False, timeout=120)
    out["udev_verify"] = (verify.returncode, verify.stdout + verify.stderr)
    # The probe of doctor (alumet_setup/hostside/perf_event.py) as the service would run it: the unit's own user,
    # ambient capabilities and NoNewPrivileges replayed by systemd-run; then the same without capabilities.
    props = vm.ssh("systemctl show -p User -p Group -p AmbientCapabilities -p NoNewPrivileges alumet").stdout
    p = dict(line.split("=", 1) for line in props.splitlines() if "=" in line)
    out["unit"] = p
    probe = (ROOT / "alumet_setup" / "hostside" / "perf_event.py").read_bytes()
    subprocess.run([*vm.ssh_argv(), "cat > /tmp/perf_event.py"], input=probe, check=True, capture_output=True,
                   timeout=60)
    base = (f"systemd-run --quiet --wait --pipe --collect -p User={p.get('User')} -p Group={p.get('Group')} "
            f"-p NoNewPrivileges={p.get('NoNewPrivileges')}")
    with_caps = vm.ssh(f"{base} -p 'AmbientCapabilities={p.get('AmbientCapabilities')}' "
                       "/usr/bin/python3 /tmp/perf_event.py", check=False, timeout=120)
    without = vm.ssh(f"{base} /usr/bin/python3 /tmp/perf_event.py", check=False, timeout=120)
    out["probe_caps"] = (with_caps.returncode, with_caps.stdout, with_caps.stderr)
    out["probe_nocaps"] = (without.returncode, without.stdout, without.stderr)
    # hidepid: a process of another user (the agent runs as alumet; sleep as nobody is the other one).
    vm.ssh("systemd-run --quiet --collect -p User=nobody --unit=alumet-test-sleeper sleep 600")
    sleeper = vm.ssh("systemctl show -p MainPID --value alumet-test-sleeper").stdout.strip()
    vm.ssh("id alumet-test-member >/dev/null 2>&1 || useradd -M -G alumet alumet-test-member; "
           "id alumet-test-outsider >/dev/null 2>&1 || useradd -M alumet-test-outsider")
    out["member_sees"] = vm.ssh(f"setpriv --reuid alumet-test-member --regid alumet-test-member --init-groups "
                                f"test -d /proc/{sleeper}", check=False).returncode == 0
    out["outsider_sees"] = vm.ssh(f"setpriv --reuid alumet-test-outsider --regid alumet-test-outsider "
                                  f"--init-groups test -d /proc/{sleeper}", check=False).returncode == 0
    vm.ssh("systemctl stop alumet-test-sleeper; userdel alumet-test-member; userdel alumet-test-outsider; "
           "rm -f /tmp/perf_event.py", check=False)
    out["gid"] = vm.ssh(f"getent group {GROUP} | cut -d: -f3", check=False).stdout.strip()
    return out


def broken_fstab(vm: vmbed.Vm, tool: InstalledTool, work: Path,
                 inventory: Path) -> tuple[subprocess.CompletedProcess, str]:
    """Install's hidepid step against an fstab findmnt --verify rejects: refused, nothing written.
    The fstab is put back and the group step undone afterwards, and the last reboot shows the VM still boots."""
    good = vm.ssh("cat /etc/fstab").stdout
    vm.ssh(f"printf %s '{BROKEN_LINE}' >> /etc/fstab")
    broken = vm.ssh("cat /etc/fstab").stdout
    try:
        run = cli(tool, work, "install", "-i", str(inventory), "--host", vm.name, "--only", "group,hidepid",
                  timeout=900)
        after = vm.ssh("cat /etc/fstab").stdout
        return run, "unchanged" if after == broken else f"changed:\n{after}"
    finally:
        subprocess.run([*vm.ssh_argv(), "cat > /etc/fstab"], input=good.encode(), check=True, timeout=60)
        # The group step ran before hidepid refused, and recorded the group as created: the tool's own
        # uninstall takes both away (a hand-made groupdel left /var/lib/alumet-setup/created.json behind,
        # which the listing after the last reboot then shows).
        cli(tool, work, "uninstall", "-i", str(inventory), "--host", vm.name, "--only", "group,hidepid",
            timeout=900)


def service_down(vms: dict[str, vmbed.Vm], tool: InstalledTool, work: Path, inventory: Path,
                 names: list[str]) -> dict[str, tuple[dict, subprocess.CompletedProcess | None, dict]]:
    """The service stopped as an administrator might; doctor's agent.service fix, run as printed (root, no
    sudo), must get it running again (the printed-fix test of the container tier cannot: no systemd there)."""
    each(vms, lambda v: v.ssh("systemctl stop alumet"))
    down = doctor(tool, work, inventory, names)
    ran: dict[str, subprocess.CompletedProcess | None] = {}
    for name, vm in vms.items():
        fix = check(down[name], "agent.service")["fix"]
        ran[name] = vm.ssh(" && ".join(without_sudo(c) for c in fix), check=False, timeout=300) if fix else None
    time.sleep(5)  # Type=simple: active at once; a start-up crash shows within RestartSec
    again = doctor(tool, work, inventory, names)
    return {n: (check(down[n], "agent.service"), ran[n], check(again[n], "agent.service")) for n in names}


@pytest.fixture(scope="module")
def builders(bed: dict[str, str]) -> Iterator[dict[str, dict]]:
    """One bed container per VM platform, first in the inventory: install's build-once compiles the agent in
    the Ubuntu 24.04 one (the first host with the oldest glibc, 2.39) at native speed and copies it to every
    other host, the VMs included (a cargo build took 10 minutes under TCG; building is the container tier's
    job, the kernel and the boot are this tier's)."""
    with contextlib.ExitStack() as stack:
        yield {f"build-{name}": {"ansible_connection": "containers.podman.podman", "ansible_become": False,
                                 "ansible_python_interpreter": "/usr/bin/python3",
                                 "ansible_host": stack.enter_context(container(name)).name}
               for name in PLATFORMS}


@pytest.fixture(scope="module")
def seen(vms: dict[str, vmbed.Vm], vm_work: Path, builders: dict[str, dict], tool: InstalledTool) -> Iterator[Seen]:
    s = Seen()
    names = list(vms)
    # The service is chosen per host (an inventory variable, as a fleet would): the VMs have systemd. They
    # have no RAPL either, and the rapl plugin of every other profile stops the agent at start-up there.
    hosts = {**builders, **{n: {**v.connection(), "alumet_service_enabled": True, "alumet_config_profile": "procfs"}
                            for n, v in vms.items()}}
    inventory = sshd.write_inventory(vm_work / "inventory.yml", {"all": {"hosts": hosts}})
    # The bed's URLs: the guest reaches them on its own 127.0.0.1 (vm.py's reverse forwards), the builders
    # on the host's (host network, the `bed` fixture's services).
    settings = [f"rustup_dist_server={services.MIRROR_URL}", f"rustup_update_root={services.RUSTUP_UPDATE_ROOT}",
                f"rustup_toolchain={os.environ['BED_RUST_TOOLCHAIN']}", f"alumet_agent_git_url={services.GIT_URL}"]
    host_args = [a for n in names for a in ("--host", n)]
    set_args = [a for x in settings for a in ("--set", x)]
    s.before = each(vms, facts)
    t = time.monotonic()
    s.install = cli(tool, vm_work, "install", "-i", str(inventory), *[a for n in builders for a in ("--host", n)],
                    *host_args, *set_args, timeout=2400)
    s.timings["install_s"] = round(time.monotonic() - t, 1)
    assert s.install.returncode == 0, f"install failed:\n{s.install.stdout[-6000:]}\n{s.install.stderr[-2000:]}"
    s.doctor_before_reboot = doctor(tool, vm_work, inventory, names)
    each(vms, vmbed.Vm.reboot)
    s.after_reboot = each(vms, facts)
    s.doctor_after_reboot = doctor(tool, vm_work, inventory, names)
    s.checks = each(vms, service_checks)
    # install's fast path with the service: the very same install again, after the reboot (the service steps
    # below run with other inputs, a new digest): every host up to date, no play.
    t = time.monotonic()
    s.rerun = cli(tool, vm_work, "install", "-i", str(inventory), *[a for n in builders for a in ("--host", n)],
                  *host_args, *set_args, timeout=1200)
    s.timings["rerun_s"] = round(time.monotonic() - t, 1)
    # The service step like every other (the container tier has no systemd to prove it): a dry run of the
    # installed host previews no change, a rerun changes nothing and leaves the agent up.
    s.service_check = cli(tool, vm_work, "install", "-i", str(inventory), *host_args, "--only", "service",
                          "--check", "--diff", timeout=900)
    s.service_rerun = cli(tool, vm_work, "install", "-i", str(inventory), *host_args, "--only", "service", timeout=900)
    s.service_down = service_down(vms, tool, vm_work, inventory, names)
    s.inventory = inventory
    yield s
    for name, v in vms.items():
        print(f"vm {name}: accel {v.accel} timings {v.timings}; scenario {s.timings}")


@pytest.fixture(scope="module")
def ptrace_combinations(seen: Seen, vms: dict[str, vmbed.Vm], vm_work: Path,
                        tool: InstalledTool) -> dict[str, dict[tuple[bool, bool], dict[str, Any]]]:
    """The capabilities and service steps with each combination of capabilities_ptrace and
    alumet_service_ptrace, the service restarted (a fresh exec under the binary's new file capabilities),
    then its capability sets; afterwards the defaults (auto, auto) again for the rest of the scenario."""
    assert seen.inventory is not None
    hosts = [a for n in vms for a in ("--host", n)]
    steps = [*hosts, "--only", "capabilities,service"]
    found: dict[str, dict[tuple[bool, bool], dict[str, Any]]] = {n: {} for n in vms}
    try:
        for file_ptrace, unit_ptrace in PTRACE_COMBINATIONS:
            run = cli(tool, vm_work, "install", "-i", str(seen.inventory), *steps,
                      "--set", f"capabilities_ptrace={str(file_ptrace).lower()}",
                      "--set", f"alumet_service_ptrace={str(unit_ptrace).lower()}", timeout=900)
            assert run.returncode == 0, f"install failed:\n{run.stdout[-4000:]}\n{run.stderr[-2000:]}"
            each(vms, lambda v: v.ssh("systemctl restart alumet && sleep 2"))
            for name, caps in each(vms, service_capabilities).items():
                found[name][file_ptrace, unit_ptrace] = caps
    finally:
        cli(tool, vm_work, "install", "-i", str(seen.inventory), *steps, timeout=900)
    return found


@pytest.fixture(scope="module")
def undone(seen: Seen, vms: dict[str, vmbed.Vm], vm_work: Path, tool: InstalledTool) -> Seen:
    """The scenario's second half, run only for the tests that need it (`-k` on the first half's tests
    skips it): uninstall, the fstab that would not boot, a reboot."""
    assert seen.inventory is not None
    t = time.monotonic()
    seen.uninstall = cli(tool, vm_work, "uninstall", "-i", str(seen.inventory),
                         *[a for n in vms for a in ("--host", n)], timeout=1800)
    seen.timings["uninstall_s"] = round(time.monotonic() - t, 1)
    seen.broken_fstab = each(vms, lambda v: broken_fstab(v, tool, vm_work, seen.inventory))
    each(vms, vmbed.Vm.reboot)
    seen.after_uninstall = each(vms, facts)
    return seen


def check(host: dict, check_id: str) -> dict:
    return next(c for c in host["checks"] if c["id"] == check_id)


@pytest.mark.parametrize("name", PLATFORMS)
def test_perf_event_paranoid_is_2_after_the_reboot_as_doctor_predicted(seen: Seen, name: str) -> None:
    boot_default = vmbed.PLATFORMS[name].boot_paranoid
    assert seen.before[name].paranoid == boot_default, (
        f"{name}: the kernel booted with paranoid {seen.before[name].paranoid}, expected {boot_default}")
    before = check(seen.doctor_before_reboot[name], "kernel.perf_event_paranoid")
    assert "boot" in before["data"], f"{name}: doctor made no boot prediction: {before['status']}: {before['detail']}"
    predicted = before["data"]["boot"]
    assert predicted == 2, f"{name}: doctor predicted paranoid {predicted} at next boot, not 2"
    assert seen.after_reboot[name].paranoid == 2, (
        f"{name}: perf_event_paranoid is {seen.after_reboot[name].paranoid} after the reboot, not the 2 the sysctl "
        "step set (another sysctl.d file overrides it at boot?)")
    assert seen.after_reboot[name].paranoid == predicted, f"{name}: doctor's prediction {predicted} was wrong"
    assert check(seen.doctor_after_reboot[name], "kernel.perf_event_paranoid")["status"] == "ok"


@pytest.mark.parametrize("name", PLATFORMS)
def test_proc_is_remounted_at_boot_with_hidepid_and_the_group_exempt(seen: Seen, name: str) -> None:
    assert "hidepid=invisible" in seen.before[name].proc_options, (
        f"{name}: the image should boot with hidepid=2: {seen.before[name].proc_options}")
    options = seen.after_reboot[name].proc_options.split(",")
    gid = seen.checks[name]["gid"]
    assert "hidepid=invisible" in options and f"gid={gid}" in options, (
        f"{name}: /proc after the reboot is mounted {','.join(options)}, expected hidepid=invisible,gid={gid}")
    assert seen.checks[name]["member_sees"], f"{name}: a member of {GROUP} does not see another user's process"
    assert not seen.checks[name]["outsider_sees"], f"{name}: a non-member sees another user's process (hidepid off?)"


@pytest.mark.parametrize("name", PLATFORMS)
def test_udev_rule_is_valid_and_rapl_is_not_available(seen: Seen, name: str) -> None:
    assert "70-alumet-powercap.rules" in seen.checks[name]["udev_rule"], f"{name}: no udev rule installed"
    rc, text = seen.checks[name]["udev_verify"]
    assert rc == 0, f"{name}: udevadm refuses the rule:\n{text[-2000:]}"
    rapl = check(seen.doctor_after_reboot[name], "rapl.access")
    assert rapl["status"] == "not-available", (
        f"{name}: no RAPL in a VM, doctor says {rapl['status']}: {rapl['detail']}; "
        f"rapl.pmu: {check(seen.doctor_after_reboot[name], 'rapl.pmu')['detail']}")
    failed = {c["id"]: c["detail"] for c in seen.doctor_after_reboot[name]["checks"] if c["status"] == "fail"}
    assert not failed, f"{name}: doctor fails after install and reboot: {failed}"


@pytest.mark.parametrize("name", PLATFORMS)
def test_the_service_runs_unprivileged_with_ambient_capabilities(seen: Seen, name: str) -> None:
    c = seen.checks[name]
    assert c["is_active"] == "active", f"{name}: alumet.service is {c['is_active']} after the reboot:\n{c['journal']}"
    assert c["uid_name"] == SERVICE_USER, f"{name}: the agent runs as {c['uid_name']!r}, not {SERVICE_USER}"
    assert c["CapAmb"] >> CAP_PERFMON & 1, (
        f"{name}: the agent has no ambient cap_perfmon (CapAmb {c['CapAmb']:#x}): unit {c['unit']}")
    assert c["CapEff"] >> CAP_PERFMON & 1, f"{name}: cap_perfmon is not effective (CapEff {c['CapEff']:#x})"
    # What the current stand-in agent does on `run`: it says it is ready, then waits.
    assert "ALUMET agent is ready" in c["journal"], f"{name}: the agent did not start:\n{c['journal']}"
    rows = c["output"].splitlines()
    assert len(rows) >= 2 and rows[0].startswith("metric;"), (
        f"{name}: the agent wrote no measurement to /var/lib/alumet/alumet-output.csv: {c['output'][:500]!r}")
    rc, out, err = c["probe_caps"]
    assert rc == 0, f"{name}: the probe as the service did not run: {err}"
    cpu_wide = json.loads(out)["cpu_wide"]
    assert cpu_wide["ok"], f"{name}: a CPU-wide perf event at paranoid 2 is refused to the service's user: {out}"


@pytest.mark.parametrize("name", PLATFORMS)
def test_a_rerun_leaves_the_host_that_runs_the_service_out_as_up_to_date(seen: Seen, name: str) -> None:
    """The unit file is a witness of the install record and doctor's agent.service finds the unit active: the
    host with the service costs a survey, as one without it does (alumet_setup/uptodate.py)."""
    run = seen.rerun
    assert run is not None and run.returncode == 0, f"the rerun failed:\n{run.stdout[-4000:] if run else ''}"
    said = [line for line in run.stdout.splitlines() if line.startswith(f"{name}: ")]
    assert said and said[0].startswith(f"{name}: up to date, left out"), f"{name}: {said}\n{run.stdout[-3000:]}"


@pytest.mark.parametrize("name", PLATFORMS)
def test_the_service_step_is_idempotent_and_previews_nothing_when_done(seen: Seen, name: str) -> None:
    for run, what in ((seen.service_check, "install --only service --check"),
                      (seen.service_rerun, "install --only service")):
        assert run is not None and run.returncode == 0, f"{what} failed:\n{run.stdout[-4000:] if run else ''}"
        changed = install_summary(run.stdout)[name][1]
        assert changed == "0", f"{name}: {what} on the installed host changed {changed}:\n{run.stdout[-4000:]}"


@pytest.mark.parametrize("name", PLATFORMS)
def test_the_service_keeps_its_ambient_capabilities_because_the_binary_is_on_a_nosuid_mount_there(
        seen: Seen, name: str) -> None:
    """What docs/SECURITY.md says: file capabilities applied at exec would clear the ambient set; the unit's
    sandbox (NoNewPrivileges with a mount namespace) mounts the binary nosuid, so they are not applied."""
    c = seen.checks[name]
    assert "cap_perfmon" in c["file_caps"], f"{name}: the binary has no file capabilities: {c['file_caps']!r}"
    assert "nosuid" in c["service_mount"].split(","), (
        f"{name}: the service sees /opt/alumet/bin/alumet-agent on a mount with {c['service_mount']!r}: no nosuid, "
        f"so the kernel applies the file capabilities (CapAmb {c['CapAmb']:#x}, CapEff {c['CapEff']:#x})")
    assert c["CapAmb"] == c["CapEff"], f"{name}: CapAmb {c['CapAmb']:#x} != CapEff {c['CapEff']:#x}"


@pytest.mark.parametrize("name", PLATFORMS)
def test_doctor_sees_the_service_and_its_printed_fix_restarts_it(seen: Seen, name: str) -> None:
    assert check(seen.doctor_after_reboot[name], "agent.service")["status"] == "ok", (
        check(seen.doctor_after_reboot[name], "agent.service"))
    down, ran, again = seen.service_down[name]
    assert down["status"] in ("fail", "warn") and down["fix"], f"{name}: doctor on a stopped service: {down}"
    assert ran is not None and ran.returncode == 0, f"{name}: the printed fix {down['fix']} failed: {ran}"
    assert again["status"] == "ok", f"{name}: after {down['fix']}, doctor says {again['status']}: {again['detail']}"


@pytest.mark.parametrize("name", PLATFORMS)
def test_without_the_capabilities_the_cpu_wide_event_is_refused(seen: Seen, name: str) -> None:
    rc, out, err = seen.checks[name]["probe_nocaps"]
    assert rc == 0, f"{name}: the probe did not run: {err}"
    result = json.loads(out)
    assert result["uid"] != 0, f"{name}: the probe ran as root"
    assert not result["cpu_wide"]["ok"], (
        f"{name}: a CPU-wide event opened without capabilities at paranoid 2: the capabilities prove nothing")


@pytest.mark.parametrize("name", PLATFORMS)
def test_the_service_has_exactly_the_units_capabilities_whatever_the_binarys_file_capabilities(
        ptrace_combinations: dict, name: str) -> None:
    """docs/SECURITY.md: systemd mounts a NoNewPrivileges= unit's namespace nosuid (no SELinux here), so the
    binary's file capabilities are never applied to the service and its ambient set survives the exec: for
    every combination the service runs with exactly the unit's set, cap_sys_ptrace where the unit grants it."""
    for (file_ptrace, unit_ptrace), caps in ptrace_combinations[name].items():
        which = f"{name}, capabilities_ptrace={file_ptrace} alumet_service_ptrace={unit_ptrace}"
        assert caps["is_active"] == "active", f"{which}: alumet.service is {caps['is_active']}"
        assert ("cap_sys_ptrace" in caps["file_caps"]) == file_ptrace, f"{which}: file caps {caps['file_caps']!r}"
        assert "nosuid" in caps["service_mount"].split(","), (
            f"{which}: the service sees the binary on a mount with {caps['service_mount']!r}")
        unit = 1 << CAP_PERFMON | 1 << CAP_SYS_NICE | (1 << CAP_SYS_PTRACE if unit_ptrace else 0)
        got = {k: f"{caps[k]:#x}" for k in ("CapAmb", "CapEff", "CapPrm")}
        assert caps["CapAmb"] == caps["CapEff"] == caps["CapPrm"] == unit, (
            f"{which}: the service runs with {got}, the unit grants {unit:#x}")


@pytest.mark.parametrize("name", PLATFORMS)
def test_uninstall_and_a_reboot_give_back_the_system_before_install(undone: Seen, name: str) -> None:
    seen = undone
    assert seen.uninstall is not None and seen.uninstall.returncode == 0, (
        f"uninstall failed:\n{seen.uninstall.stdout[-6000:] if seen.uninstall else ''}")
    before, after = seen.before[name], seen.after_uninstall[name]
    assert after.paranoid == before.paranoid, f"{name}: paranoid {after.paranoid} at boot after uninstall"
    assert after.proc_options == before.proc_options, f"{name}: /proc {after.proc_options} != {before.proc_options}"
    assert after.fstab == before.fstab, f"{name}: /etc/fstab differs from before install"
    diff = sorted(set(before.listing.splitlines()) ^ set(after.listing.splitlines()))
    assert not diff, f"{name}: files differ from before install (udev's /etc/udev/rules.d removed?):\n" + "\n".join(
        diff[:40])


@pytest.mark.parametrize("name", PLATFORMS)
def test_an_fstab_that_would_not_boot_is_refused_and_the_vm_still_boots(undone: Seen, name: str) -> None:
    seen = undone
    run, fstab = seen.broken_fstab[name]
    assert run.returncode != 0, f"{name}: install edited an fstab that stops the boot:\n{run.stdout[-3000:]}"
    assert "findmnt --verify" in run.stdout + run.stderr, (
        f"{name}: refused, but not by the check:\n{run.stdout[-3000:]}")
    assert fstab == "unchanged", f"{name}: the refused fstab was written: {fstab}"
    assert seen.after_uninstall[name].paranoid >= 2  # answered over SSH after the last reboot: it booted
