"""Containers running sshd on 127.0.0.1:PORT: the remote hosts of the end-to-end tests and benches, and every
throwaway container of tests/integration/bedhost.py.

Each one runs a bed image with openssh-server added (`image`: baked once per bed image, so a host starts in
about a second) with the host network, never privileged; the test key is bind-mounted as root's
authorized_keys and the host keys are made at each start, so no two containers share them. Host key checking
stays on: the caller gets a known_hosts made with ssh-keyscan.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import images

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 120  # podman run and three host keys on a busy 2-core machine

# openssh-server on top of a bed image; the host keys the package made go, each container makes its own.
_BAKE = (
    "set -e; export DEBIAN_FRONTEND=noninteractive; "
    "apt-get -qq -o Acquire::Retries=3 update; "
    "apt-get -qq -y --no-install-recommends install openssh-server >/dev/null; "
    "rm -f /etc/ssh/ssh_host_*"
)
_SCRIPT = (
    "set -e; mkdir -p /run/sshd; ssh-keygen -A; "
    # Every client of the bed comes from 127.0.0.1: OpenSSH >= 9.8 would answer the deliberate failures of
    # the broken-host tests by refusing every later connection from it for a while (PerSourcePenalties).
    "if /usr/sbin/sshd -t -o PerSourcePenalties=no 2>/dev/null; then set -- -o PerSourcePenalties=no; fi; "
    "exec /usr/sbin/sshd -D -e -p {port} -o ListenAddress=127.0.0.1 \"$@\""
)


@dataclass(frozen=True)
class SshHost:
    name: str  # inventory name
    platform: str  # bed image name: debian13, ubuntu2404, ubuntu2204
    port: int
    container: str


def image(platform: str) -> str:
    """localhost/alumet-bed-PLATFORM-sshd, baked from the bed image now tagged latest (its ID is the tag, so a
    rebuilt bed image gets a new one); a lock file keeps two builders (a test and the VM scenario's thread, or
    two sessions) from baking it twice at once."""
    base = f"localhost/alumet-bed-{platform}:latest"
    base_id = subprocess.run(["podman", "image", "inspect", "-f", "{{.Id}}", base], capture_output=True, text=True,
                             check=True).stdout.strip()[:12]
    repo = f"localhost/alumet-bed-{platform}-sshd"
    ref = f"{repo}:{base_id}"
    lock_path = ROOT / ".cache" / f"sshd-image-{platform}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if subprocess.run(["podman", "image", "exists", ref], check=False).returncode == 0:
            return ref
        cache = ROOT / ".cache" / "apt" / platform
        cache.mkdir(parents=True, exist_ok=True)
        builder = f"as-sshd-bake-{platform}-{uuid.uuid4().hex[:6]}"
        try:
            baked = subprocess.run(["podman", "run", "--name", builder, "--network", "host",
                                    "-v", f"{cache}:/var/cache/apt/archives", base, "sh", "-c", _BAKE],
                                   capture_output=True, text=True, timeout=600, check=False)
            if baked.returncode != 0:
                raise RuntimeError(f"baking {ref} failed ({baked.returncode}):\n{baked.stdout}{baked.stderr}")
            subprocess.run(["podman", "commit", "--quiet", "--change", "CMD=/bin/bash", builder, ref], check=True,
                           capture_output=True, text=True)
        finally:
            subprocess.run(["podman", "rm", "-f", "-t", "0", builder], capture_output=True, check=False)
        images.drop_older(repo, {ref})  # those baked from older bed images
        return ref


def free_port() -> int:
    """A port nobody listens on now (other sessions' tests run on this machine too)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def silent_port() -> Iterator[int]:
    """A TCP port on 127.0.0.1 that accepts connections and never says a word, as a hung sshd does."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        server.close()


def make_key(path: Path) -> Path:
    """A passphrase-less ed25519 key pair at `path` (and `path`.pub); returns the private key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "alumet-setup-test", "-f", str(path)],
                   check=True, stdin=subprocess.DEVNULL)
    return path


# The agent's file capabilities must lie in the bounding set, or the kernel refuses to run it.
AGENT_CAPS = ("CAP_PERFMON", "CAP_SYS_NICE", "CAP_SYS_PTRACE")


