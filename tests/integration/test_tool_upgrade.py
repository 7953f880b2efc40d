"""Upgrading the tool itself (issue 22, item 5), as the README's "Upgrade and remove" says: the previous release
installed by the README's first command, a host prepared with it, the README's upgrade line run from this
checkout into the same venv, and install run again against that host; then uninstall and the README's removal.

PREVIOUS is the last commit before the end-to-end tiers drove the installed wheel: what users had installed.
It needs the repository's history (a full clone), as any `git archive` of an earlier commit does.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import installed_tool  # tests/bed, put on sys.path by tests/conftest.py
import pytest
import sshd

ROOT = installed_tool.ROOT
PREVIOUS = "5fa8228"
SECTION = "Upgrade and remove"
# Steps both releases have that a container allows and that take seconds; the group's name is a choice,
# so it goes into the install record.
STEPS = ("--only", "group,sysctl", "--set", "alumet_group_name=alumetlab")
RECORD = "/var/lib/alumet-setup/choices.json"

pytestmark = [pytest.mark.containers]


@pytest.fixture
def host(bed: dict[str, str], tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A fresh Debian 13 sshd container: (its inventory, its podman container)."""
    key = sshd.make_key(tmp_path / "id")
    started = sshd.start([("up", "debian13")], Path(f"{key}.pub"))
    try:
        known_hosts = sshd.write_known_hosts(tmp_path / "known_hosts", started)
        yield sshd.write_inventory(tmp_path / "inventory.yml", sshd.inventory(started, key, known_hosts)), \
            started[0].container
    finally:
        sshd.remove(started)


def previous_release(tmp_path: Path) -> Path:
    """The PREVIOUS commit's tree, as a clone of that release would have it."""
    tree, tar = tmp_path / "previous", tmp_path / "previous.tar"
    tree.mkdir()
    made = subprocess.run(["git", "-C", str(ROOT), "archive", "--output", str(tar), PREVIOUS], capture_output=True,
                          text=True, check=False)
    assert made.returncode == 0, f"git archive {PREVIOUS} (needs a full clone): {made.stderr}"
    subprocess.run(["tar", "-xf", str(tar), "-C", str(tree)], check=True)
    return tree


def on_host(container: str, script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", "exec", container, "sh", "-c", script], capture_output=True, text=True,
                          check=False, timeout=60)


def test_upgrade_over_the_previous_release_keeps_its_host_then_remove(
        host: tuple[Path, str], tmp_path: Path) -> None:
    inventory, container = host
    home = tmp_path / "home"
    tool = installed_tool.install(home, tmp_path / "work", source=previous_release(tmp_path))
    # The user's own HOME: the runs are logged under ~/.local/state/alumet-setup, which the README removes.
    env = {k: v for k, v in tool.env(HOME=str(home)).items() if k != "XDG_STATE_HOME"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return tool.run(*args[:1], "-i", str(inventory), "--host", "up", *args[1:], env=env, timeout=600)

    first = cli("install", *STEPS)
    assert first.returncode == 0, (first.stdout + first.stderr)[-4000:]
    record = json.loads(on_host(container, f"cat {RECORD}").stdout)
    assert record["choices"]["alumet_group_name"] == "alumetlab" and {"group", "sysctl"} <= set(record["applied"])

    # The README's upgrade line, from this checkout; the venv then runs this checkout's code.
    upgrade = installed_tool.as_user(installed_tool.readme_line(SECTION, "pip install --upgrade"), home, ROOT)
    assert upgrade.returncode == 0, upgrade.stdout[-2000:] + upgrade.stderr[-2000:]
    package = installed_tool.package_dir(tool.program.parent / "python", tool.workdir)
    changed = "alumet_setup/hostside/ptrace_need.py"  # differs between the two releases (e3a0927)
    # ... and moved: the previous release kept it at the package's top (alumet_setup/ptrace_need.py).
    old = subprocess.run(["git", "-C", str(ROOT), "show", f"{PREVIOUS}:alumet_setup/ptrace_need.py"],
                         capture_output=True, text=True, check=True).stdout
    assert not (package / "ptrace_need.py").exists()  # the upgrade left no module of the old layout behind
    assert (package / "hostside" / "ptrace_need.py").read_text() == (ROOT / changed).read_text() != old

    # The record the previous release wrote is read: doctor judges the host against its choice.
    doctor = cli("doctor", "--only-check", "system.choices", "--json")
    assert doctor.returncode in (0, 1), doctor.stdout + doctor.stderr
    choices = next(c for c in json.loads(doctor.stdout)["hosts"][0]["checks"] if c["id"] == "system.choices")
    assert choices["status"] == "ok" and choices["data"]["choices"]["alumet_group_name"] == "alumetlab", choices

    # The first rerun runs (the record vouches for the previous release's inputs only) and says why.
    start = time.monotonic()
    rerun = cli("install", *STEPS)
    rerun_s = time.monotonic() - start
    assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-4000:]
    assert "up: runs: no earlier install with these settings" in rerun.stdout, rerun.stdout[-3000:]
    assert "FAILED" not in rerun.stdout
    start = time.monotonic()
    again = cli("install", *STEPS)
    again_s = time.monotonic() - start
    assert again.returncode == 0 and "up: up to date, left out" in again.stdout, again.stdout[-3000:]
    assert "Nothing to run" in again.stdout
    print(f"rerun after the upgrade {rerun_s:.1f} s, the next one {again_s:.1f} s")

    # Removal as the README says: uninstall on the host first, then the tool and its state directory.
    undo = cli("uninstall", *STEPS)
    assert undo.returncode == 0, (undo.stdout + undo.stderr)[-4000:]
    # The previous release kept no record of what it created (/var/lib/alumet-setup/created.json), so nothing
    # tells its group from one the host had: uninstall keeps it and says why (docs/SECURITY.md).
    assert on_host(container, "getent group alumetlab").returncode == 0
    assert "ok: Uninstall | Say why the group stays" in undo.stdout, undo.stdout[-3000:]
    state = home / ".local" / "state" / "alumet-setup"
    assert (state / "runs").is_dir()  # where the README says the tool keeps its state
    remove = installed_tool.as_user(installed_tool.readme_line(SECTION, "rm -rf"), home, tool.workdir)
    assert remove.returncode == 0, remove.stderr
    assert not state.exists() and not (home / installed_tool.VENV).exists()
