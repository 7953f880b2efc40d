#!/usr/bin/env python3
"""Doctor at fleet scale, in one run: a fresh `ssh host true`, doctor on one host (by `--host user@host:port`
and by `-i INVENTORY`, whose parse by Ansible the controller pays for), doctor on N hosts, uninstall where
install recorded nothing, an install rerun on 8 up-to-date hosts, and their ratios (issue 27's targets: one
host <= 2x the ssh round trip; 50 hosts <= 5 s and <= 3x one host; the rerun on 8 hosts <= 3x doctor on one;
uninstall with nothing to remove <= 3 s).

The hosts: one Debian 13 sshd container of the test bed (tests/bed/sshd.py) whose sshd also listens on
N-1 more ports of 127.0.0.1, so that each of the N inventory hosts has a connection (and a ControlMaster)
of its own, as N machines would; they share the container's CPU with the controller (2 cores here), so a
real fleet is no slower. A host that never answers (a port that accepts and stays silent) is doctored
beside the N hosts once, to show it holds none of them. Medians of --repeat runs; doctor is the `alumet-setup` a
user gets: the README's first command run in a HOME of the bench's own (a wheel, `pip install .`, its modules
byte-compiled at install), run from a directory outside the checkout (`--tool PATH` times another one). The
checkout's editable venv is no measure: with PYTHONDONTWRITEBYTECODE set, each module edited since its last .pyc is
compiled at every start (40 ms of doctor's 0.4 s, measured). `ssh` is, for every command here, a wrapper that
adds the bench's ssh configuration (its key and known_hosts), so `--host root@127.0.0.1:PORT` works as it
does for a user whose ~/.ssh/config names the key. The install rerun's hosts were installed once (h00, with
the test bed's Rust mirror and stand-in agent): the 8 inventory hosts are one container, so all 8 hold that
install's record.

    CONTAINERS_CONF=$PWD/.ci/containers.conf .venv/bin/python bench/fleet_doctor.py [--sizes 1,8,32,50]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "bed"))
sys.path.insert(0, str(ROOT / "bench"))

import installed_tool  # noqa: E402
import prepare  # noqa: E402  (tests/bed is not a package)
import services  # noqa: E402
import sshd  # noqa: E402
from fleet_install import SETTINGS  # noqa: E402  (the bed's mirror and stand-in agent)

TOOL = ""  # the alumet-setup timed (main: the README's install, or --tool)
CWD: list[Path] = []  # where it runs from: outside the checkout


CPU: list[float] = []  # the controller's CPU seconds (the command and its ssh clients) of the last timed() call


ENV: dict[str, str] = {}  # the environment of every timed command (set by main: PATH with the ssh wrapper)


def ssh_wrapper(work: Path, key: Path, known_hosts: Path, kex: str | None) -> Path:
    """A directory holding `ssh`: the system's ssh with this bench's key and known_hosts for 127.0.0.1 (and
    `kex` as its key exchange, when given)."""
    config = work / "ssh_config"
    config.write_text(f"Host 127.0.0.1\n  IdentityFile {key}\n  IdentitiesOnly yes\n"
                      f"  UserKnownHostsFile {known_hosts}\n  StrictHostKeyChecking yes\n"
                      + (f"  KexAlgorithms {kex}\n" if kex else ""))
    directory = work / "bin"
    directory.mkdir()
    wrapper = directory / "ssh"
    wrapper.write_text(f'#!/bin/sh\nexec /usr/bin/ssh -F {config} "$@"\n')
    wrapper.chmod(0o755)
    return directory


HOSTS_CGROUP: list[Path] = []  # the hosts' container's cgroup (set by measure): the CPU the "hosts" used


def cgroup_of(container: str) -> Path:
    path = subprocess.run(["podman", "inspect", "-f", "{{.State.CgroupPath}}", container], capture_output=True,
                          text=True, check=True).stdout.strip()
    return Path("/sys/fs/cgroup" + path) if Path("/sys/fs/cgroup" + path).exists() else \
        Path("/sys/fs/cgroup/unified" + path)


def cgroup_cpu() -> float:
    """CPU seconds the hosts' container has used so far (0 when its cgroup cannot be read)."""
    for cgroup in HOSTS_CGROUP:
        for line in (cgroup / "cpu.stat").read_text().splitlines():
            if line.startswith("usage_usec "):
                return int(line.split()[1]) / 1e6
    return 0.0


