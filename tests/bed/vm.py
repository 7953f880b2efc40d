#!/usr/bin/env python3
"""Virtual machines for the VM tier (tests/vm): a kernel of its own, systemd, udev, reboots.

Images: a debootstrap root filesystem with its distribution's kernel, written into a raw ext4 image by
`mkfs.ext4 -d` (no loop mount), cached under .cache/vm/<name>-<recipe hash>/ beside the kernel and
initrd it boots with (direct kernel boot). The hash covers this file, images.py (mirror and keyring
logic, reused from there) and the prereqs role's package lists: the images carry those packages, so the
prereqs step runs for real in the VM and finds them installed (the container tier proves installing).
Each image starts with `proc /proc proc defaults,hidepid=2` in /etc/fstab, the case the hidepid role
must merge with.

Runs: a qcow2 overlay per VM over the cached base keeps it clean. KVM is used when it really boots (the
first kernel line on the serial console within a short probe), TCG otherwise. The guest is reached only
over SSH on 127.0.0.1 (a forwarded port) with a key made for the test, passed on the kernel command
line and installed as root's authorized_keys at boot; host keys are checked against the test's
known_hosts. Reverse forwards give the guest the host's loopback test services on its own 127.0.0.1.
QEMU and the forwarding ssh are killed by PID at the end, whatever happens (atexit as a last resort).
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import images
import services
import sshd

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CACHE = ROOT / ".cache" / "vm"
PREREQS_VARS = ROOT / "roles" / "prereqs" / "vars"
DISK_SIZE = "6G"  # sparse: build tools, a Rust toolchain and the agent's build fit
MEMORY_MB = 2048
BOOT_TIMEOUT = 300  # SSH up, under TCG on a loaded 2-core machine
KVM_PROBE_TIMEOUT = 20

# What every image boots and is reached with; the prereqs role's packages come on top (read from its vars).
BASE_PACKAGES = ["systemd-sysv", "udev", "openssh-server", "python3", "python3-apt", "iproute2", "kmod",
                 "procps", "libcap2-bin", "sudo"]


@dataclass(frozen=True)
class Platform:
    name: str
    family: str  # Debian / Ubuntu: the prereqs vars file
    suite: str
    script: str  # debootstrap script
    kernel: str  # kernel package
    boot_paranoid: int  # kernel.perf_event_paranoid the distribution's kernel boots with


PLATFORMS = {
    "debian13": Platform("debian13", "Debian", "trixie", "trixie", "linux-image-amd64", 3),
    # Ubuntu's own kernel (virtual flavour), patched to boot with 4.
    "ubuntu2404": Platform("ubuntu2404", "Ubuntu", "noble", "gutsy", "linux-image-virtual", 4),
}

GUEST_FILES = {
    "etc/fstab": "/dev/vda / ext4 defaults 0 1\nproc /proc proc defaults,hidepid=2 0 0\n",
    "etc/systemd/network/50-dhcp.network": "[Match]\nName=en*\n\n[Network]\nDHCP=yes\n",
    "etc/resolv.conf": "nameserver 10.0.2.3\n",  # QEMU user networking's DNS
    # The test's public key comes on the kernel command line (alumet_test_key=<base64>), so one cached
    # image serves every run with a key made for that run.
    "usr/local/sbin/alumet-test-key": (
        "#!/bin/sh\nset -e\nfor arg in $(cat /proc/cmdline); do\n  case $arg in alumet_test_key=*)\n"
        "    install -d -m 700 /root/.ssh\n"
        "    echo \"${arg#alumet_test_key=}\" | base64 -d > /root/.ssh/authorized_keys\n"
        "    chmod 600 /root/.ssh/authorized_keys;;\n  esac\ndone\n"
    ),
    "etc/systemd/system/alumet-test-key.service": (
        "[Unit]\nDescription=Test key from the kernel command line\nBefore=ssh.service\n\n"
        "[Service]\nType=oneshot\nExecStart=/usr/local/sbin/alumet-test-key\n\n"
        "[Install]\nWantedBy=multi-user.target\n"
    ),
}


def prereqs_packages(family: str) -> list[str]:
    """The prereqs role's package list for `family` (one home: the role's vars file)."""
    lines = (PREREQS_VARS / f"{family}.yml").read_text().splitlines()
    return [ln.strip()[2:].strip() for ln in lines if ln.startswith("  - ")]


def recipe_hash() -> str:
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(Path(images.__file__).read_bytes())
    h.update(images.PINNED.read_bytes())
    for f in sorted(PREREQS_VARS.glob("*.yml")):
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def image_dir(name: str) -> Path:
    return CACHE / f"{name}-{recipe_hash()}"


def _chroot(root: Path, *argv: str) -> None:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}
    subprocess.run(["chroot", str(root), *argv], check=True, env=env, stdout=subprocess.DEVNULL)


def build(name: str) -> Path:
    """The cached image directory of `name` (disk.img, vmlinuz, initrd.img), built if missing."""
    out = image_dir(name)
    if (out / "disk.img").exists():
        print(f"vm: {out.name} cached")
        return out
    p = PLATFORMS[name]
    start = time.monotonic()
    CACHE.mkdir(parents=True, exist_ok=True)
    images.CACHE.mkdir(parents=True, exist_ok=True)
    if p.family == "Debian":
        mirror, keyring = images.debian_mirror(), images.DEBIAN_KEYRING
    else:
        mirror, keyring = "", images.ubuntu_keyring()  # debootstrap's own default mirror
    packages = BASE_PACKAGES + prereqs_packages(p.family)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        root = Path(tmp) / "rootfs"
        subprocess.run(["debootstrap", "--variant=minbase", "--include=python3", "--force-check-gpg",
                        f"--keyring={keyring}", p.suite, str(root), mirror, f"{images.SCRIPTS}/{p.script}"],
                       check=True, stdout=subprocess.DEVNULL)
        # The rest in a chroot: debootstrap's --include fails on noble while configuring base packages.
        # policy-rc.d: no service starts inside the chroot.
        policy = root / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        subprocess.run(["mount", "-t", "proc", "proc", str(root / "proc")], check=True)
        try:
            _chroot(root, "apt-get", "-q", "update")
            _chroot(root, "apt-get", "-q", "install", "-y", "--no-install-recommends", p.kernel,
                    "initramfs-tools", *packages)
            _chroot(root, "apt-get", "clean")
        finally:
            subprocess.run(["umount", str(root / "proc")], check=False)
        policy.unlink()
        for rel, text in GUEST_FILES.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.is_symlink():
                path.unlink()
            path.write_text(text)
        (root / "usr/local/sbin/alumet-test-key").chmod(0o755)
        (root / "etc/hostname").write_text(f"{name}\n")
        _chroot(root, "systemctl", "enable", "systemd-networkd", "ssh", "alumet-test-key")
        work = Path(tmp) / "out"
        work.mkdir()
        kernels = sorted((root / "boot").glob("vmlinuz-*"))
        version = kernels[-1].name.removeprefix("vmlinuz-")
        shutil.copyfile(kernels[-1], work / "vmlinuz")
        shutil.copyfile(root / "boot" / f"initrd.img-{version}", work / "initrd.img")
        subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(root), "-L", "root", str(work / "disk.img"), DISK_SIZE],
                       check=True)
        for old in CACHE.glob(f"{name}-*"):  # images of older recipes
            shutil.rmtree(old, ignore_errors=True)
        work.rename(out)
    print(f"vm: built {out.name} in {time.monotonic() - start:.0f} s")
    return out


# --- running ---------------------------------------------------------------------------------------

_LIVE: set[int] = set()  # PIDs this process started and has not reaped yet


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    _LIVE.discard(proc.pid)


@atexit.register
def _kill_leftovers() -> None:
    for pid in list(_LIVE):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _popen(argv: Sequence[str], log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    _LIVE.add(proc.pid)
    return proc


def _qemu_argv(accel: str, kernel_dir: Path, disk: Path, console: Path, port: int, cpus: int,
               append: str) -> list[str]:
    accel_args = ["-accel", "kvm", "-cpu", "host"] if accel == "kvm" else ["-accel", "tcg,thread=multi", "-cpu", "max"]
    return ["qemu-system-x86_64", *accel_args, "-m", str(MEMORY_MB), "-smp", str(cpus),
            "-kernel", str(kernel_dir / "vmlinuz"), "-initrd", str(kernel_dir / "initrd.img"),
            "-append", f"root=/dev/vda rw console=ttyS0 {append}".strip(),
            "-drive", f"file={disk},format=qcow2,if=virtio",
            "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:22", "-device", "virtio-net-pci,netdev=n0",
            "-nographic", "-serial", f"file:{console}", "-monitor", "none", "-display", "none"]


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
        result = subprocess.run([*self.ssh_argv(), command], capture_output=True, text=True, timeout=timeout,
                                check=False)
        if check and result.returncode != 0:
            raise RuntimeError(f"{self.name}: `{command}` exited {result.returncode}: {result.stderr.strip()}")
        return result

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
            if self.known_hosts.exists() and self.ssh("true", timeout=30, check=False).returncode == 0:
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
        ports = [services.MIRROR_PORT, services.GIT_PORT]
        rs = [a for p in ports for a in ("-R", f"{p}:127.0.0.1:{p}")]
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
        while True:  # until the old system is gone
            r = self.ssh("cat /proc/sys/kernel/random/boot_id", check=False, timeout=15)
            if r.returncode != 0 or r.stdout.strip() != boot_id:
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


def start(name: str, work: Path, key: Path, cpus: int = 1) -> Vm:
    """Boot `name` on a fresh overlay of its cached image; returns once root gets a shell over SSH."""
    base = build(name)
    work.mkdir(parents=True, exist_ok=True)
    accel = accelerator(base, work)
    disk = work / f"{name}.qcow2"
    _overlay(base / "disk.img", disk)
    pub = base64.b64encode(key.with_suffix(".pub").read_bytes().strip()).decode()
    vm = Vm(name, PLATFORMS[name], sshd.free_port(), work, key, work / f"{name}.known_hosts", accel)
    vm.known_hosts.unlink(missing_ok=True)
    begin = time.monotonic()
    vm.qemu = _popen(_qemu_argv(accel, base, disk, vm.console, vm.port, cpus, f"alumet_test_key={pub}"),
                     work / f"{name}.qemu.log")
    try:
        vm.wait_ssh(begin, "boot_s")
    except BaseException:
        vm.stop()
        raise
    return vm


@contextlib.contextmanager
def running(names: Sequence[str], work: Path, key: Path, cpus: int = 1) -> Iterator[dict[str, Vm]]:
    """Boot every VM (concurrently: QEMU processes start together) and stop them all at the end."""
    vms: dict[str, Vm] = {}
    try:
        import concurrent.futures

        with concurrent.futures.ThreadPoolExecutor(len(names)) as pool:
            futures = {n: pool.submit(start, n, work, key, cpus) for n in names}
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"default: all of {list(PLATFORMS)}")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("vm: building images needs root (debootstrap, chroot)")
    for name in args.names or PLATFORMS:
        build(name)


if __name__ == "__main__":
    main()
