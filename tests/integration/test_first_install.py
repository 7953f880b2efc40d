"""A user's first install, end to end, as the README tells it: alumet-setup installed by the README's first
command (the `tool` fixture) against sshd containers on 127.0.0.1 (tests/bed/sshd.py) that reach nothing but
the bed's loopback Rust mirror and git daemon.

lab:   a Debian 13 host, the agent's capabilities in its bounding set; also a login user without sudo.
tight: the same, started with podman's default bounding set only (no CAP_PERFMON, CAP_SYS_NICE, ...): the
       granted agent cannot be executed there, by anyone.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import readme_commands  # tests/bed, put on sys.path by tests/conftest.py
import sshd
from installed_tool import InstalledTool

pytestmark = [pytest.mark.containers]


@dataclass
class Bed:
    work: Path
    ports: dict[str, int]
    containers: dict[str, str]
    inventory: Path
    env: dict[str, str]  # added to the tool's environment
    settings: dict[str, str]
    tool: InstalledTool


@pytest.fixture(scope="module")
def hosts(bed: dict[str, str], tool: InstalledTool, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    work = tmp_path_factory.mktemp("first")
    key = sshd.make_key(work / "id")
    started = sshd.start([("lab", "debian13"), ("tight", "debian13")], Path(f"{key}.pub"), cap_add={"tight": []})
    try:
        known_hosts = sshd.write_known_hosts(work / "known_hosts", started)
        inventory = sshd.write_inventory(work / "inventory.yml", sshd.inventory(started, key, known_hosts))
        # Ad-hoc --host targets (the README's form) get the same key and known_hosts through Ansible's own setting.
        ssh_args = f"-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes -i {key}"
        yield Bed(work, {h.name: h.port for h in started}, {h.name: h.container for h in started}, inventory,
                  {"ANSIBLE_SSH_COMMON_ARGS": ssh_args},
                  {"rustup_mirror": bed["mirror_url"], "alumet_agent_git_url": bed["git_url"]}, tool)
    finally:
        sshd.remove(started)


def cli(b: Bed, *args: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    return b.tool.cli(*args, state=b.work / "state", timeout=timeout, **b.env)


def readme_airgapped_args(b: Bed) -> list[str]:
    """The README's air-gapped install against lab, its placeholders filled in with the bed's services. The one
    addition: the bed's mirror serves only its own X.Y, not the default 1.89 (docs/testbed.md); the README says
    so ("the channel rustup_toolchain names")."""
    (argv,) = readme_commands.commands("Air-gapped labs")
    assert argv[:2] == ["alumet-setup", "install"]
    args = readme_commands.substitute(argv[1:], b.settings, host=f"root@127.0.0.1:{b.ports['lab']}")
    return [*args, "--set", f"rustup_toolchain={os.environ['BED_RUST_TOOLCHAIN']}"]


def test_no_sudo_is_one_line_saying_what_to_do(hosts: Bed) -> None:
    # A login user on a Debian host without sudo (the bed images have none, as Debian minimal).
    subprocess.run(["podman", "exec", hosts.containers["lab"], "sh", "-c",
                    "useradd -m lab && mkdir -p ~lab/.ssh && cp /root/.ssh/authorized_keys ~lab/.ssh/ "
                    "&& chown -R lab: ~lab/.ssh"], check=True, capture_output=True)
    port = hosts.ports["lab"]
    run = cli(hosts, "install", "--host", f"lab@127.0.0.1:{port}", "--only", "sysctl", timeout=300)
    out = run.stdout + run.stderr
    assert run.returncode == 1, out[-3000:]
    assert run.stderr.splitlines() == [
        f"alumet-setup: error: escalation to root is impossible on 127.0.0.1_{port}: sudo is not installed there; "
        f"log in as root (--host root@127.0.0.1:{port}) or install sudo and allow the login user to use it"], out
    assert "modules failed to execute" not in out, out[-3000:]


def test_readme_first_command_then_a_dry_run_and_doctor_on_a_fresh_host(hosts: Bed) -> None:
    """What a new user does first: the README's first command (the `tool` fixture runs it as written, and it
    ends with doctor on this machine), then `install --check` and `doctor` against a fresh Debian 13 host.
    Before the wheel's filter plugin could load (e3a0927), the dry run failed at the capabilities step."""
    first = hosts.tool.first_run
    verdicts = [line for line in first.stdout.splitlines() if line.startswith("Next: ")]
    assert len(verdicts) == 1, first.stdout[-2000:] + first.stderr[-2000:]  # doctor ran to its closing line
    check = cli(hosts, *readme_airgapped_args(hosts), "--check")
    out = check.stdout + check.stderr
    assert check.returncode == 0, out[-4000:]
    assert "FAILED" not in out and "Traceback" not in out, out[-4000:]
    assert "alumet_agent: would run cargo install" in out, out[-4000:]

    # Doctor's ssh reads no Ansible setting: the inventory gives it the bed's key and known_hosts.
    doctor = cli(hosts, "doctor", "-i", str(hosts.inventory), "--host", "lab", "--json", timeout=120)
    assert doctor.returncode == 1, doctor.stdout + doctor.stderr  # answered; not ready before the install
    (host,) = json.loads(doctor.stdout)["hosts"]
    status = {c["id"]: c["status"] for c in host["checks"]}
    assert "error" not in host and status["system.os"] == "ok", host
    assert status["agent.binary"] == "fail", host["summary"]  # the dry run installed nothing