def timed(argv: list[str], repeat: int) -> tuple[float, subprocess.CompletedProcess]:
    """Median wall seconds of `repeat` runs and the last run; CPU gets the median CPU seconds they took here
    (the command and its ssh clients), then the median the hosts took."""
    times, cpu, hosts_cpu, last = [], [], [], None
    for _ in range(repeat):
        before, hosts_before = resource.getrusage(resource.RUSAGE_CHILDREN), cgroup_cpu()
        start = time.perf_counter()
        last = subprocess.run(argv, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL,
                              env=ENV or None, cwd=CWD[0] if CWD else None)
        times.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        hosts_cpu.append(cgroup_cpu() - hosts_before)
    assert last is not None
    CPU[:] = [statistics.median(cpu), statistics.median(hosts_cpu)]
    return statistics.median(times), last


def measure(host: sshd.SshHost, key: Path, work: Path, sizes: list[int], repeat: int, hung_port: int,
            surveys: bool, kex: str | None = None) -> None:
    ports = [host.port] + [sshd.free_port() for _ in range(max(sizes) - 1)]
    # More sshd daemons on the other ports, 15 each: OpenSSH listens on 16 sockets at most (MAX_LISTEN_SOCKS).
    for first in range(1, len(ports), 15):
        subprocess.run(["podman", "exec", host.container, "/usr/sbin/sshd", "-o", "ListenAddress=127.0.0.1",
                        # As sshd.py: many quick connections from 127.0.0.1; and one daemon stands for 15 hosts, each
                        # of which would take 10 handshakes at once (MaxStartups).
                        "-o", "PerSourcePenalties=no", "-o", "MaxStartups=150",
                        *[a for p in ports[first:first + 15] for a in ("-p", str(p))]], check=True)
    if len(ports) > 1:
        deadline = time.monotonic() + 60
        for port in ports[1:]:
            while not sshd.host_keys(port):
                if time.monotonic() > deadline:
                    raise SystemExit(f"sshd does not answer on port {port}")
                time.sleep(0.2)
    names = [f"h{i:02}" for i in range(len(ports))]
    listening = [sshd.SshHost(n, "debian13", p, host.container) for n, p in zip(names, ports, strict=True)]
    known_hosts = sshd.write_known_hosts(work / "known_hosts", listening)
    entries = {n: sshd.connection(p, key, known_hosts) for n, p in zip(names, ports, strict=True)}
    entries["hung"] = sshd.connection(hung_port, key, known_hosts)
    inventory = sshd.write_inventory(work / "inventory.yml", {"all": {"hosts": entries}})
    user = installed_tool.user_env()
    ENV.update(user, PATH=f"{ssh_wrapper(work, key, known_hosts, kex)}:{user['PATH']}",
               XDG_STATE_HOME=str(work / "state"))
    HOSTS_CGROUP[:] = [cgroup_of(host.container)]
    login = f"root@127.0.0.1:{ports[0]}"
    rtt, _ = timed(["ssh", "-o", "BatchMode=yes", "-p", str(ports[0]), "root@127.0.0.1", "true"], repeat)
    ssh_cpu, ssh_hosts_cpu = CPU
    kex_used = subprocess.run(["ssh", "-v", "-o", "BatchMode=yes", "-p", str(ports[0]), "root@127.0.0.1", "true"],
                              capture_output=True, text=True, env=ENV, check=False).stderr
    kex_used = next((ln.split("algorithm:")[1].strip() for ln in kex_used.splitlines() if "kex: algorithm:" in ln),
                    "?")
    print(f"fresh ssh host true: {rtt:.3f} s (median of {repeat}); key exchange {kex_used}: the ssh client's CPU "
          f"{ssh_cpu:.3f} s, the host's {ssh_hosts_cpu:.3f} s")
    start, _ = timed([TOOL, "--version"], repeat)
    print(f"alumet-setup --version (the CLI's start): {start:.3f} s")

    def doctor(hosts: list[str], repeat: int, inventory_file: Path | None = inventory) -> tuple[float, dict]:
        chosen = ["-i", str(inventory_file)] if inventory_file else []
        argv = [TOOL, "doctor", *chosen, *[a for n in hosts for a in ("--host", n)], "--json"]
        seconds, run = timed(argv, repeat)
        document = json.loads(run.stdout)
        errors = {h["host"]: h["error"] for h in document["hosts"] if "error" in h}
        assert set(errors) <= {"hung"}, errors
        return seconds, document

    alone, document = doctor([login], repeat, None)
    print(f"doctor --host {login}: {alone:.3f} s = {alone / rtt:.1f}x the ssh round trip "
          f"({document['hosts'][0]['round_trips']} rounds on one ssh connection, "
          f"{document['hosts'][0]['seconds']:.3f} s reading the host; controller CPU {CPU[0]:.2f} s)")
    one, document = doctor(names[:1], repeat)
    one_cpu = CPU[0]
    print(f"doctor -i INVENTORY, 1 host: {one:.3f} s = {one / rtt:.1f}x the ssh round trip "
          f"({document['hosts'][0]['seconds']:.3f} s reading the host; controller CPU {one_cpu:.2f} s)")
    for n in sizes:
        if n > 1:
            seconds, _ = doctor(names[:n], repeat)
            print(f"doctor -i INVENTORY, {n} hosts: {seconds:.3f} s = {seconds / one:.1f}x one host, "
                  f"{seconds / rtt:.1f}x the ssh round trip; controller CPU {CPU[0]:.2f} s = "
                  f"{(CPU[0] - one_cpu) / (n - 1):.3f} s per more host ({ssh_cpu:.3f} s of it the ssh client's "
                  f"handshake), the hosts' CPU {CPU[1]:.2f} s (on the same {os.cpu_count()} cores)")
    some = names[: min(8, len(names))]
    seconds, document = doctor([*some, "hung"], 1)
    hung = next(h for h in document["hosts"] if h["host"] == "hung")
    slowest = max(h["seconds"] for h in document["hosts"] if h["host"] != "hung")
    print(f"doctor, {len(some)} hosts + one that never answers: {seconds:.3f} s; the hung one: {hung['error']!r} "
          f"after {hung['seconds']:.1f} s; the slowest other host read in {slowest:.2f} s")
    if not surveys:
        return

    seconds, run = timed([TOOL, "uninstall", "--host", login], repeat)
    assert run.returncode == 0 and "Nothing to remove" in run.stdout, run.stdout + run.stderr
    print(f"uninstall --host {login}, install recorded nothing: {seconds:.3f} s")
    settings = [a for s in SETTINGS for a in ("--set", s)]
    seconds, run = timed([TOOL, "install", "-i", str(inventory), "--host", names[0], *settings], 1)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    print(f"(install on {names[0]}, the stand-in agent built: {seconds:.0f} s)")
    installed, document = doctor([login], repeat, None)
    print(f"doctor --host {login}, the agent installed: {installed:.3f} s = {installed / rtt:.1f}x the ssh round trip "
          f"({document['hosts'][0]['round_trips']} rounds: the agent's capabilities decide the probe as the agent)")
    eight = [a for n in names[:8] for a in ("--host", n)]
    seconds, run = timed([TOOL, "install", "-i", str(inventory), *eight, *settings], repeat)
    assert run.returncode == 0 and "Nothing to run" in run.stdout, run.stdout[-3000:] + run.stderr[-2000:]
    print(f"install rerun, {len(names[:8])} up-to-date hosts: {seconds:.3f} s = {seconds / one:.1f}x doctor on one "
          f"host (-i); controller CPU {CPU[0]:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,8,32,50", help="fleet sizes (comma-separated)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure (median)")
    parser.add_argument("--doctor-only", action="store_true", help="leave out uninstall and the install rerun")
    parser.add_argument("--kex", help="the ssh client's KexAlgorithms (default: its own), e.g. curve25519-sha256 to "
                                      "see what a cheaper handshake than sntrup761x25519 changes")
    parser.add_argument("--tool", help="time this alumet-setup instead of installing one by the README's command")
    args = parser.parse_args()
    if max(sizes := [int(s) for s in args.sizes.split(",")]) < 8 and not args.doctor_only:
        parser.error("the install rerun needs a size of at least 8 (or --doctor-only)")
    os.environ["no_proxy"] = os.environ["NO_PROXY"] = "127.0.0.1,localhost"
    prepare.main()  # the bed images (cached)
    work = Path(tempfile.mkdtemp(prefix="fleet-doctor-"))
    try:
        bench(work, args, sizes)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def bench(work: Path, args: argparse.Namespace, sizes: list[int]) -> None:
    global TOOL
    CWD[:] = [work]
    if args.tool:
        TOOL = args.tool
    else:
        started = time.monotonic()
        TOOL = str(installed_tool.install(work / "home", work).program)
        print(f"alumet-setup installed by the README's first command in {time.monotonic() - started:.0f} s: {TOOL}")
    key = sshd.make_key(work / "id")
    hosts = sshd.start([("bench", "debian13")], Path(f"{key}.pub"), label="alumet-setup-bench")
    try:
        with sshd.silent_port() as hung_port, services.running():
            measure(hosts[0], key, work, sizes, args.repeat, hung_port, not args.doctor_only, args.kex)
    finally:
        sshd.remove(hosts)


if __name__ == "__main__":
    main()
