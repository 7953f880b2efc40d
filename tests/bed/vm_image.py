#!/usr/bin/env python3
"""VM images for the VM tier (tests/vm, run by vm.py): a debootstrap root filesystem with its
distribution's kernel, written into a raw ext4 image by `mkfs.ext4 -d` (no loop mount), cached under
/var/cache/alumet-setup-tests/vm/<name>-<recipe hash>/ (ALUMET_VM_CACHE) beside the kernel and initrd it
boots with (direct kernel boot).

The hash covers this file, images.py (mirror and keyring logic, reused from there) and the prereqs
role's package lists: the images carry those packages, so the prereqs step runs for real in the VM and
finds them installed (the container tier proves installing them). Each image starts with
`proc /proc proc defaults,hidepid=2` in /etc/fstab, the case the hidepid role must merge with.
Building needs root (debootstrap, chroot); run it alone with `python3 tests/bed/vm_image.py [NAME...]`.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import images

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
# Outside the checkout, like podman's image store: a fresh clone (CI's) reuses images built by an earlier
# one instead of spending ~15 minutes of debootstrap. The recipe hash keeps a stale image from being used.
CACHE = Path(os.environ.get("ALUMET_VM_CACHE", "/var/cache/alumet-setup-tests/vm"))
PREREQS_VARS = ROOT / "roles" / "prereqs" / "vars"
DISK_SIZE = "6G"  # sparse: build tools, a Rust toolchain and the agent's build fit

# What every image boots and is reached with; the prereqs role's packages come on top (read from its vars).
# dbus: without it Debian 13's systemd-networkd spent minutes starting under TCG (seen: no SSH in 600 s).
BASE_PACKAGES = ["systemd-sysv", "dbus", "udev", "openssh-server", "python3", "python3-apt", "iproute2", "kmod",
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
    # Only the package lists the images read (not main.yml's supported releases, say).
    for family in sorted({p.family for p in PLATFORMS.values()}):
        h.update((PREREQS_VARS / f"{family}.yml").read_bytes())
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
