"""The VM scenario (tests/vm): alumet-setup as the README installs it (the `tool` fixture) against virtual
machines (vm.py), run once per session in a background thread started with the session (tests/conftest.py),
so that its hour of TCG runs beside the container tiers instead of after them; tests/vm only asserts on what it
saw (`Seen`).

  [wait for molecule] -> install (default steps + service; the agent compiled once in a builder container of
  the VM's release and copied) -> doctor -> reboot -> checks -> the service stopped, doctor's fix run as printed
  -> [full tier: rerun, the service step's dry run and rerun, the four ptrace combinations] -> uninstall
  -> reboot -> back to the state before install.

The kernel scenario (CI's, Debian 13) is the part outside the brackets; `full` adds the rest (tests/run.sh with
ALUMET_VM_TIER=1). Each step's result is kept as soon as it is known, so a failure late in the scenario still
lets the tests of the earlier steps judge what they saw; the failure itself is kept in `Seen.error`.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import subprocess
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import services
import sshd
import vm as vmbed
import vm_image
from bedhost import container, podman_collection
from installed_tool import InstalledTool, without_sudo

ROOT = Path(__file__).resolve().parents[2]
GROUP = "alumet"  # alumet_group_name's default
# capabilities_ptrace (the binary's file capabilities) x alumet_service_ptrace (the unit's ambient set).
PTRACE_COMBINATIONS = [(file_ptrace, unit_ptrace) for file_ptrace in (False, True) for unit_ptrace in (False, True)]
# The file listing compared before install and after uninstall (as molecule/_shared/snapshot does); the
# backups useradd/groupadd leave (/etc/passwd- ...) are not ours to remove.
LISTING = ("find /etc /opt /usr/local /var/lib/alumet-setup -xdev \\( -path /etc/gshadow- -o -path /etc/shadow- "
           "-o -path /etc/group- -o -path /etc/passwd- -o -path /etc/subuid- -o -path /etc/subgid- \\) -prune "
           "-o -printf '%p %M %u:%g %l\\n' 2>/dev/null | LC_ALL=C sort")
# Every line that sets perf_event_paranoid in the places systemd-sysctl reads, for failure messages: what the
# host shows when the boot value is not the one expected.
PARANOID_SOURCES = ("grep -Hs perf_event_paranoid /etc/sysctl.d/*.conf /run/sysctl.d/*.conf "
                    "/usr/local/lib/sysctl.d/*.conf /usr/lib/sysctl.d/*.conf /lib/sysctl.d/*.conf /etc/sysctl.conf; "
                    "cat /proc/cmdline")
# The per-process rows of the csv plugin (metric;timestamp;value;resource_kind;resource_id;consumer_kind;
# consumer_id;...): the PIDs that cpu_percent_% rows were written for.
PROCESS_PIDS = ("awk -F';' '$1 == \"cpu_percent_%\" && $6 == \"process\" {print $7}' "
                "/var/lib/alumet/alumet-output.csv | sort -un | head -n 2000")


@dataclass
class Facts:
    """What one VM looked like at one point of the scenario."""

    paranoid: int
    proc_options: str
    listing: str
    fstab: str
    paranoid_sources: str


@dataclass
class Seen:
    full: bool = False
    before: dict[str, Facts] = field(default_factory=dict)
    install: subprocess.CompletedProcess | None = None
    doctor_before_reboot: dict[str, dict] = field(default_factory=dict)
    after_reboot: dict[str, Facts] = field(default_factory=dict)
    doctor_after_reboot: dict[str, dict] = field(default_factory=dict)
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The service stopped by hand: doctor's finding, what its printed fix did, doctor's finding after it.
    service_down: dict[str, tuple[dict, subprocess.CompletedProcess | None, dict]] = field(default_factory=dict)
    rerun: subprocess.CompletedProcess | None = None  # the first install's command again, after the reboot
    service_check: subprocess.CompletedProcess | None = None
    service_rerun: subprocess.CompletedProcess | None = None
    ptrace: dict[str, dict[tuple[bool, bool], dict[str, Any]]] = field(default_factory=dict)
    uninstall: subprocess.CompletedProcess | None = None
    after_uninstall: dict[str, Facts] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase, for the run's time table
    vm_timings: dict[str, dict[str, float]] = field(default_factory=dict)
    error: str = ""  # the traceback that stopped the scenario, if one did


def facts(vm: vmbed.Vm) -> Facts:
    return Facts(
        paranoid=int(vm.ssh("cat /proc/sys/kernel/perf_event_paranoid").stdout),
        proc_options=vm.ssh("findmnt -n -o OPTIONS /proc").stdout.strip(),
        listing=vm.ssh(LISTING).stdout,
        fstab=vm.ssh("cat /etc/fstab").stdout,
        paranoid_sources=vm.ssh(PARANOID_SOURCES, check=False).stdout,
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
    if run.returncode not in (0, 1):
        raise RuntimeError(f"doctor did not answer for every VM (rc {run.returncode}):\n{run.stderr}")
    return {h["host"]: h for h in json.loads(run.stdout)["hosts"]}


@contextlib.contextmanager
def timed(timings: dict[str, float], step: str) -> Iterator[None]:
    """timings[step] = the seconds the block took (whether or not it raised)."""
    start = time.monotonic()
    try:
        yield
    finally:
        timings[step] = round(time.monotonic() - start, 1)


def check(host: dict, check_id: str) -> dict:
    return next(c for c in host["checks"] if c["id"] == check_id)


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
    out["process_pids"] = vm.ssh(PROCESS_PIDS, check=False).stdout.split()
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


class Scenario:
    """One run of the scenario: `run` fills `seen` step by step; `timed` records each step's seconds."""

    def __init__(self, vms: dict[str, vmbed.Vm], builders: dict[str, dict], tool: InstalledTool, work: Path,
                 seen: Seen) -> None:
        self.vms, self.builders, self.tool, self.work, self.seen = vms, builders, tool, work, seen
        self.names = list(vms)
        # The service is chosen per host (an inventory variable, as a fleet would): the VMs have systemd. They
        # have no RAPL either, and the rapl plugin of every other profile stops the agent at start-up there;
        # procfs's section is the one every profile includes (templates/alumet-config/_procfs.toml.j2).
        hosts = {**builders, **{n: {**v.connection(), "alumet_service_enabled": True,
                                    "alumet_config_profile": "procfs"} for n, v in vms.items()}}
        self.inventory = sshd.write_inventory(work / "inventory.yml", {"all": {"hosts": hosts}})
        # The bed's URLs: the guest reaches them on its own 127.0.0.1 (vm.py's reverse forwards), the builders
        # on the host's (host network, the services the session started).
        settings = [f"rustup_dist_server={services.MIRROR_URL}", f"rustup_update_root={services.RUSTUP_UPDATE_ROOT}",
                    f"rustup_toolchain={os.environ['BED_RUST_TOOLCHAIN']}", f"alumet_agent_git_url={services.GIT_URL}"]
        self.vm_hosts = [a for n in self.names for a in ("--host", n)]
        self.install_args = ["-i", str(self.inventory), *[a for n in builders for a in ("--host", n)],
                             *self.vm_hosts, *[a for x in settings for a in ("--set", x)]]

    def timed(self, step: str) -> contextlib.AbstractContextManager[None]:
        return timed(self.seen.timings, step)

    def cli(self, *args: str, timeout: int) -> subprocess.CompletedProcess:
        return cli(self.tool, self.work, *args, timeout=timeout)

    def run(self) -> None:
        s, vms = self.seen, self.vms
        s.before = each(vms, facts)
        with self.timed("install"):
            s.install = self.cli("install", *self.install_args, timeout=2400)
        if s.install.returncode != 0:
            raise RuntimeError(f"install failed:\n{s.install.stdout[-6000:]}\n{s.install.stderr[-2000:]}")
        s.doctor_before_reboot = doctor(self.tool, self.work, self.inventory, self.names)
        with self.timed("reboot after install"):
            each(vms, vmbed.Vm.reboot)
        with self.timed("checks"):
            s.after_reboot = each(vms, facts)
            s.doctor_after_reboot = doctor(self.tool, self.work, self.inventory, self.names)
            s.checks = each(vms, service_checks)
        with self.timed("printed fix"):
            s.service_down = service_down(vms, self.tool, self.work, self.inventory, self.names)
        if s.full:
            self.full_tier()
        with self.timed("uninstall"):
            s.uninstall = self.cli("uninstall", "-i", str(self.inventory), *self.vm_hosts, timeout=1800)
        if s.uninstall.returncode != 0:
            raise RuntimeError(f"uninstall failed:\n{s.uninstall.stdout[-6000:]}\n{s.uninstall.stderr[-2000:]}")
        with self.timed("reboot after uninstall"):
            each(vms, vmbed.Vm.reboot)
        s.after_uninstall = each(vms, facts)

    def full_tier(self) -> None:
        """The opt-in tier's steps on the installed hosts: install's fast path with the service, the service step
        like every other, and each combination of capabilities_ptrace and alumet_service_ptrace."""
        s = self.seen
        with self.timed("rerun"):
            # The very same install again, after the reboot: every host up to date, no play.
            s.rerun = self.cli("install", *self.install_args, timeout=1200)
        with self.timed("service step check and rerun"):
            # The container tier has no systemd to prove it: a dry run of the installed host previews no change,
            # a rerun changes nothing and leaves the agent up.
            only_service = ["-i", str(self.inventory), *self.vm_hosts, "--only", "service"]
            s.service_check = self.cli("install", *only_service, "--check", "--diff", timeout=900)
            s.service_rerun = self.cli("install", *only_service, timeout=900)
        with self.timed("ptrace combinations"):
            s.ptrace = self.ptrace_combinations()

    def ptrace_combinations(self) -> dict[str, dict[tuple[bool, bool], dict[str, Any]]]:
        """The capabilities and service steps with each combination, the service restarted (a fresh exec under
        the binary's new file capabilities), then its capability sets; afterwards the defaults (auto, auto)."""
        steps = ["-i", str(self.inventory), *self.vm_hosts, "--only", "capabilities,service"]
        found: dict[str, dict[tuple[bool, bool], dict[str, Any]]] = {n: {} for n in self.vms}
        try:
            for file_ptrace, unit_ptrace in PTRACE_COMBINATIONS:
                run = self.cli("install", *steps, "--set", f"capabilities_ptrace={str(file_ptrace).lower()}",
                               "--set", f"alumet_service_ptrace={str(unit_ptrace).lower()}", timeout=900)
                if run.returncode != 0:
                    raise RuntimeError(f"install failed:\n{run.stdout[-4000:]}\n{run.stderr[-2000:]}")
                each(self.vms, lambda v: v.ssh("systemctl restart alumet && sleep 2"))
                for name, caps in each(self.vms, service_capabilities).items():
                    found[name][file_ptrace, unit_ptrace] = caps
        finally:
            self.cli("install", *steps, timeout=900)
        return found


