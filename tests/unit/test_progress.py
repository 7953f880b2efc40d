"""What a person follows during install and uninstall (runner.Progress, terminal.Activity): step headers,
no skipped tasks or argument checks unless -v, the task running now and for how long, and the closing list
of what changed. The events are shaped as ansible-runner 2.4 writes them (job_events of a real
`install --check --diff`); the playbooks and roles are the real ones."""

from __future__ import annotations

import io
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from alumet_setup.playbook import runner, settings
from alumet_setup.terminal import Activity

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "playbooks" / "install.yml"
UNINSTALL = ROOT / "playbooks" / "uninstall.yml"
HOST = "lab01"
_ids: Iterator[int] = iter(range(1, 1_000_000))


def task(name: str, role: str | None, path: str, action: str = "ansible.builtin.command",
         handler: bool = False) -> dict[str, Any]:
    """A playbook_on_task_start event; `path` is relative to the bundled tree (roles/R/tasks/F.yml)."""
    data = {"task": name, "role": role, "task_action": action, "resolved_action": action,
            "task_path": f"/opt/x/_bundled/{path}:{next(_ids)}", "task_uuid": f"uuid-{next(_ids)}"}
    return {"event": "playbook_on_handler_task_start" if handler else "playbook_on_task_start", "event_data": data}


def result(start: dict[str, Any], kind: str = "runner_on_ok", host: str = HOST, **res: Any) -> dict[str, Any]:
    return {"event": kind, "event_data": {**start["event_data"], "host": host, "duration": 0.2, "res": res}}


def run(progress: runner.Progress, name: str, role: str | None, path: str, kind: str = "runner_on_ok",
        action: str = "ansible.builtin.command", handler: bool = False, **res: Any) -> None:
    start = task(name, role, path, action, handler)
    progress(start)
    progress(result(start, kind, **res))


def validation(progress: runner.Progress, role: str, playbook: str = "install") -> None:
    """The argument check Ansible puts at a role's start: runs for every role of the play, tags or not."""
    run(progress, f"Validating arguments against arg spec 'main' - {role}", role, f"playbooks/{playbook}.yml",
        action="ansible.builtin.validate_argument_spec")


def install_events(progress: runner.Progress) -> None:
    """A play of playbooks/install.yml as ansible-playbook runs it: pre_tasks, steps, handlers, post_tasks."""
    run(progress, "Lock | Take the host for this run", "alumet_common", "roles/alumet_common/tasks/lock.yml")
    run(progress, "Gather facts", None, "playbooks/install.yml", action="ansible.builtin.setup")
    run(progress, "Plan | Read the version of the C library", "alumet_agent", "roles/alumet_agent/tasks/plan.yml")
    run(progress, "Begin | Read the earlier record", "install_record", "roles/install_record/tasks/begin.yml")
    validation(progress, "prereqs")
    run(progress, "Check the host is supported", "prereqs", "roles/prereqs/tasks/main.yml")
    run(progress, "Preflight | Assert a supported distribution", "alumet_common",
        "roles/alumet_common/tasks/supported.yml")
    run(progress, "Install the build prerequisites", "prereqs", "roles/prereqs/tasks/main.yml", changed=True)
    validation(progress, "rustup")
    run(progress, "Check the host and the parameters", "rustup", "roles/rustup/tasks/main.yml",
        kind="runner_on_skipped")
    validation(progress, "alumet_agent")
    # The agent step includes plan.yml again: still the agent step, not the play's own plan.
    run(progress, "Plan | Read the version of the C library", "alumet_agent", "roles/alumet_agent/tasks/plan.yml")
    run(progress, "Track | Look for the paths", "alumet_common", "roles/alumet_common/tasks/track.yml")
    run(progress, "Build | Start cargo install", "alumet_agent", "roles/alumet_agent/tasks/build.yml", changed=True)
    for role in ("alumet_group", "alumet_sysctl", "hidepid"):
        validation(progress, role)
    run(progress, "Set the /proc line of the fstab", "hidepid", "roles/hidepid/tasks/main.yml", changed=True)
    for role in ("powercap", "alumet_config", "capabilities", "alumet_service"):
        validation(progress, role)
    run(progress, "Reload the udev rules", "powercap", "roles/powercap/handlers/main.yml", handler=True,
        changed=True)
    run(progress, "Record the choices applied", "install_record", "roles/install_record/tasks/main.yml",
        changed=True)


