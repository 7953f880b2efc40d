#!/usr/bin/env python3
"""Wall time of `alumet-setup install` on fleets of 1, 2 and 4 fresh sshd containers (tests/bed/sshd.py),
with build-once (the default) and with --build-on-each.

Fleets: 1 is one Debian 13 container; 2 is two; 4 is two Debian 13 and two Ubuntu 24.04 (build-once
compiles once, on an Ubuntu 24.04 host: the oldest glibc of the four); 4deb is four Debian 13. With 1 host
both modes run the same play, so it is measured once.
Each figure is one install from fresh containers (container start not counted),
with the local Rust mirror and stand-in source of the test bed and warm apt caches. Each stand-in build
burns --build-cpu-seconds of CPU over every core (ALUMET_STANDIN_BUILD_CPU_SECONDS), as a real
alumet-agent build takes minutes on two cores: without it build-once has nothing to save.

    CONTAINERS_CONF=$PWD/.ci/containers.conf .venv/bin/python bench/fleet_install.py
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "bed"))
sys.path.insert(0, str(ROOT / "bench"))

import prepare  # noqa: E402  (tests/bed is not a package)
import services  # noqa: E402
import sshd  # noqa: E402
from _install import timed_install  # noqa: E402

FLEETS = {
    "1": [("deb13a", "debian13")],
    "2": [("deb13a", "debian13"), ("deb13b", "debian13")],
    "4": [("deb13a", "debian13"), ("deb13b", "debian13"), ("u2404a", "ubuntu2404"), ("u2404b", "ubuntu2404")],
    "4deb": [("deb13a", "debian13"), ("deb13b", "debian13"), ("deb13c", "debian13"), ("deb13d", "debian13")],
}
SETTINGS = [f"rustup_dist_server={services.MIRROR_URL}", f"rustup_update_root={services.RUSTUP_UPDATE_ROOT}",
            "rustup_toolchain=1.95", f"alumet_agent_git_url={services.GIT_URL}"]


def install_time(fleet: str, build_on_each: bool, work: Path, build_cpu: float) -> float:
    """Seconds one install takes on the fresh hosts of a fleet; raises when it fails."""
    key = work / "id"
    if not key.exists():
        sshd.make_key(key)
    hosts = sshd.start(FLEETS[fleet], Path(f"{key}.pub"), label="alumet-setup-bench")
    try:
        known_hosts = sshd.write_known_hosts(work / "known_hosts", hosts)
        inventory = sshd.write_inventory(work / "inventory.yml", sshd.inventory(hosts, key, known_hosts))
        # The stand-in compiles in about a second: make each build cost what a real one does (minutes of CPU).
        cpu = [f'alumet_agent_environment={{"ALUMET_STANDIN_BUILD_CPU_SECONDS": "{build_cpu:g}"}}'] if build_cpu else []
        seconds, _ = timed_install(inventory, SETTINGS + cpu, work, ["--build-on-each"] if build_on_each else [])
        return seconds
    finally:
        sshd.remove(hosts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,2,4,4deb", help=f"fleets to measure (from {', '.join(FLEETS)})")
    parser.add_argument("--build-cpu-seconds", type=float, default=240,
                        help="CPU seconds each stand-in build burns, over every core (0: the bare stand-in)")
    args = parser.parse_args()
    sizes = args.sizes.split(",")
    unknown = sorted(set(sizes) - set(FLEETS))
    if unknown:
        parser.error(f"unknown fleet {', '.join(unknown)} (known: {', '.join(FLEETS)})")
    os.environ.setdefault("CONTAINERS_CONF", str(ROOT / ".ci" / "containers.conf"))
    os.environ["no_proxy"] = os.environ["NO_PROXY"] = "127.0.0.1,localhost"
    prepare.main()
    rows = []
    with services.running(), tempfile.TemporaryDirectory(prefix="as-bench-") as tmp:
        for size in sizes:
            once = install_time(size, False, Path(tmp), args.build_cpu_seconds)
            each = once if size == "1" else install_time(size, True, Path(tmp), args.build_cpu_seconds)
            rows.append((size, once, each))
            print(f"fleet {size}: build-once {once:.0f} s, build-on-each {each:.0f} s", file=sys.stderr)
    print(f"stand-in build: {args.build_cpu_seconds:g} CPU seconds over {os.cpu_count()} cores")
    one = next((once for size, once, _ in rows if size == "1"), None)
    print("| fleet | build-once | build-on-each |")
    print("|---|---|---|")
    for size, once, each in rows:
        same = " (same play)" if size == "1" else ""
        ratio = f" ({once / one:.2f}x)" if one and size != "1" else ""
        print(f"| {size} ({', '.join(p for _, p in FLEETS[size])}) | {once:.0f} s{ratio} | {each:.0f} s{same} |")


if __name__ == "__main__":
    main()