class Background:
    """The scenario in a daemon thread of the test session: `wait` gives what it saw. `stop` kills the VMs (by
    PID), which ends any step still waiting on them, and waits a little for the thread to unwind."""

    def __init__(self, tool: InstalledTool, work: Path, platforms: list[str], full: bool,
                 before_boot: Callable[[], None]) -> None:
        self.seen = Seen(full=full)
        self._args = tool, work, platforms, before_boot
        self._done, self._stopping = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._main, name="vm-scenario", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        tool, work, platforms, before_boot = self._args
        start = time.monotonic()
        try:
            with self._timed("image build"):
                for name in platforms:
                    vm_image.build(name)
            with self._timed("waiting for molecule"):
                before_boot()
            key = sshd.make_key(work / "id_ed25519")
            with contextlib.ExitStack() as stack:
                ports = stack.enter_context(vmbed.private_services(work))
                with self._timed("boot (SSH up)"):
                    vms = stack.enter_context(vmbed.running(platforms, work, key, cpus=1, service_ports=ports))
                # One bed container of each VM's release, first in the inventory: install's build-once compiles
                # the agent there at native speed and copies it to the VM of the same release (a cargo build took
                # 10 minutes under TCG; building is the container tier's job, the kernel and boot are this one's).
                builders = {f"build-{name}": {"ansible_connection": "containers.podman.podman",
                                              "ansible_become": False,
                                              "ansible_python_interpreter": "/usr/bin/python3",
                                              "ansible_host": stack.enter_context(container(name)).name}
                            for name in platforms}
                try:
                    Scenario(vms, builders, tool, work, self.seen).run()
                finally:
                    self.seen.vm_timings = {n: dict(v.timings, accel=v.accel) for n, v in vms.items()}
        except BaseException:
            self.seen.error = traceback.format_exc()
        finally:
            self.seen.timings["in all"] = round(time.monotonic() - start, 1)
            self._done.set()

    def _timed(self, step: str) -> contextlib.AbstractContextManager[None]:
        if self._stopping.is_set():
            raise RuntimeError(f"the session ended before the VM scenario's {step}")
        return timed(self.seen.timings, step)

    def wait(self, timeout: float) -> Seen:
        if not self._done.wait(timeout):
            self.seen.error = self.seen.error or f"the VM scenario did not end within {timeout:.0f} s"
        return self.seen

    def stop(self) -> None:
        if not self._done.is_set():
            self._stopping.set()
            vmbed.kill_all()
            self._done.wait(120)
