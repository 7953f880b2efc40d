#!/usr/bin/env python3
"""Where the time of a first `alumet-setup install` and of its reruns goes, per step, over SSH (sshd
containers, tests/bed/sshd.py) and over the containers.podman connection, on 1 and 3 hosts.

Each case starts fresh bed containers and runs, with the real CLI (local Rust mirror, stand-in source,
warm apt caches): a first install, a rerun (the fast path: hosts up to date are surveyed, not run), a
`--full` rerun (every step on every host), and `alumet-setup doctor` on the same hosts. It reads the run
log's events (job_events of the run directory the CLI names): per step, the wall time from its first
task's start to its last task's end over all hosts, and the full rerun's slowest tasks. Container start
is not counted.

    CONTAINERS_CONF=$PWD/.ci/containers.conf .venv/bin/python bench/rerun_times.py [--cases ssh1,ssh3,podman1,podman3]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "bed"))
sys.path.insert(0, str(ROOT / "bench"))

import prepare  # noqa: E402  (tests/bed is not a package)
import rust_mirror  # noqa: E402
import services  # noqa: E402
import sshd  # noqa: E402
from _install import timed_install  # noqa: E402

from alumet_setup.playbook import settings  # noqa: E402

HOSTS = {1: [("deb13a", "debian13")], 3: [("deb13a", "debian13"), ("deb13b", "debian13"), ("u2404a", "ubuntu2404")]}
CAPS = "CAP_PERFMON,CAP_SYS_NICE,CAP_SYS_PTRACE"
# Role -> install step, in step order, from playbooks/install.yml's tags (the pre_task plan.yml and fact
# gathering apart).
STEPS = {role: step for step in settings.STEPS for role, tags in
         sorted(settings.steps_by_role(ROOT / "playbooks" / "install.yml").items()) if step in tags}
RESULTS = ("runner_on_ok", "runner_on_failed", "runner_on_skipped", "runner_on_unreachable")


@contextmanager
def ssh_hosts(size: int, work: Path) -> Iterator[Path]:
    key = work / "id"
    if not key.exists():
        sshd.make_key(key)
    hosts = sshd.start(HOSTS[size], Path(f"{key}.pub"), label="alumet-setup-bench")
    try:
        known_hosts = sshd.write_known_hosts(work / "known_hosts", hosts)
        yield sshd.write_inventory(work / f"ssh{size}.yml", sshd.inventory(hosts, key, known_hosts))
    finally:
        sshd.remove(hosts)


@contextmanager
def podman_hosts(size: int, work: Path) -> Iterator[Path]:
    names: list[str] = []
    try:
        seen: dict[str, int] = {}
        for name, platform in HOSTS[size]:
            seen[platform] = seen.get(platform, 0) + 1
            cache = ROOT / ".cache" / "apt" / (platform if seen[platform] == 1 else f"{platform}-{seen[platform]}")
            cache.mkdir(parents=True, exist_ok=True)
            container = f"bench-rerun-{name}-{uuid.uuid4().hex[:6]}"
            subprocess.run(["podman", "run", "-d", "--name", container, "--network", "host", "--cap-add", CAPS,
                            "-v", f"{cache}:/var/cache/apt/archives", f"localhost/alumet-bed-{platform}:latest",
                            "sleep", "infinity"], check=True, capture_output=True)
            names.append(container)
        inventory = work / f"podman{size}.ini"
        inventory.write_text("".join(f"{n} ansible_connection=containers.podman.podman "
                                     "ansible_python_interpreter=/usr/bin/python3 ansible_become=false\n"
                                     for n in names))
        yield inventory
    finally:
        for container in names:
            subprocess.run(["podman", "rm", "-f", "-t", "0", container], capture_output=True, check=False)


def install(inventory: Path, work: Path, toolchain: str, *extra: str) -> tuple[float, Path | None, str]:
    """One real install; returns its wall time, its run directory (None: no host ran) and its output."""
    settings = [f"rustup_dist_server={services.MIRROR_URL}", f"rustup_update_root={services.RUSTUP_UPDATE_ROOT}",
                f"rustup_toolchain={toolchain}", f"alumet_agent_git_url={services.GIT_URL}"]
    seconds, proc = timed_install(inventory, settings, work, extra)
    run_dir = re.search(r"^Run log: (.+)$", proc.stdout, re.MULTILINE)
    return seconds, Path(run_dir.group(1)) if run_dir else None, proc.stdout


def doctor(inventory: Path) -> float:
    """Seconds of `alumet-setup doctor` on every host of the inventory (exit 1, not ready, is fine here)."""
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "alumet_setup", "doctor", "-i", str(inventory)],
                          capture_output=True, text=True, cwd=ROOT, check=False)
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"doctor failed (rc {proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return time.monotonic() - start


def _step(data: dict[str, Any]) -> str:
    if data.get("task") == "Gathering Facts":
        return "facts"
    if "tasks/plan.yml" in str(data.get("task_path", "")):
        return "plan"
    return STEPS.get(str(data.get("role", "")), str(data.get("role") or "play"))


def profile(run_dir: Path) -> tuple[dict[str, tuple[float, int]], list[tuple[float, str, str]]]:
    """Step -> (wall seconds, task results) and the task results by duration, from the run's events."""
    spans: dict[str, list[datetime]] = {}
    counts: dict[str, int] = {}
    tasks: list[tuple[float, str, str]] = []
    results = []
    for path in (run_dir / "job_events").glob("*.json"):
        event = json.loads(path.read_text())
        data = event.get("event_data") or {}
        if event.get("event") in RESULTS and data.get("start") and data.get("end"):
            results.append(data)
    results.sort(key=lambda d: d["start"])
    # The shared role's tasks (alumet_common, imported at the start of every role) count for the step of
    # the role that imports them: the next task of another role.
    steps_in_order = [_step(d) for d in results]
    for i in range(len(steps_in_order) - 2, -1, -1):
        if steps_in_order[i] == "alumet_common":
            steps_in_order[i] = steps_in_order[i + 1]
    # install_record runs first (begin.yml) and last: its first tasks get a row of their own.
    first_step = next((i for i, s in enumerate(steps_in_order) if s not in ("facts", "plan", "play", "install_record")),
                      len(steps_in_order))
    steps_in_order = [f"{s} (begin)" if s == "install_record" and i < first_step else s
                      for i, s in enumerate(steps_in_order)]
    for data, step in zip(results, steps_in_order, strict=True):
        start, end = datetime.fromisoformat(data["start"]), datetime.fromisoformat(data["end"])
        span = spans.setdefault(step, [start, end])
        span[0], span[1] = min(span[0], start), max(span[1], end)
        counts[step] = counts.get(step, 0) + 1
        tasks.append((float(data.get("duration") or 0), data.get("host", ""), data.get("task", "")))
    steps = {s: ((e - b).total_seconds(), counts[s]) for s, (b, e) in spans.items()}
    return steps, sorted(tasks, reverse=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="ssh1,ssh3,podman1,podman3")
    parser.add_argument("--top", type=int, default=8, help="slowest rerun tasks to list")
    args = parser.parse_args()
    os.environ.setdefault("CONTAINERS_CONF", str(ROOT / ".ci" / "containers.conf"))
    os.environ["no_proxy"] = os.environ["NO_PROXY"] = "127.0.0.1,localhost"
    prepare.main()
    toolchain = ".".join(rust_mirror.version().split(".")[:2])
    load = os.getloadavg()[0]
    with services.running(), tempfile.TemporaryDirectory(prefix="as-bench-") as tmp:
        for case in args.cases.split(","):
            kind, size = case[:-1], int(case[-1])
            hosts = ssh_hosts if kind == "ssh" else podman_hosts
            with hosts(size, Path(tmp)) as inventory:
                first, first_dir, _ = install(inventory, Path(tmp), toolchain)
                again, again_dir, again_out = install(inventory, Path(tmp), toolchain)
                full, full_dir, output = install(inventory, Path(tmp), toolchain, "--full")
                checked = doctor(inventory)
            assert first_dir and full_dir
            first_steps, _ = profile(first_dir)
            full_steps, slowest = profile(full_dir)
            ran = "no host ran" if again_dir is None else "some host ran: " + ", ".join(
                line.split(":")[0] for line in again_out.splitlines() if ": runs: " in line)
            changed = re.findall(r"^\S+\s+\d+\s+(\d+)\s", output, re.MULTILINE)
            print(f"\n## {kind}, {size} host(s): first install {first:.1f} s; rerun {again:.1f} s "
                  f"({100 * again / first:.0f} %, {ran}); --full rerun {full:.1f} s ({100 * full / first:.0f} %, "
                  f"changed {'/'.join(changed)}); doctor {checked:.1f} s (rerun / doctor {again / checked:.1f}x)")
            print(f"{'step':14} {'first s':>8} {'full s':>8} {'results':>8}")
            order = ["facts", "plan", "play", "install_record (begin)", *STEPS.values()]
            for step in sorted(set(first_steps) | set(full_steps), key=lambda s: [*order, s].index(s)):
                f = first_steps.get(step, (0.0, 0))[0]
                r, n = full_steps.get(step, (0.0, 0))
                print(f"{step:14} {f:8.1f} {r:8.1f} {n:8d}")
            print("slowest --full rerun tasks: " + "; ".join(f"{t} [{h}] {d:.1f} s" for d, h, t in slowest[:args.top]))
    print(f"\nload average at start: {load:.1f} (shared machine: read the figures as relative ones)")


if __name__ == "__main__":
    main()
