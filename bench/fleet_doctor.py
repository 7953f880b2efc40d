#!/usr/bin/env python3
"""Doctor at fleet scale, in one run: a fresh `ssh host true`, doctor on one host, doctor on N hosts, and
their ratios (issue 27's targets: one host <= 2x the ssh round trip; 50 hosts <= 5 s and <= 3x one host).

The hosts: one Debian 13 sshd container of the test bed (tests/bed/sshd.py) whose sshd also listens on
N-1 more ports of 127.0.0.1, so that each of the N inventory hosts has a connection (and a ControlMaster)
of its own, as N machines would; they share the container's CPU with the controller (2 cores here), so a
real fleet is no slower. A host that never answers (a port that accepts and stays silent) is doctored
beside the N hosts once, to show it holds none of them. Medians of --repeat runs; doctor is the `alumet-setup`
of the checkout's venv (the same package the wheel holds).

    CONTAINERS_CONF=$PWD/.ci/containers.conf .venv/bin/python bench/fleet_doctor.py [--sizes 1,8,32,50]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "bed"))

import prepare  # noqa: E402  (tests/bed is not a package)
import sshd  # noqa: E402

TOOL = str(ROOT / ".venv" / "bin" / "alumet-setup")


CPU: list[float] = []  # the controller's CPU seconds (the command and its ssh clients) of the last timed() call


def timed(argv: list[str], repeat: int) -> tuple[float, subprocess.CompletedProcess]:
    """Median wall seconds of `repeat` runs and the last run; CPU gets the median CPU seconds they took here."""
    times, cpu, last = [], [], None
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        last = subprocess.run(argv, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    assert last is not None
    CPU[:] = [statistics.median(cpu)]
    return statistics.median(times), last


def measure(host: sshd.SshHost, key: Path, work: Path, sizes: list[int], repeat: int, hung_port: int) -> None:
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
    ssh = ["ssh", "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={known_hosts}", "-o", "IdentitiesOnly=yes",
           "-i", str(key), "-p", str(ports[0]), "root@127.0.0.1", "true"]
    rtt, _ = timed(ssh, repeat)
    print(f"fresh ssh host true: {rtt:.3f} s (median of {repeat})")
    start, _ = timed([TOOL, "--version"], repeat)
    print(f"alumet-setup --version (the CLI's start): {start:.3f} s")

    def doctor(names: list[str], repeat: int) -> tuple[float, dict]:
        argv = [TOOL, "doctor", "-i", str(inventory), *[a for n in names for a in ("--host", n)], "--json"]
        seconds, run = timed(argv, repeat)
        document = json.loads(run.stdout)
        errors = {h["host"]: h["error"] for h in document["hosts"] if "error" in h}
        assert set(errors) <= {"hung"}, errors
        return seconds, document

    one, document = doctor(names[:1], repeat)
    trips = document["hosts"][0]["round_trips"]
    one_cpu = CPU[0]
    print(f"doctor, 1 host: {one:.3f} s = {one / rtt:.1f}x the ssh round trip ({trips} round trips, "
          f"{document['hosts'][0]['seconds']:.3f} s reading the host; controller CPU {one_cpu:.2f} s)")
    for n in sizes:
        if n > 1:
            seconds, _ = doctor(names[:n], repeat)
            print(f"doctor, {n} hosts: {seconds:.3f} s = {seconds / one:.1f}x one host, {seconds / rtt:.1f}x the "
                  f"ssh round trip; controller CPU {CPU[0]:.2f} s = {(CPU[0] - one_cpu) / (n - 1):.3f} s per more host")
    some = names[: min(8, len(names))]
    seconds, document = doctor([*some, "hung"], 1)
    hung = next(h for h in document["hosts"] if h["host"] == "hung")
    slowest = max(h["seconds"] for h in document["hosts"] if h["host"] != "hung")
    print(f"doctor, {len(some)} hosts + one that never answers: {seconds:.3f} s; the hung one: {hung['error']!r} "
          f"after {hung['seconds']:.1f} s; the slowest other host read in {slowest:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,8,32,50", help="fleet sizes (comma-separated)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure (median)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    prepare.main()  # the bed images (cached)
    work = Path(tempfile.mkdtemp(prefix="fleet-doctor-"))
    key = sshd.make_key(work / "id")
    hosts = sshd.start([("bench", "debian13")], Path(f"{key}.pub"), label="alumet-setup-bench")
    try:
        with sshd.silent_port() as hung_port:
            measure(hosts[0], key, work, sizes, args.repeat, hung_port)
    finally:
        sshd.remove(hosts)


if __name__ == "__main__":
    main()
