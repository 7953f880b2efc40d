#!/usr/bin/env python3
"""What the service costs an install rerun on an up-to-date host, in one run (issue 27's target: a rerun with
`alumet_service_enabled` <= 1.2x the same rerun without it).

One Debian 13 VM (tests/bed/vm.py: systemd, a kernel of its own; TCG here) and one bed container that builds
the agent once for it (as the VM tier does: a cargo build under TCG takes ten minutes). The same inventory is
installed without the service and rerun (--repeat times), then installed with the service on the VM (an
inventory variable, as a lab sets it) and rerun as often. Every rerun must leave both hosts out as up to date
(no play); the figure is the median wall time of each, and their ratio. VM boot and the installs are printed,
not compared.

    CONTAINERS_CONF=$PWD/.ci/containers.conf .venv/bin/python bench/service_rerun.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "bed"))
sys.path.insert(0, str(ROOT / "tests" / "integration"))

import prepare  # noqa: E402  (tests/bed is not a package)
import rust_mirror  # noqa: E402
import services  # noqa: E402
import sshd  # noqa: E402
import standin  # noqa: E402
import vm  # noqa: E402
from bedhost import container, podman_collection  # noqa: E402

TOOL = str(ROOT / ".venv" / "bin" / "alumet-setup")
VM_NAME = "debian13"


def cli(work: Path, *args: str, timeout: int) -> tuple[float, subprocess.CompletedProcess[str]]:
    """`alumet-setup ARGS` against the VM and the builder: seconds and the process."""
    env = {**os.environ, "XDG_STATE_HOME": str(work / "state"),
           "ANSIBLE_COLLECTIONS_PATH": str(podman_collection(work)), "ANSIBLE_PIPELINING": "True"}
    start = time.monotonic()
    run = subprocess.run([TOOL, *args], capture_output=True, text=True, env=env, timeout=timeout, check=False)
    return time.monotonic() - start, run


def install(work: Path, inventory: Path, settings: list[str], timeout: int) -> tuple[float, str]:
    seconds, run = cli(work, "install", "-i", str(inventory), *[a for s in settings for a in ("--set", s)],
                       timeout=timeout)
    if run.returncode != 0:
        raise SystemExit(f"install failed (rc {run.returncode}):\n{run.stdout[-4000:]}\n{run.stderr[-2000:]}")
    return seconds, run.stdout


def reruns(work: Path, inventory: Path, settings: list[str], repeat: int) -> float:
    """Median seconds of `repeat` reruns, each of which must leave every host out as up to date."""
    times = []
    for _ in range(repeat):
        seconds, out = install(work, inventory, settings, 900)
        if "Nothing to run" not in out:
            raise SystemExit(f"a rerun was not up to date:\n{out[-4000:]}")
        times.append(seconds)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="reruns per figure (median)")
    args = parser.parse_args()
    os.environ.setdefault("CONTAINERS_CONF", str(ROOT / ".ci" / "containers.conf"))
    os.environ["no_proxy"] = os.environ["NO_PROXY"] = "127.0.0.1,localhost"
    prepare.main()
    rust_mirror.build()
    standin.build()
    toolchain = ".".join(rust_mirror.version().split(".")[:2])
    # The guest reaches the bed's services on its own 127.0.0.1 (vm.py's forwards), the builder on the host's.
    settings = [f"rustup_dist_server={services.MIRROR_URL}", f"rustup_update_root={services.RUSTUP_UPDATE_ROOT}",
                f"rustup_toolchain={toolchain}", f"alumet_agent_git_url={services.GIT_URL}"]
    with tempfile.TemporaryDirectory(prefix="as-service-rerun-") as tmp, services.running():
        work = Path(tmp)
        key = sshd.make_key(work / "id_ed25519")
        with (vm.private_services(work) as ports, vm.running([VM_NAME], work, key, service_ports=ports) as vms,
              container(VM_NAME) as builder):
            guest = vms[VM_NAME]
            print(f"vm {VM_NAME}: {guest.accel}, SSH after {guest.timings['boot_s']} s", flush=True)
            build = {"ansible_connection": "containers.podman.podman", "ansible_become": False,
                     "ansible_python_interpreter": "/usr/bin/python3", "ansible_host": builder.name}
            # The agent's profile: procfs (no RAPL in a VM; rapl stops the agent at start-up there).
            plain = {"builder": build, VM_NAME: {**guest.connection(), "alumet_config_profile": "procfs"}}
            served = {"builder": build, VM_NAME: {**plain[VM_NAME], "alumet_service_enabled": True}}
            without = sshd.write_inventory(work / "without.yml", {"all": {"hosts": plain}})
            with_service = sshd.write_inventory(work / "with.yml", {"all": {"hosts": served}})
            seconds, _ = install(work, without, settings, 2400)
            print(f"install without the service: {seconds:.0f} s", flush=True)
            base = reruns(work, without, settings, args.repeat)
            print(f"rerun, up to date, without the service: {base:.1f} s (median of {args.repeat})", flush=True)
            seconds, _ = install(work, with_service, settings, 1800)
            print(f"install with the service (the same host, the service added): {seconds:.0f} s", flush=True)
            served_s = reruns(work, with_service, settings, args.repeat)
            print(f"rerun, up to date, with the service: {served_s:.1f} s (median of {args.repeat}) = "
                  f"{served_s / base:.2f}x the rerun without it", flush=True)


if __name__ == "__main__":
    main()
