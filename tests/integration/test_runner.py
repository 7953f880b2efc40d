"""runner.py against a real ansible-runner run of a tiny playbook on this machine (local connection,
debug/sleep tasks only: nothing on the machine changes)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from alumet_setup.playbook import runner
from alumet_setup.playbook.inventory import build_inventory, resolve_targets

PLAYBOOK = """
- hosts: all
  gather_facts: false
  tasks:
    - name: Say hello
      ansible.builtin.debug: {msg: hello}
    - name: Build slowly
      ansible.builtin.command: sleep 2
      async: 30
      poll: 0
      register: job
      changed_when: true
    - name: Wait for the build
      ansible.builtin.async_status: {jid: "{{ job.ansible_job_id }}"}
      register: waited
      until: waited.finished
      retries: 20
      delay: 1
    - name: Refuse politely
      ansible.builtin.fail: {msg: "boom: nothing\\nwas changed"}
      ignore_errors: true
    - name: Fail the way rustup does
      ansible.builtin.shell: |
        echo "warn: It looks like you have an existing rustup settings file" >&2
        echo "info: syncing channel updates" >&2
        echo "error: could not download nonexistent rust version 1.95" >&2
        echo "Caused by: http status 404" >&2
        exit 1
      changed_when: false
      ignore_errors: true
    - name: Never runs
      ansible.builtin.debug: {msg: x}
      when: false
"""
PASSWORD = "pw-Zq81-never-on-disk"


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("run")
    playbook = base / "tiny.yml"
    playbook.write_text(PLAYBOOK)
    runs = base / "runs"
    runs.mkdir()
    for i in range(5):  # older runs: rotation must drop the oldest (by the time in their names)
        (runs / f"20200101-00000{i}-abcdef").mkdir()
    (runs / "not-a-run").mkdir()  # never rotated: not named like a run
    lines: list[str] = []
    events: list[dict[str, Any]] = []
    progress_call = runner.Progress.__call__

    def record(self: runner.Progress, event: dict[str, Any]) -> bool:
        events.append(event)
        return progress_call(self, event)

    os.environ["ALUMET_TEST_UNRELATED"] = "must-not-reach-ansible"
    mp = pytest.MonkeyPatch()
    mp.setattr(runner.Progress, "__call__", record)
    try:
        result = runner.run_playbook(
            runner.PlaybookRun(playbook, generated_inventory=build_inventory(resolve_targets([])), hosts=["localhost"],
                               extravars={"alumet_group_name": "alumet"}),
            become_password=PASSWORD, echo=lines.append, keep=3, runs_dir=runs,
        )
    finally:
        mp.undo()
        del os.environ["ALUMET_TEST_UNRELATED"]
    return {"result": result, "lines": lines, "events": events, "runs": runs}


TIMED = r" \([0-9.]+ s\)"


def test_progress_lines(real_run: dict[str, Any]) -> None:
    lines = real_run["lines"]
    assert re.fullmatch(r"\[localhost\] ok: Say hello" + TIMED, lines[0]), lines
    assert not any(" TASK " in line for line in lines)  # one line per task, not a start line and a result
    for task in ("Say hello", "Build slowly", "Wait for the build", "Refuse politely"):
        shown = [line for line in lines if re.match(rf"\[localhost\] (ok|changed|FAILED \(ignored\)): {task}\b",
                                                    line)]
        assert len(shown) == 1, (task, lines)
    # Not a terminal: polls show as a line a minute at most (tests/unit/test_progress.py), skipped tasks with -v.
    assert not any("still running" in line or "Never runs" in line for line in lines), lines
    assert any(re.fullmatch(r"\[localhost\] changed: Wait for the build" + TIMED, line) for line in lines)
    failed = lines.index(next(line for line in lines if "Refuse politely" in line))
    assert re.fullmatch(r"\[localhost\] FAILED \(ignored\): Refuse politely" + TIMED + ": boom: nothing",
                        lines[failed]), lines[failed]
    assert lines[failed + 1] == "    was changed"  # the whole message, newlines rendered


def test_failure_shows_the_real_cause_first(real_run: dict[str, Any]) -> None:
    lines = real_run["lines"]
    at = lines.index(next(line for line in lines if "Fail the way rustup does" in line))
    assert lines[at].endswith(": error: could not download nonexistent rust version 1.95"), lines[at]
    assert lines[at + 1:at + 5] == ["    Caused by: http status 404",
                                    "    warn: It looks like you have an existing rustup settings file",
                                    "    info: syncing channel updates", "    (exit code 1)"]


def test_summary_and_success(real_run: dict[str, Any]) -> None:
    result = real_run["result"]
    assert result.ok and result.rc == 0
    assert result.stats == {"localhost": {"ok": 5, "changed": 2, "failed": 0, "unreachable": 0, "skipped": 1}}
    assert runner.render_summary(result.stats, result.hosts) == [
        "host        ok  changed  failed  unreachable  skipped",
        "localhost    5        2       0            0        1",
    ]


def test_rendering_replays_the_captured_events(real_run: dict[str, Any]) -> None:
    lines: list[str] = []
    progress = runner.Progress(lines.append)
    assert all(progress(event) is True for event in real_run["events"])  # True, or the runner drops events
    assert lines == real_run["lines"]
    assert progress.stats == real_run["result"].stats


def test_artifacts_rotated_and_kept(real_run: dict[str, Any]) -> None:
    runs: Path = real_run["runs"]
    kept = sorted(p.name for p in runs.iterdir())
    new = real_run["result"].artifact_dir.name
    assert kept == sorted(["20200101-000003-abcdef", "20200101-000004-abcdef", new, "not-a-run"])
    assert real_run["result"].artifact_dir.parent == runs
    assert (real_run["result"].artifact_dir / "job_events").is_dir()


def test_become_password_never_written(real_run: dict[str, Any]) -> None:
    artifact_dir: Path = real_run["result"].artifact_dir
    command = json.loads((artifact_dir / "command").read_text())
    assert "--ask-become-pass" in command["command"]  # the password was asked for, and answered
    for path in artifact_dir.rglob("*"):
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes(), path


def test_only_allowed_environment_reaches_ansible(real_run: dict[str, Any]) -> None:
    env = json.loads((real_run["result"].artifact_dir / "command").read_text())["env"]
    assert "ALUMET_TEST_UNRELATED" not in env
    assert env["ANSIBLE_HOST_KEY_CHECKING"] == "True"
    assert env["ANSIBLE_PIPELINING"] == "True"
    assert env["PATH"].split(os.pathsep)[0]  # the venv's bin directory first


def test_private_data_dir_removed(real_run: dict[str, Any]) -> None:
    command = json.loads((real_run["result"].artifact_dir / "command").read_text())
    inventory = command["command"][command["command"].index("-i") + 1]
    assert len(inventory) < 48 and not Path(inventory).exists()


def test_broken_playbook_is_one_runner_error(tmp_path: Path) -> None:
    playbook = tmp_path / "broken.yml"
    playbook.write_text("- hosts: all\n  tasks:\n    - name: x\n      no_such_module_here: {}\n")
    run = runner.PlaybookRun(playbook, generated_inventory=build_inventory(resolve_targets([])), hosts=["localhost"])
    with pytest.raises(runner.RunnerError) as caught:
        runner.run_playbook(run, echo=lambda _line: None, runs_dir=tmp_path / "runs")
    assert caught.value.rc not in (0, None)
    assert "\n" not in str(caught.value) and "no_such_module_here" in str(caught.value)


def test_unreachable_host_fails_the_run(tmp_path: Path) -> None:
    playbook = tmp_path / "ping.yml"
    playbook.write_text("- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.ping:\n")
    lines: list[str] = []
    result = runner.run_playbook(
        runner.PlaybookRun(playbook, generated_inventory=build_inventory(resolve_targets(["root@127.0.0.1:1"])),
                           hosts=["127.0.0.1_1"]), echo=lines.append, runs_dir=tmp_path / "runs")
    assert not result.ok
    assert result.stats["127.0.0.1_1"]["unreachable"] == 1
    assert any(line.startswith("[127.0.0.1_1] UNREACHABLE: ") for line in lines)


def test_failure_message_prefers_the_failing_item() -> None:
    res = {"msg": "One or more items failed", "results": [{"failed": False}, {"failed": True, "msg": "E: no pkg"}]}
    assert runner.failure_message(res) == "E: no pkg"
    assert runner.failure_message({"rc": 3, "stderr": "first\nlast line\n"}) == "last line"


def test_a_host_without_events_is_not_a_success(tmp_path: Path) -> None:
    result = runner.RunResult(rc=0, status="successful", stats={}, artifact_dir=tmp_path, hosts=["lab01"])
    assert not result.ok
    assert runner.render_summary({}, ["lab01"])[1].split() == ["lab01", "-", "-", "-", "-", "-"]


DIFF_PLAYBOOK = """
- hosts: all
  gather_facts: false
  tasks:
    - name: Write the config
      ansible.builtin.copy: {dest: "{{ target }}", content: "a = 1\\nb = 3\\n", mode: "0600"}
    - name: Edit a line
      ansible.builtin.lineinfile: {path: "{{ other }}", line: "kernel.perf_event_paranoid = 0"}