def test_a_header_with_its_position_when_the_play_enters_a_step() -> None:
    lines: list[str] = []
    progress = runner.Progress(lines.append, steps=settings.play_steps(INSTALL))
    install_events(progress)
    headers = [line for line in lines if not line.startswith(f"[{HOST}]")]
    # From the playbook's own tags: 9 steps (the service is opt-in); rustup skipped everywhere shows nothing.
    assert headers == ["[1/9] prereqs", "[3/9] agent", "[6/9] hidepid", "[7/9] powercap", "[after the steps]"]
    # The play's own tasks before the first step (its plan of alumet_agent included) stand under no header.
    assert lines.index("[1/9] prereqs") == 4
    at = lines.index("[3/9] agent")
    assert lines[at + 1:at + 4] == [f"[{HOST}] ok: Plan | Read the version of the C library (0.2 s)",
                                    f"[{HOST}] ok: Track | Look for the paths (0.2 s)",
                                    f"[{HOST}] changed: Build | Start cargo install (0.2 s)"]
    assert lines[lines.index("[7/9] powercap") + 1] == f"[{HOST}] changed: Reload the udev rules (0.2 s)"


def test_positions_follow_the_run_and_the_playbook_order() -> None:
    only = settings.play_steps(INSTALL, only=["sysctl", "agent"])
    assert only.steps == ("agent", "sysctl")
    assert settings.play_steps(INSTALL, skip=["rustup"], extravars={"alumet_service_enabled": True}).steps == (
        "prereqs", "agent", "group", "sysctl", "hidepid", "powercap", "config", "capabilities", "service")
    undo = settings.play_steps(UNINSTALL)  # reverse order, the service's undo always runs
    assert undo.steps[0] == "service" and undo.steps[-1] == "prereqs" and len(undo.steps) == len(settings.STEPS)
    lines: list[str] = []
    progress = runner.Progress(lines.append, steps=undo)
    run(progress, "Lock | Take the host for this run", "alumet_common", "roles/alumet_common/tasks/lock.yml")
    run(progress, "Uninstall | Forget the steps", "install_record", "roles/install_record/tasks/uninstall.yml")
    run(progress, "Uninstall | Stop alumet.service", "alumet_service", "roles/alumet_service/tasks/uninstall.yml")
    run(progress, "Uninstall | Remove the packages", "prereqs", "roles/prereqs/tasks/uninstall.yml")
    assert [line for line in lines if not line.startswith("[lab01]")] == ["[1/10] service", "[10/10] prereqs"]


def test_skipped_tasks_and_argument_checks_only_with_verbose() -> None:
    quiet: list[str] = []
    install_events(runner.Progress(quiet.append, steps=settings.play_steps(INSTALL)))
    assert not [line for line in quiet if "skipped:" in line or "Validating arguments" in line], quiet
    verbose: list[str] = []
    install_events(runner.Progress(verbose.append, verbosity=1, steps=settings.play_steps(INSTALL)))
    assert f"[{HOST}] skipped: Check the host and the parameters" in verbose
    assert sum("Validating arguments against arg spec" in line for line in verbose) == 10
    assert "[2/9] rustup" in verbose


