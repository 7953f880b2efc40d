#!/usr/bin/env python3
"""Build the test-bed base images: debootstrap minbase + python3, imported into podman.

Each image is tagged localhost/alumet-bed-<name>:<recipe hash> and :latest. The hash covers this file
and the pinned Ubuntu fingerprints, so an image is rebuilt only when its recipe changes.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CACHE = ROOT / ".cache" / "bed"
PINNED = HERE / "ubuntu-archive-keyring.fingerprints"
UBUNTU_KEYRING = CACHE / "ubuntu-archive-keyring.gpg"
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
SCRIPTS = "/usr/share/debootstrap/scripts"

# name -> (family, suite, debootstrap script). Debian 12's debootstrap has no noble script: gutsy fits.
IMAGES = {
    "debian13": ("debian", "trixie", "trixie"),
    "ubuntu2404": ("ubuntu", "noble", "gutsy"),
    "ubuntu2204": ("ubuntu", "jammy", "jammy"),
}
# python3 for Ansible itself, python3-apt for its apt module (stock server images carry both).
INCLUDE = "python3,python3-apt"


def recipe_hash() -> str:
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(PINNED.read_bytes())
    return h.hexdigest()[:12]


def debian_mirror() -> str:
    """The Debian mirror the host's apt uses, so no registry host name lives in the repository."""
    uris: list[str] = []
    for f in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        uris += re.findall(r"^URIs:\s*(\S+)", f.read_text(), re.M)
    legacy = Path("/etc/apt/sources.list")
    if legacy.exists():
        uris += re.findall(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)", legacy.read_text(), re.M)
    for uri in uris:
        if uri.rstrip("/").endswith("/debian"):
            return uri
    sys.exit("images: no Debian mirror found in the host's apt configuration")


def fingerprints(keyring: Path) -> set[str]:
    with tempfile.TemporaryDirectory() as home:
        out = subprocess.run(
            ["gpg", "--homedir", home, "--show-keys", "--with-colons", str(keyring)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    # The fpr record right after each pub record is the primary key's fingerprint.
    lines = out.splitlines()
    return {
        lines[i + 1].split(":")[9]
        for i, line in enumerate(lines[:-1])
        if line.startswith("pub:") and lines[i + 1].startswith("fpr:")
    }


def pinned() -> set[str]:
    return {ln.split()[0] for ln in PINNED.read_text().splitlines() if ln.strip() and not ln.startswith("#")}


def debootstrap(suite: str, script: str, target: Path, mirror: str, keyring: str | None) -> None:
    # keyring None: the one-time trust bootstrap, unverified, whose rootfs is thrown away.
    gpg = ["--no-check-gpg"] if keyring is None else ["--force-check-gpg", f"--keyring={keyring}"]
    cmd = [
        "debootstrap",
        "--variant=minbase",
        f"--include={INCLUDE}",
        *gpg,
        suite,
        str(target),
        mirror,
        f"{SCRIPTS}/{script}",
    ]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def ubuntu_keyring() -> str:
    """Trust step: take the archive keyring from an unverified noble rootfs, accept it only if its
    primary-key fingerprints equal the ones pinned in the repository, then verify every build with it."""
    if not UBUNTU_KEYRING.exists():
        with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
            debootstrap("noble", "gutsy", Path(tmp), "", None)
            shutil.copyfile(Path(tmp) / "usr/share/keyrings/ubuntu-archive-keyring.gpg", UBUNTU_KEYRING)
    got, want = fingerprints(UBUNTU_KEYRING), pinned()
    if got != want:
        UBUNTU_KEYRING.unlink()
        sys.exit(f"images: Ubuntu keyring fingerprints {sorted(got)} differ from the pinned {sorted(want)}")
    return str(UBUNTU_KEYRING)


def image_exists(ref: str) -> bool:
    return subprocess.run(["podman", "image", "exists", ref]).returncode == 0


def drop_older(repo: str, keep: set[str]) -> None:
    """Remove every image of `repo` but the references in `keep`, so storage does not grow with every rebuild."""
    listed = subprocess.run(["podman", "images", "--format", "{{.Repository}}:{{.Tag}}", repo],
                            capture_output=True, text=True, check=False).stdout.split()
    for ref in set(listed) - keep:
        subprocess.run(["podman", "rmi", ref], capture_output=True, check=False)


def build(name: str, tag: str) -> None:
    family, suite, script = IMAGES[name]
    repo = f"localhost/alumet-bed-{name}"
    if image_exists(f"{repo}:{tag}"):
        subprocess.run(["podman", "tag", f"{repo}:{tag}", f"{repo}:latest"], check=True)
        print(f"images: {repo}:{tag} cached")
        return
    start = time.monotonic()
    if family == "debian":
        mirror, keyring = debian_mirror(), DEBIAN_KEYRING
    else:
        mirror, keyring = "", ubuntu_keyring()  # empty mirror: debootstrap's own default
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        rootfs = Path(tmp) / "rootfs"
        debootstrap(suite, script, rootfs, mirror, keyring)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(
            ["podman", "import", "--quiet", "--change", "CMD=/bin/bash", "-", f"{repo}:{tag}"],
            stdin=tar.stdout,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        if tar.wait() != 0:
            sys.exit(f"images: tar of {rootfs} failed")
    subprocess.run(["podman", "tag", f"{repo}:{tag}", f"{repo}:latest"], check=True)
    drop_older(repo, {f"{repo}:{tag}", f"{repo}:latest"})  # images of older recipes
    print(f"images: built {repo}:{tag} in {time.monotonic() - start:.0f} s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"default: all of {list(IMAGES)}")
    args = parser.parse_args(argv)
    CACHE.mkdir(parents=True, exist_ok=True)
    tag = recipe_hash()
    for name in args.names or IMAGES:
        build(name, tag)


if __name__ == "__main__":
    main()