def start(hosts: Sequence[tuple[str, str]], public_key: Path, label: str = "alumet-setup-sshd",
          cap_add: Mapping[str, Sequence[str]] | None = None, podman_args: Sequence[str] = (),
          shared_apt_cache: bool = False) -> list[SshHost]:
    """Start one container per (name, platform) and wait until every sshd answers. `cap_add`: name -> the
    capabilities added to podman's default bounding set (default AGENT_CAPS; empty: podman's default set only);
    `podman_args`: more options for every `podman run`. Apt's archive cache under .cache/apt/ is kept between
    runs: each host of a platform gets a directory of its own (two apt runs cannot share one archive lock),
    or, with `shared_apt_cache`, the platform's directory as an overlay (its downloads shared, apt's lock and
    new files private to the container)."""
    images = {platform: image(platform) for platform in sorted({platform for _, platform in hosts})}
    run_id = uuid.uuid4().hex[:6]
    started: list[SshHost] = []
    seen: dict[str, int] = {}
    try:
        for name, platform in hosts:
            seen[platform] = seen.get(platform, 0) + 1
            own = shared_apt_cache or seen[platform] == 1
            cache = ROOT / ".cache" / "apt" / (platform if own else f"{platform}-{seen[platform]}")
            cache.mkdir(parents=True, exist_ok=True)
            host = SshHost(name, platform, free_port(), f"as-sshd-{name}-{run_id}")
            subprocess.run(
                ["podman", "run", "-d", "--name", host.container, "--label", label, "--network", "host",
                 *[arg for cap in (cap_add or {}).get(name, AGENT_CAPS) for arg in ("--cap-add", cap)],
                 "-v", f"{public_key}:/root/.ssh/authorized_keys:ro",
                 "-v", f"{cache}:/var/cache/apt/archives{':O' if shared_apt_cache else ''}", *podman_args,
                 images[platform], "sh", "-c", _SCRIPT.format(port=host.port)],
                check=True, capture_output=True, text=True,
            )
            started.append(host)
        deadline = time.monotonic() + START_TIMEOUT
        for host in started:
            while not host_keys(host.port):
                if time.monotonic() > deadline or _exited(host.container):
                    raise RuntimeError(f"sshd in {host.container} did not come up:\n{_logs(host.container)}")
                time.sleep(0.2)
    except BaseException:
        remove(started)
        raise
    return started


def host_keys(port: int) -> str:
    """known_hosts lines for 127.0.0.1:PORT ("" while sshd is not up)."""
    result = subprocess.run(["ssh-keyscan", "-T", "3", "-p", str(port), "127.0.0.1"], capture_output=True,
                            text=True, check=False)
    return result.stdout if result.returncode == 0 else ""


def write_known_hosts(path: Path, hosts: Sequence[SshHost]) -> Path:
    path.write_text("".join(host_keys(h.port) for h in hosts))
    return path


def inventory(hosts: Sequence[SshHost], key: Path, known_hosts: Path, extra: dict[str, dict[str, Any]] | None = None
              ) -> dict[str, Any]:
    """An Ansible YAML (JSON) inventory reaching every host as root with `key`, host keys checked
    against `known_hosts` only. `extra`: further hosts, e.g. deliberately broken ones."""
    host_vars = {h.name: connection(h.port, key, known_hosts) for h in hosts}
    host_vars.update(extra or {})
    return {"all": {"hosts": host_vars}}


def connection(port: int, key: Path, known_hosts: Path) -> dict[str, Any]:
    # IdentitiesOnly: only this key is offered, whatever an ssh agent holds.
    return {
        "ansible_host": "127.0.0.1", "ansible_port": port, "ansible_user": "root",
        "ansible_ssh_private_key_file": str(key),
        "ansible_ssh_common_args": f"-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes "
                                   "-o IdentitiesOnly=yes",
    }


def write_inventory(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


def remove(hosts: Sequence[SshHost]) -> None:
    names = [h.container for h in hosts]
    if names:
        subprocess.run(["podman", "rm", "-f", "-t", "0", *names], capture_output=True, check=False)


def _exited(container: str) -> bool:
    out = subprocess.run(["podman", "inspect", "-f", "{{.State.Status}}", container], capture_output=True,
                         text=True, check=False).stdout
    return out.strip() in ("exited", "stopped", "")  # "" : gone


def _logs(container: str) -> str:
    return subprocess.run(["podman", "logs", "--tail", "30", container], capture_output=True, text=True,
                          check=False).stdout + os.linesep