def test_the_closing_list_names_what_changed_per_host_by_step() -> None:
    progress = runner.Progress(lambda _line: None, steps=settings.play_steps(INSTALL))
    install_events(progress)
    start = task("Report what check mode would install", "prereqs", "roles/prereqs/tasks/main.yml",
                 action="ansible.builtin.debug")
    progress(start)
    progress(result(start, host="lab02", changed=True, msg="prereqs: would install with apt: gcc make"))
    lines = runner.render_changes(progress.changes, ["lab01", "lab02", "lab03"], check=True)
    assert lines == [
        "Would change on lab01:",
        "  prereqs:", "    Install the build prerequisites",
        "  agent:", "    Build | Start cargo install",
        "  hidepid:", "    Set the /proc line of the fstab",
        "  powercap:", "    Reload the udev rules",
        "  after the steps:", "    Record the choices applied",
        "Would change on lab02:",
        "  prereqs:", "    prereqs: would install with apt: gcc make",
        "Would change on lab03: nothing",
    ]
    assert runner.render_changes({"h": [("sysctl", "Persist the value")]})[0] == "Changed on h:"


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_status_line_shows_the_running_task_and_its_time_on_a_terminal() -> None:
    screen, clock = Tty(), Clock()
    activity = Activity(lambda line: screen.write(line + "\n"), screen, clock=clock)
    assert activity.tty
    progress = runner.Progress(lambda _line: None, steps=settings.play_steps(INSTALL), activity=activity)
    run(progress, "Check the host is supported", "prereqs", "roles/prereqs/tasks/main.yml")
    progress(task("Install the build prerequisites", "prereqs", "roles/prereqs/tasks/main.yml"))  # apt: no events
    activity.tick()
    clock.now += 2
    activity.tick()
    assert "\r" not in screen.getvalue()  # quiet for under quiet_after: no status line yet
    clock.now += 123
    activity.tick()
    assert screen.getvalue().endswith("\r\x1b[K… [1/9] prereqs Install the build prerequisites (2m 05s)")
    activity.echo("[lab01] changed: Install the build prerequisites (125 s)")
    # The status line is erased before a line is printed: nothing of it is left in front of the line.
    assert screen.getvalue().endswith("(2m 05s)\r\x1b[K[lab01] changed: Install the build prerequisites (125 s)\n")
    clock.now += 5
    activity.tick()
    activity.stop()
    assert screen.getvalue().endswith("\r\x1b[K")  # erased at the end, the cursor at the start of a line


