#!/usr/bin/env python3
"""Virtual machines for the VM tier (tests/vm): a kernel of its own, systemd, udev, reboots.

Images come from vm_image.py. Runs: a qcow2 overlay per VM over the cached base keeps it clean. KVM is
used when it really boots (the first kernel line on the serial console within a short probe), TCG
otherwise. The guest is reached only over SSH on 127.0.0.1 (a forwarded port) with a key made for the
test, passed on the kernel command line and installed as root's authorized_keys at boot; host keys
are checked against the test's known_hosts. The test services (Rust mirror, stand-in git daemon) run
privately for the VMs on free loopback ports (`private_services`); reverse SSH forwards put them on
the guest's own 127.0.0.1 at their usual ports (services.MIRROR_PORT, GIT_PORT), so the inventories
are the bed's and the VM tier never shares, starts or stops the host's listeners on those ports.
QEMU and the forwarding ssh are killed by PID at the end, whatever
happens (atexit as a last resort).
"""

from __future__ import annotations

import atexit
import base64
import concurrent.futures
import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import services
import sshd
from vm_image import PLATFORMS, Platform, build

MEMORY_MB = 2048


def selected() -> list[str]:
    """The platforms a run boots: ALUMET_VM_PLATFORMS (comma-separated), else all of them."""
    names = [n for n in os.environ.get("ALUMET_VM_PLATFORMS", "").split(",") if n] or list(PLATFORMS)
    unknown = sorted(set(names) - set(PLATFORMS))
    if unknown:
        raise ValueError(f"ALUMET_VM_PLATFORMS: unknown {', '.join(unknown)} (known: {', '.join(PLATFORMS)})")
    return names

# SSH up, counted from `systemctl reboot` (shutdown included): a Debian 13 reboot took over 300 s
# under TCG while the shared 2-core machine ran at load 11.
BOOT_TIMEOUT = 600
KVM_PROBE_TIMEOUT = 20


_LIVE: set[int] = set()  # PIDs this process started and has not reaped yet


# One file per process started here, "<owner pid> <child pid> <child start time>": a test session killed
# with SIGKILL runs no cleanup, so the next one stops what a dead owner left (by PID, its start time
# checked so a reused PID is never hit).
PID_DIR = Path(os.environ.get("ALUMET_VM_PID_DIR", "/run/alumet-setup-tests/vm"))


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _kill_group(pid: int) -> None:
    """SIGKILL the process and its children: each process started here leads a session of its own, and
    `git daemon` is git running git-daemon as a child, which a SIGKILL of git alone left listening."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    """Whether a process of group `pgid` still runs (zombies do not count: their sockets are closed)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def _kill(proc: subprocess.Popen) -> None:
    """Kill the group and return once none of it runs: reaping the leader is not enough, git-daemon (git's
    child, re-parented when git dies) went on listening for a moment after `git daemon` was reaped."""
    _kill_group(proc.pid)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while _group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    _LIVE.discard(proc.pid)
    (PID_DIR / str(proc.pid)).unlink(missing_ok=True)


@atexit.register
def kill_all() -> None:
    """Kill every process this one started here and has not reaped (QEMU, forwards, private services)."""
    for pid in list(_LIVE):
        _kill_group(pid)
        (PID_DIR / str(pid)).unlink(missing_ok=True)


def kill_orphans() -> list[int]:
    """Stop the QEMU and ssh processes of earlier sessions that died without cleaning up; returns their PIDs."""
    killed = []
    for entry in PID_DIR.glob("*") if PID_DIR.is_dir() else ():
        with contextlib.suppress(OSError, ValueError):
            owner, pid, started = entry.read_text().split()
            if _start_time(int(owner)) is None:  # the session that started it is gone
                if _start_time(int(pid)) == started:
                    _kill_group(int(pid))
                    killed.append(int(pid))
                entry.unlink()
    return killed


