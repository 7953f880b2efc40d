#!/usr/bin/env python3
"""Wall time of a first `alumet-setup install` and of a second run, per platform, on this machine.

Each platform gets a fresh bed container (tests/bed images, host network, the agent's capabilities in
its bounding set), reached through an inventory with the containers.podman connection; the real CLI
installs every step against the bed's Rust mirror and stand-in source, twice. Prints, per platform:
first-run time, second-run time, changed tasks on the second run (goal 0), and whether cargo ran on the
second run (goal: no).

Usage (as root, after tests/run.sh has built the bed once):
    CONTAINERS_CONF=$PWD/.ci/containers.conf .venv/bin/python bench/install_times.py [debian13 ...]
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "bed"))

import prepare  # noqa: E402  (tests/bed is not a package)
import rust_mirror  # noqa: E402
import services  # noqa: E402

PLATFORMS = ("debian13", "ubuntu2404", "ubuntu2204")
CAPS = ("CAP_PERFMON", "CAP_SYS_NICE", "CAP_SYS_PTRACE")
# `[host] changed: Build | Start cargo install ...`: the one task that runs cargo.
CARGO_RAN = re.compile(r"changed: .*Start cargo install")


def start_container(platform: str) -> str:
    name = f"bench-install-{platform}"
    subprocess.run(["podman", "rm", "-f", name], capture_output=True, check=False)
    # Its own apt archive cache: apt does not wait for the archives lock of a cache shared between
    # containers running at the same time.
    cache = ROOT / ".cache" / "apt" / name
    cache.mkdir(parents=True, exist_ok=True)
    cmd = ["podman", "run", "-d", "--name", name, "--network", "host", *[f"--cap-add={c}" for c in CAPS],
           "-v", f"{cache}:/var/cache/apt/archives", f"localhost/alumet-bed-{platform}:latest", "sleep", "infinity"]
    subprocess.run(cmd, check=True, capture_output=True)
    return name


def install(inventory: Path, toolchain: str) -> tuple[float, str]:
    cli = Path(sys.executable).parent / "alumet-setup"
    settings = {
        "rustup_toolchain": toolchain, "rustup_dist_server": services.MIRROR_URL,
        "rustup_update_root": services.RUSTUP_UPDATE_ROOT, "alumet_agent_git_url": services.GIT_URL,
    }
    argv = [str(cli), "install", "-i", str(inventory)]
    for key, value in settings.items():
        argv += ["--set", f"{key}={value}"]
    start = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(f"install failed (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    return elapsed, proc.stdout


def changed_count(output: str, host: str) -> int:
    """The `changed` column of the CLI's summary table for `host`."""
    lines = output.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["host", "ok"])
    columns = lines[header].split()
    for line in lines[header + 1:]:
        cells = line.split()
        if cells and cells[0] == host:
            return int(cells[columns.index("changed")])
    raise ValueError(f"{host} missing from the summary")


def main() -> None:
    platforms = sys.argv[1:] or list(PLATFORMS)
    prepare.main()
    toolchain = ".".join(rust_mirror.version().split(".")[:2])
    rows = []
    with services.running(), tempfile.TemporaryDirectory() as tmp:
        for platform in platforms:
            name = start_container(platform)
            try:
                inventory = Path(tmp) / f"{platform}.ini"
                inventory.write_text(f"{name} ansible_connection=containers.podman.podman "
                                     "ansible_python_interpreter=/usr/bin/python3 ansible_become=false\n")
                first, _ = install(inventory, toolchain)
                second, output = install(inventory, toolchain)
                rows.append((platform, first, second, changed_count(output, name), bool(CARGO_RAN.search(output))))
            finally:
                subprocess.run(["podman", "rm", "-f", name], capture_output=True, check=False)
    print(f"alumet-setup install, fresh bed container per platform, Rust {toolchain} from the local mirror")
    print(f"{'platform':12} {'first run':>10} {'second run':>11} {'changed (2nd)':>14} {'cargo ran (2nd)':>16}")
    for platform, first, second, changed, cargo in rows:
        print(f"{platform:12} {first:9.0f}s {second:10.0f}s {changed:14d} {'yes' if cargo else 'no':>16}")


if __name__ == "__main__":
    main()