def test_in_a_pipe_a_long_task_prints_a_plain_line_a_minute_at_most() -> None:
    lines: list[str] = []
    clock = Clock()
    activity = Activity(lines.append, io.StringIO(), clock=clock)
    assert not activity.tty
    progress = runner.Progress(lines.append, steps=settings.play_steps(INSTALL), activity=activity)
    run(progress, "Create the install prefix", "alumet_agent", "roles/alumet_agent/tasks/main.yml")
    start = task("Build | Wait for cargo to finish", "alumet_agent", "roles/alumet_agent/tasks/build.yml",
                 action="ansible.builtin.async_status")
    progress(start)
    progress({"event": "runner_on_start", "created": "2026-01-01T00:00:00", "event_data": {
        **start["event_data"], "host": HOST}})
    before = len(lines)
    for second in range(10, 301, 10):  # a five-minute build polled every 10 s: 30 retries
        clock.now += 10
        progress({"event": "runner_retry", "created": f"2026-01-01T00:{second // 60:02d}:{second % 60:02d}",
                  "event_data": {**start["event_data"], "host": HOST, "res": {"attempts": second // 10}}})
        activity.tick()
    shown = lines[before:]
    assert 3 <= len(shown) <= 5, shown
    assert all(re.fullmatch(r"\[lab01\] … Build \| Wait for cargo to finish: still running \(\d+ s\)", line)
               for line in shown), shown
    assert "\x1b" not in "".join(lines)


def test_the_ticker_stops_cleanly_and_leaves_no_status_line() -> None:
    screen = Tty()
    activity = Activity(lambda line: screen.write(line + "\n"), screen, refresh=0.01, quiet_after=0)
    activity.start()
    activity.working("Build | Wait for cargo to finish")
    time.sleep(0.1)
    activity.echo("a line")
    activity.stop()
    activity.stop()  # twice: after Ctrl-C the run's finally stops it again
    assert not [t for t in threading.enumerate() if t.name == "alumet-setup-activity"]
    text = screen.getvalue()
    assert "… Build | Wait for cargo to finish (0s)" in text
    assert "\r\x1b[Ka line\n" in text  # the status line erased first
    tail = text.rsplit("\n", 1)[1]
    assert tail == "" or tail.endswith("\r\x1b[K")  # a status line drawn after it is erased by stop()


def _tasks(path: Path) -> Iterator[dict[str, Any]]:
    for item in yaml.safe_load(path.read_text(encoding="utf-8")) or []:
        if isinstance(item, dict):
            yield item
            for section in ("block", "rescue", "always"):
                yield from item.get(section) or []


TASK_FILES = sorted([*(ROOT / "roles").glob("*/tasks/*.yml"), *(ROOT / "roles").glob("*/handlers/*.yml")])
REPORTING = ("debug", "assert", "fail")


def test_reporting_tasks_report_a_change_only_as_a_check_mode_preview() -> None:
    """A debug/assert/fail task changes nothing: it may say `changed` only as check mode's stand-in for a task
    that check mode skips and that changes the host (its "would ..." preview)."""
    wrong = []
    for path in TASK_FILES:
        for item in _tasks(path):
            action = next((k for k in item if k.split(".")[-1] in REPORTING), None)
            if action is None or item.get("changed_when") in (None, False, "false"):
                continue
            when = " ".join(map(str, item.get("when") if isinstance(item.get("when"), list) else [item.get("when")]))
            if "ansible_check_mode" not in when:
                wrong.append(f"{path.relative_to(ROOT)}: {item.get('name')}")
    assert not wrong, wrong


def test_a_download_into_a_removed_directory_is_no_change_in_either_mode() -> None:
    """rustup-init goes to a private directory removed at the end of its block: the host keeps nothing of the
    download, so neither it nor a check-mode preview of it counts as a change (running rustup-init does)."""
    tasks = {str(item.get("name")): item for item in _tasks(ROOT / "roles" / "rustup" / "tasks" / "install.yml")}
    download = tasks["Install | Download rustup-init and verify its published sha256"]
    assert download.get("changed_when") is False
    previews = [name for name, item in tasks.items()
                if "ansible.builtin.debug" in item and "would download" in str(item["ansible.builtin.debug"])]
    assert previews == ["Install | Report what check mode would install"]  # one change, one preview


def test_task_names_show_no_example_value_as_if_it_were_the_hosts() -> None:
    """A task's name is printed once for every host: a version in it (`glibc 2.39 ranks 2039`) reads as the
    host's own."""
    names = [str(item.get("name")) for path in TASK_FILES for item in _tasks(path)]
    assert not [n for n in names if re.search(r"\b(glibc|libc|rustc|cargo) \d+\.\d+", n)], names


def test_by_default_no_skipped_line_no_argument_check_and_no_poll_flood() -> None:
    """What every caller gets (a Progress on a plain echo): the lines a person reads, not one per poll."""
    lines: list[str] = []
    progress = runner.Progress(lines.append)
    validation(progress, "prereqs")
    run(progress, "Never runs", None, "playbooks/install.yml", kind="runner_on_skipped")
    start = task("Build | Wait for cargo to finish", "alumet_agent", "roles/alumet_agent/tasks/build.yml",
                 action="ansible.builtin.async_status")
    progress(start)
    for attempt in range(1, 31):
        progress({"event": "runner_retry", "event_data": {**start["event_data"], "host": HOST,
                                                          "res": {"attempts": attempt}}})
    assert lines == [], lines