def _popen(argv: Sequence[str], log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    _LIVE.add(proc.pid)
    PID_DIR.mkdir(parents=True, exist_ok=True)
    (PID_DIR / str(proc.pid)).write_text(f"{os.getpid()} {proc.pid} {_start_time(proc.pid)}\n")
    return proc


def _qemu_argv(accel: str, kernel_dir: Path, disk: Path, console: Path, port: int, cpus: int,
               append: str) -> list[str]:
    accel_args = ["-accel", "kvm", "-cpu", "host"] if accel == "kvm" else ["-accel", "tcg,thread=multi", "-cpu", "max"]
    return ["qemu-system-x86_64", *accel_args, "-m", str(MEMORY_MB), "-smp", str(cpus),
            "-kernel", str(kernel_dir / "vmlinuz"), "-initrd", str(kernel_dir / "initrd.img"),
            # No rootdelay=: Debian's initramfs sleeps that long before anything else (its init script).
            # Its wait for /dev/vda is then max(30, rootdelay) s, which three TCG guests on two cores
            # exceeded ("ALERT! /dev/vda does not exist"): run no other VM beside the tier's two.
            "-append", f"root=/dev/vda rw console=ttyS0 {append}".strip(),
            "-drive", f"file={disk},format=qcow2,if=virtio",
            "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:22", "-device", "virtio-net-pci,netdev=n0",
            # -nodefaults: no floppy, CD-ROM, parallel port or VGA to probe (seconds each under TCG).
            "-nodefaults", "-serial", f"file:{console}", "-monitor", "none", "-display", "none"]


_ACCEL: str | None = None


def accelerator(kernel_dir: Path, work: Path) -> str:
    """"kvm" when a kernel really starts under KVM here (its first line on the serial console within
    KVM_PROBE_TIMEOUT s), else "tcg". /dev/kvm alone proves nothing: on some hosts KVM stops in the
    kernel's decompressor with an emulation failure. Probed once per process."""
    global _ACCEL
    if _ACCEL is None:
        _ACCEL = "tcg"
        if os.access("/dev/kvm", os.R_OK | os.W_OK):
            disk, console = work / "kvm-probe.qcow2", work / "kvm-probe.console"
            _overlay(kernel_dir / "disk.img", disk)
            proc = _popen(_qemu_argv("kvm", kernel_dir, disk, console, sshd.free_port(), 1, ""), work / "kvm-probe.log")
            try:
                deadline = time.monotonic() + KVM_PROBE_TIMEOUT
                while time.monotonic() < deadline and proc.poll() is None:
                    if console.exists() and b"Linux version" in console.read_bytes():
                        _ACCEL = "kvm"
                        break
                    time.sleep(0.5)
            finally:
                _kill(proc)
                disk.unlink(missing_ok=True)
    return _ACCEL


def _overlay(base: Path, disk: Path) -> None:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "raw", str(disk)], check=True)