def test_readme_airgapped_install_as_written(hosts: Bed) -> None:
    run = cli(hosts, *readme_airgapped_args(hosts))
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    assert "FAILED" not in out, out[-4000:]
    events = _events(run.stdout)
    # rustup-init came from the mirror's rustup/ tree, the agent from the lab's git URL.
    downloads = [e["event_data"]["res"].get("url") for e in events if e.get("event") == "runner_on_ok"
                 and str(e["event_data"].get("task", "")).startswith("Install | Download rustup-init")]
    assert downloads and downloads[0].startswith(f"{hosts.settings['rustup_mirror']}/rustup/dist/"), downloads


def test_agent_that_cannot_run_fails_the_install_with_doctors_fix(hosts: Bed) -> None:
    # After the README install on lab: tight gets lab's build and its capabilities, which tight's bounding set
    # cannot honour. Install must not call that a success, and must say what doctor says.
    settings = [a for k, v in hosts.settings.items() for a in ("--set", f"{k}={v}")]
    run = cli(hosts, "install", "-i", str(hosts.inventory), "--host", "lab", "--host", "tight", *settings,
              "--set", f"rustup_toolchain={os.environ['BED_RUST_TOOLCHAIN']}")
    out = run.stdout + run.stderr
    assert run.returncode == 1, out[-4000:]
    lines = run.stdout.splitlines()
    failed = [i for i, line in enumerate(lines) if line.startswith("[tight] FAILED: ")]
    assert len(failed) == 1, out[-4000:]
    headline, cause, fix_line = lines[failed[0]:failed[0] + 3]
    assert "Run | Stop when the agent cannot run" in headline and "--version as nobody failed" in headline, headline
    assert cause.strip().endswith("outside this environment's capability bounding set: the kernel refuses to "
                                  "execute alumet-agent (EPERM)"), cause
    fix = fix_line.strip().removeprefix("fix: ")
    assert fix.startswith("start the container with --cap-add=") and "PERFMON" in fix, fix_line
    assert not [line for line in run.stdout.splitlines() if line.startswith("[lab] FAILED")], out[-4000:]

    doctor = cli(hosts, "doctor", "-i", str(hosts.inventory), "--host", "tight", "--only-check",
                 "agent.binary,agent.capabilities", timeout=120)
    assert doctor.returncode == 1, doctor.stdout + doctor.stderr
    fixes = [line.strip() for line in doctor.stdout.splitlines() if line.strip().startswith(("fix:", "or:"))]
    assert fixes == [f"fix: {fix}", f"fix: {fix}"], doctor.stdout  # the same words, and no reinstall advice


def _events(stdout: str) -> list[dict]:
    run_log = next(line.split(": ", 1)[1] for line in stdout.splitlines() if line.startswith("Run log: "))
    return [json.loads(p.read_text()) for p in sorted(Path(run_log, "job_events").glob("*.json"))]
