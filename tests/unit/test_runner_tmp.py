"""Leave nothing behind (issue 15): the tool's runs keep Ansible's remote temporary files and async job
status in ~/.alumet-setup, and uninstall's last task removes it. Real local runs: this user's home is
the host's home (Ansible expands ~ from the account, not from $HOME, so it cannot be redirected)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from alumet_setup import resources, runner
from alumet_setup.inventory import build_inventory, resolve_targets

ASYNC_JOB = [
    {"name": "Build slowly", "ansible.builtin.command": "sleep 1", "async": 30, "poll": 0,
     "register": "job", "changed_when": True},
    {"name": "Wait for the build", "ansible.builtin.async_status": {"jid": "{{ job.ansible_job_id }}"},
     "register": "waited", "until": "waited.finished", "retries": 20, "delay": 1},
]


def _run(tmp_path: Path, tasks: list, post_tasks: list | None = None) -> tuple[runner.RunResult, list[str]]:
    play = {"name": "tiny", "hosts": "all", "gather_facts": False, "tasks": tasks}
    if post_tasks:
        play["post_tasks"] = post_tasks
    playbook = tmp_path / "play.yml"
    playbook.write_text(yaml.safe_dump([play], sort_keys=False))
    lines: list[str] = []
    result = runner.run_playbook(playbook, generated_inventory=build_inventory(resolve_targets([])),
                                 hosts=["localhost"], runs_dir=tmp_path / "runs", echo=lines.append,
                                 # no sudo on the test machine; root becomes root with su, no password
                                 extravars={"ansible_become_method": "ansible.builtin.su"})
    return result, lines


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


OURS = Path.home() / ".alumet-setup"


def _job_ids(directory: Path) -> set[str]:
    return {p.name for p in directory.glob("j*")} if directory.is_dir() else set()


def test_a_run_keeps_its_tmp_and_async_files_in_the_tools_own_directory(tmp_path: Path) -> None:
    before, ours_before = _job_ids(Path.home() / ".ansible_async"), _job_ids(OURS / "async")
    result, lines = _run(tmp_path, ASYNC_JOB)
    assert result.ok, lines  # async_status found the job
    (job,) = _job_ids(OURS / "async") - ours_before  # earlier runs (integration/test_runner.py) may leave theirs
    assert job not in before and _job_ids(Path.home() / ".ansible_async") == before
    assert (OURS / "tmp").is_dir()
    env = json.loads((result.artifact_dir / "command").read_text())["env"]
    assert env["ANSIBLE_REMOTE_TMP"] == "~/.alumet-setup/tmp"
    assert env["ANSIBLE_ASYNC_DIR"] == "~/.alumet-setup/async"


def test_uninstall_ends_by_removing_that_directory(tmp_path: Path) -> None:
    (play,) = yaml.safe_load(resources.playbook("uninstall").read_text())
    cleanup = play["post_tasks"]
    assert cleanup[-1] is play["post_tasks"][-1] and "tasks" in play  # after every step's tasks
    result, lines = _run(tmp_path, ASYNC_JOB, cleanup)
    assert result.ok, lines
    assert any("ok: Remove alumet-setup's own Ansible temporary directory" in line
               or "changed: Remove alumet-setup's own" in line for line in lines), lines
    assert not OURS.exists()


def test_uninstall_cleanup_leaves_a_plain_ansible_directory_alone(tmp_path: Path, home: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # Not our run's directory (ANSIBLE_REMOTE_TMP of someone else's run): the task must not touch it.
    mine = home / ".alumet-setup"
    mine.mkdir()
    (play,) = yaml.safe_load(resources.playbook("uninstall").read_text())
    task = dict(play["post_tasks"][-1])
    task["vars"] = {"alumet_setup_remote_tmp": "~/.ansible/tmp"}
    (home / ".ansible").mkdir()
    result, lines = _run(tmp_path, [task])
    assert result.ok, lines
    assert (home / ".ansible").is_dir() and mine.is_dir()