"""


@pytest.mark.parametrize("check", [True, False], ids=["check", "real"])
def test_diff_of_changed_files_is_printed_under_the_task(tmp_path: Path, check: bool) -> None:
    playbook = tmp_path / "diff.yml"
    playbook.write_text(DIFF_PLAYBOOK)
    target, other = tmp_path / "config.toml", tmp_path / "local.conf"
    target.write_text("a = 1\nb = 2\n")
    other.write_text("# sysctl\n")
    lines: list[str] = []
    result = runner.run_playbook(
        runner.PlaybookRun(playbook, generated_inventory=build_inventory(resolve_targets([])), hosts=["localhost"],
                           extravars={"target": str(target), "other": str(other)}, check=check, diff=True),
        echo=lines.append, runs_dir=tmp_path / "runs")
    assert result.ok, lines
    at = lines.index(next(line for line in lines if "changed: Write the config" in line))
    assert lines[at + 1:at + 6] == [f"    --- {target}", f"    +++ {target}", "    @@ -1,2 +1,2 @@",
                                    "     a = 1", "    -b = 2"], lines
    assert lines[at + 6] == "    +b = 3"
    assert "    +kernel.perf_event_paranoid = 0" in lines[lines.index(next(x for x in lines if "Edit a line" in x)):]
    assert target.read_text() == ("a = 1\nb = 2\n" if check else "a = 1\nb = 3\n")


def test_no_diff_without_the_flag() -> None:
    lines: list[str] = []
    progress = runner.Progress(lines.append)
    progress({"event": "runner_on_ok", "event_data": {"host": "h", "task": "t", "duration": 0.2, "res": {
        "changed": True, "diff": {"before": "x\n", "after": "y\n"}}}})
    assert lines == ["[h] changed: t (0.2 s)"]