@dataclass
class Vm:
    name: str
    platform: Platform
    port: int
    work: Path
    key: Path
    known_hosts: Path
    accel: str
    # Host port behind each guest port of services.py: private_services()' listeners, else the bed's own.
    service_ports: dict[int, int]
    qemu: subprocess.Popen | None = None
    forward: subprocess.Popen | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def console(self) -> Path:
        return self.work / f"{self.name}.console"

    def ssh_argv(self) -> list[str]:
        return ["ssh", "-p", str(self.port), "-i", str(self.key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=yes",
                "-o", "ConnectTimeout=10", "root@127.0.0.1"]

    def ssh(self, command: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        # stdin of its own: ssh sets O_NONBLOCK on the stdin it is given, and a shared one (the test session's)
        # stays non-blocking for every later child when ssh is killed; ansible-playbook then refuses to start.
        result = subprocess.run([*self.ssh_argv(), command], capture_output=True, text=True, timeout=timeout,
                                check=False, stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise RuntimeError(f"{self.name}: `{command}` exited {result.returncode}: {result.stderr.strip()}")
        return result

    def _answers(self, command: str, timeout: float) -> subprocess.CompletedProcess | None:
        """The command's result when the guest answered it in time with exit 0, else None: a guest that is
        booting or shutting down may accept the connection and then hang."""
        try:
            result = self.ssh(command, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return None
        return result if result.returncode == 0 else None

    def connection(self) -> dict:
        """Ansible inventory variables reaching the guest (host keys checked against the test's file)."""
        return sshd.connection(self.port, self.key, self.known_hosts)

    def wait_ssh(self, since: float, what: str) -> None:
        """Until root gets a shell over SSH; records the seconds since `since` as timings[what]."""
        deadline = since + BOOT_TIMEOUT
        while True:
            if self.qemu is None or self.qemu.poll() is not None:
                raise RuntimeError(f"{self.name}: QEMU exited:\n{self.console_tail()}")
            if not self.known_hosts.exists() or not self.known_hosts.read_text():
                keys = sshd.host_keys(self.port)
                if keys:
                    self.known_hosts.write_text(keys)
            if self.known_hosts.exists() and self._answers("true", timeout=30):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: no SSH after {BOOT_TIMEOUT} s:\n{self.console_tail()}")
            time.sleep(2)
        self.timings[what] = round(time.monotonic() - since, 1)
        self._forward()

    def _forward(self) -> None:
        """Reverse forwards: the guest's 127.0.0.1:18473/19418 reach the host's test services."""
        if self.forward is not None:
            _kill(self.forward)
        rs = [a for guest, host in self.service_ports.items()
              for a in ("-R", f"{guest}:127.0.0.1:{host}")]
        argv = self.ssh_argv()
        self.forward = _popen([argv[0], "-N", "-o", "ExitOnForwardFailure=yes", "-o", "ServerAliveInterval=15", *rs,
                               *argv[1:]], self.work / f"{self.name}.forward.log")
        for _ in range(60):
            if self.forward.poll() is not None:
                raise RuntimeError(f"{self.name}: reverse forwards failed: "
                                   f"{(self.work / f'{self.name}.forward.log').read_text()[-500:]}")
            if self._guest_listens(services.GIT_PORT):
                return
            time.sleep(1)
        raise RuntimeError(f"{self.name}: reverse forwards never listened in the guest")

    def _guest_listens(self, port: int) -> bool:
        return f":{port} " in self.ssh("ss -Hltn", check=False, timeout=30).stdout

    def reboot(self) -> None:
        """`systemctl reboot` in the guest, then wait for SSH again (the same host key must answer)."""
        start = time.monotonic()
        boot_id = self.ssh("cat /proc/sys/kernel/random/boot_id").stdout.strip()
        self.ssh("systemctl reboot", check=False, timeout=30)
        deadline = start + BOOT_TIMEOUT
        while True:  # until the old system is gone (a shell that no longer answers counts as gone)
            r = self._answers("cat /proc/sys/kernel/random/boot_id", timeout=15)
            if r is None or r.stdout.strip() != boot_id:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: still the same boot {BOOT_TIMEOUT} s after systemctl reboot")
            time.sleep(1)
        self.wait_ssh(start, "reboot_s")
        new = self.ssh("cat /proc/sys/kernel/random/boot_id").stdout.strip()
        if new == boot_id:
            raise RuntimeError(f"{self.name}: boot id unchanged after the reboot")

    def console_tail(self, lines: int = 40) -> str:
        if not self.console.exists():
            return "(no console output)"
        return "\n".join(self.console.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        for proc in (self.forward, self.qemu):
            if proc is not None:
                _kill(proc)


def start(name: str, work: Path, key: Path, cpus: int = 1, service_ports: dict[int, int] | None = None) -> Vm:
    """Boot `name` on a fresh overlay of its cached image; returns once root gets a shell over SSH. The guest
    reaches `service_ports` (guest port -> host port; default: the bed's listeners on the same ports)."""
    base = build(name)
    work.mkdir(parents=True, exist_ok=True)
    accel = accelerator(base, work)
    disk = work / f"{name}.qcow2"
    _overlay(base / "disk.img", disk)
    pub = base64.b64encode(key.with_suffix(".pub").read_bytes().strip()).decode()
    ports = service_ports or {port: port for port in services.commands()}
    vm = Vm(name, PLATFORMS[name], sshd.free_port(), work, key, work / f"{name}.known_hosts", accel, ports)
    vm.known_hosts.unlink(missing_ok=True)
    begin = time.monotonic()
    vm.qemu = _popen(_qemu_argv(accel, base, disk, vm.console, vm.port, cpus, f"quiet alumet_test_key={pub}"),
                     work / f"{name}.qemu.log")
    try:
        vm.wait_ssh(begin, "boot_s")
    except BaseException:
        vm.stop()
        raise
    return vm


@contextlib.contextmanager
def private_services(work: Path) -> Iterator[dict[int, int]]:
    """services.py's listeners (same commands, same caches) on free loopback ports of their own; yields
    guest port -> host port (for `running`) and stops them at the end. Nothing global: a test may run its own
    beside the VM scenario's."""
    started: list[subprocess.Popen] = []
    ports: dict[int, int] = {}
    work.mkdir(parents=True, exist_ok=True)
    try:
        for port, argv in services.commands().items():
            free = sshd.free_port()
            # The port is the last argument of http.server and --port= of git daemon.
            argv = [str(free) if a == str(port) else f"--port={free}" if a == f"--port={port}" else a for a in argv]
            started.append(_popen(argv, work / f"service-{port}.log"))
            deadline = time.monotonic() + 10
            while not _listening(free):
                if started[-1].poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"vm: {argv[0]} on port {free} did not start, see {work}/service-{port}.log")
                time.sleep(0.1)
            ports[port] = free
        yield ports
    finally:
        for proc in started:
            _kill(proc)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM turned into KeyboardInterrupt, which pytest unwinds through its teardowns (a plain SIGTERM ends
    the process with no cleanup, and QEMU would run on). Only the main thread can set a handler: elsewhere this
    does nothing, and the main thread's own sigterm_interrupts (the `vm_scenario` fixture) covers it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def running(names: Sequence[str], work: Path, key: Path, cpus: int = 1,
            service_ports: dict[int, int] | None = None) -> Iterator[dict[str, Vm]]:
    """Boot every VM (concurrently: QEMU processes start together) and stop them all at the end, also on
    SIGTERM when called from the main thread."""
    vms: dict[str, Vm] = {}
    orphans = kill_orphans()
    if orphans:
        print(f"vm: stopped {len(orphans)} process(es) left by a session that died: {orphans}")
    with sigterm_interrupts():
        try:
            with concurrent.futures.ThreadPoolExecutor(len(names)) as pool:
                futures = {n: pool.submit(start, n, work, key, cpus, service_ports) for n in names}
                errors = []
                for n, fut in futures.items():
                    try:
                        vms[n] = fut.result()
                    except Exception as exc:
                        errors.append(f"{n}: {exc}")
                if errors:
                    raise RuntimeError("\n".join(errors))
            yield vms
        finally:
            for vm in vms.values():
                vm.stop()
