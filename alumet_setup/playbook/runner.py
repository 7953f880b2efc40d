"""Run a bundled playbook with ansible-runner and render its events ourselves.

Known ansible-runner traps handled here (see docs/architecture.md):
* the event handler returns True, or events and stats are dropped;
* quiet=True, since the runner forces its own stdout callback: progress is rendered from events;
* artifacts are kept under a state directory and rotated by claim_run, not by the runner's rotate_artifacts
  (which removed whatever the directory held: a stray file failed every later run, two runs at once
  failed each other, a symlinked directory lost its target's content);
* the runner copies the whole environment into the run and into artifacts/command: only ANSIBLE_*
  and ENV_ALLOW reach it, and no variable whose name says it holds a secret (SECRET_NAME; Ansible's
  become password variables are answered at the prompt instead); every secret value is redacted from
  the run's files at its end;
* `passwords=` given to ansible_runner.run() is dumped to env/passwords on disk: RunnerConfig is
  built directly so the become password stays in memory, answered through pexpect;
* ssh_key= is written to disk: never used (the ssh agent or ansible_ssh_private_key_file are);
* a short private data dir (/tmp/as-XXXX): long paths break ssh ControlPath sockets;
* the runner turns host key checking off unless told otherwise: it stays on;
* ssh ControlMaster sockets live in the private data dir, one set per run, and the masters are told to
  exit at its end: Ansible's default ~/.ansible/cp keeps a master for 60 s, which let the next run in
  without a handshake, so a host whose key had changed or been removed from known_hosts was still accepted;
* nothing of a run stays behind, whatever ends it: Ctrl-C and SIGTERM cancel ansible-playbook (killed with its
  process group and waited for, so no child re-creates the private directory), then playbooks/cleanup.yml runs
  (the run's remote temporary files, its modules still running, the host's lock), then the private directory
  goes, and exits.Interrupted says which signal (exit 128 + its number).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shlex
import shutil
import signal
import socket
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from ..terminal import Activity
from ..textsafe import visible

if TYPE_CHECKING:
    from .settings import PlaySteps

KEEP_RUNS = 10
STATS_COLUMNS = ("ok", "changed", "failed", "unreachable", "skipped")
_STATS_KEYS = {"ok": "ok", "changed": "changed", "failed": "failures", "unreachable": "dark", "skipped": "skipped"}
# Environment variables passed to ansible-playbook besides ANSIBLE_* (what ssh, locale and tmp need).
ENV_ALLOW = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TERM",
             "TZ", "TMPDIR", "SSH_AUTH_SOCK", "SSH_AGENT_PID", "XDG_RUNTIME_DIR", "VIRTUAL_ENV")
BECOME_PROMPT = r"^BECOME password[^:\n]*:\s*$"
# Environment variables that hold a secret, by name: never handed to ansible-playbook (ansible-runner
# would write them into the run's `command` file). ANSIBLE_ASK_PASS and the like are flags, not secrets.
SECRET_NAME = re.compile(r"(?:_PASS|_PASSWD|_PASSWORD|_PASSPHRASE|_TOKEN)$|SECRET", re.IGNORECASE)
_ASK_FLAG = re.compile(r"(?:^|_)ASK_(?:[A-Z]+_)?PASS$", re.IGNORECASE)
# Ansible's become password, under the names of its become plugins: the user's choice, honoured through
# the in-memory prompt answer (as -K is) rather than the environment.
BECOME_PASSWORD_VARS = ("ANSIBLE_BECOME_PASS", "ANSIBLE_SUDO_PASS", "ANSIBLE_SU_PASS", "ANSIBLE_RUNAS_PASS")
REDACTED = "<redacted>"
MIN_SECRET = 4
# Where the hosts keep a run's Ansible temporary files and async job status: REMOTE_DIR/<run id>, in the login
# user's and the become user's home (never a guessable name in a world-writable directory), removed with
# REMOTE_DIR itself by playbooks/cleanup.yml after every run (roles/alumet_common: alumet_common_remote_dir).
REMOTE_DIR = "~/.alumet-setup"
# How long the cleanup may take (seconds): it is a few raw commands per host, and a host that stopped
# answering must not hold the user's terminal.
CLEANUP_TIMEOUT = 120


@contextlib.contextmanager
def signals_caught() -> Iterator[list[int]]:
    """SIGINT and SIGTERM recorded (in the list yielded) instead of raised, while ansible-playbook runs: the
    runner's cancel callback sees them and stops it properly. Outside the main thread: nothing caught."""
    caught: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return
    previous = {sig: signal.signal(sig, lambda signum, _frame: caught.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield caught
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class RunnerError(Exception):
    """ansible-playbook could not run the playbook (bad playbook, missing program, crash). One line."""

    def __init__(self, message: str, rc: int | None = None):
        super().__init__(message)
        self.rc = rc

    def __str__(self) -> str:
        detail = super().__str__()
        return f"{detail} (rc {self.rc})" if self.rc is not None else detail


@dataclass
class RunResult:
    rc: int
    status: str
    stats: dict[str, dict[str, int]]  # host -> column -> count (STATS_COLUMNS)
    artifact_dir: Path
    hosts: list[str] = field(default_factory=list)  # hosts expected to run (missing ones failed)
    messages: list[str] = field(default_factory=list)  # failure messages, for hints
    unreachable: dict[str, str] = field(default_factory=dict)  # host -> why it could not be reached
    escalation: dict[str, str] = field(default_factory=dict)  # host -> why it could not become root
    changes: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # host -> (step, task) that changed

    def host_ok(self, host: str) -> bool:
        row = self.stats.get(host)
        return row is not None and row["failed"] == 0 and row["unreachable"] == 0

    @property
    def ok(self) -> bool:
        hosts = self.hosts or list(self.stats)
        return self.rc == 0 and bool(hosts) and all(self.host_ok(h) for h in hosts)


class StateDirError(RunnerError):
    """The directory of run logs cannot be used (install refuses it before anything runs). One line."""


def state_dir() -> Path:
    """$XDG_STATE_HOME/alumet-setup (default ~/.local/state/alumet-setup). A relative XDG_STATE_HOME is
    ignored, as the XDG base directory specification says."""
    base = os.environ.get("XDG_STATE_HOME") or ""
    if not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "alumet-setup"


def runs_directory(runs: Path | None = None) -> Path:
    """The directory of run logs (default state_dir()/runs), made (0700) when missing. StateDirError when
    it cannot be made or is not a real directory: a symlink is refused, since rotation removes runs in it."""
    runs = runs or state_dir() / "runs"
    try:
        runs.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(FileExistsError):
            runs.mkdir(mode=0o700)
        st = os.lstat(runs)
    except OSError as exc:
        where = f" (XDG_STATE_HOME={os.environ['XDG_STATE_HOME']})" if os.environ.get("XDG_STATE_HOME") else ""
        raise StateDirError(f"cannot make the run log directory {runs}{where}: {exc.strerror or exc}") from None
    if stat.S_ISLNK(st.st_mode):
        raise StateDirError(f"the run log directory {runs} is a symbolic link: not used (old runs are removed "
                            "from it; make it a real directory)")
    if not stat.S_ISDIR(st.st_mode):
        from ..hostside.safe_io import kind

        raise StateDirError(f"the run log directory {runs} is {kind(st.st_mode)}, not a directory")
    return runs


# A run's directory: the local time it started, to the microsecond (older versions: a random suffix).
RUN_NAME = re.compile(r"[0-9]{8}-[0-9]{6}-[0-9a-f]{6}")


@contextlib.contextmanager
def claim_run(runs: Path, keep: int = KEEP_RUNS) -> Iterator[Path]:
    """A new run directory in `runs`, held for as long as the run lasts (a shared flock, which rotation
    respects), after removing the runs beyond the `keep` newest (rotate_runs)."""
    final, fd = _new_run(runs)
    try:
        rotate_runs(runs, max(keep, 1))
        yield final
    finally:
        os.close(fd)


def _new_run(runs: Path) -> tuple[Path, int]:
    """Make a run directory named after the time and hold it (shared flock). Between its mkdir and the lock a
    rotation may take it (empty and unheld, it can look like an old run when the clock went back, or beside
    many runs in progress): a rotation removes only what it holds exclusively, so once ours is held, the
    directory still at that name being ours means nobody removed it; otherwise take a new name."""
    for _attempt in range(10_000):  # each lost race costs microseconds; an endless one is a bug, said as such
        now = time.time()
        final = runs / f"{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}-{int(now % 1 * 1e6):06d}"
        try:
            final.mkdir(mode=0o700)
        except FileExistsError:
            continue  # two runs in one microsecond get two names
        except OSError as exc:
            raise StateDirError(f"cannot make a run directory in {runs}: {exc.strerror or exc}") from None
        try:
            fd = os.open(final, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue  # a rotation took it already
        with contextlib.suppress(OSError):  # no flock on this file system: runs in progress are not skipped
            fcntl.flock(fd, fcntl.LOCK_SH)  # waits while a rotation holds it, then sees whether it is still there
        held = os.fstat(fd)
        try:
            there = os.lstat(final)
        except FileNotFoundError:
            there = None
        if there is not None and (held.st_dev, held.st_ino) == (there.st_dev, there.st_ino):
            return final, fd
        os.close(fd)
    raise StateDirError(f"cannot make a run directory in {runs}: each new one was removed at once")


def rotate_runs(runs: Path, keep: int) -> None:
    """Remove all but the `keep` newest runs (by the time in their names). Anything not named like a run
    (RUN_NAME), not a real directory, or held by a run in progress is left alone; a run that another
    process removes meanwhile is no error."""
    try:
        with os.scandir(runs) as entries:
            names = sorted(e.name for e in entries if RUN_NAME.fullmatch(e.name) and e.is_dir(follow_symlinks=False))
    except OSError:
        return
    for name in names[: max(0, len(names) - keep)]:
        _remove_run(runs / name)


def _remove_run(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return  # removed by another run meanwhile, or no longer a directory
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a run in progress (or another rotation) holds it
        held, there = os.fstat(fd), os.lstat(path)
        if (held.st_dev, held.st_ino) == (there.st_dev, there.st_ino):
            shutil.rmtree(path, ignore_errors=True)
    except OSError:
        return
    finally:
        os.close(fd)


def _one_line(text: Any, limit: int = 300) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _seconds(start: str | None, end: str | None) -> float | None:
    try:
        return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


# Generic texts Ansible puts in msg when the program's own output says more.
_GENERIC_MSG = ("non-zero return code", "MODULE FAILURE", "One or more items failed")
# A line that names a failure (rustup "error:", cargo "error[E0432]:", apt "E:", "fatal:", "Caused by:").
_CAUSE = re.compile(r"^\s*(error(\[\w+\])?:|e:|fatal:|failed|caused by:|could not)", re.IGNORECASE)
MESSAGE_LINES = 30


def _lines(text: Any) -> list[str]:
    """A message as lines: literal backslash-n (JSON-escaped output) rendered, blank lines dropped."""
    value = str(text)
    if "\n" not in value and "\\n" in value:
        value = value.replace("\\n", "\n")
    return [ln.rstrip() for ln in _strip_ansi(value).strip().splitlines() if ln.strip()]


def _cause_first(lines: list[str], last_wins: bool = False) -> list[str]:
    """Lines naming a failure before the others (warnings, progress), each group in its order; when
    none names one and `last_wins`, the last line (where programs end with their error) comes first."""
    causes = [ln for ln in lines if _CAUSE.match(ln)]
    if not causes and last_wins and lines:
        return [lines[-1], *lines[:-1]]
    return causes + [ln for ln in lines if not _CAUSE.match(ln)]


def failure_text(res: Mapping[str, Any]) -> list[str]:
    """The whole explanation of a failed or unreachable result, real cause first (at most MESSAGE_LINES)."""
    if not isinstance(res, Mapping):
        return _lines(res)[:MESSAGE_LINES] or ["failed"]
    for item in res.get("results") or ():  # loops: the first failing item says more than the summary
        if isinstance(item, Mapping) and item.get("failed"):
            return failure_text(item)
    msg = _lines(res.get("msg") or "")
    output: list[str] = []
    for key in ("stderr", "module_stderr", "stdout", "module_stdout"):
        output = _lines(res.get(key) or "")
        if output:
            break
    if msg and (not output or not msg[0].startswith(_GENERIC_MSG)):
        # A role's own message: its headline stays first, the program output quoted in it is reordered.
        lines = [msg[0], *_cause_first(msg[1:])]
    elif output:
        lines = _cause_first(output, last_wins=True)
        if msg and "rc" in res:
            lines.append(f"(exit code {res['rc']})")
    elif res.get("reason"):
        lines = _lines(res["reason"])
    elif "rc" in res:
        lines = [f"exit code {res['rc']}"]
    else:
        lines = ["failed"]
    if len(lines) > MESSAGE_LINES:
        lines = [*lines[: MESSAGE_LINES - 1], f"… ({len(lines) - MESSAGE_LINES + 1} more lines in the run log)"]
    return lines


# sudo missing or refusing the login user: wherever Ansible puts it (msg, module_stderr, failed_modules of
# gather_facts), no task can run, and Ansible's own words ("The following modules failed to execute") hide why.
_SUDO_MISSING = re.compile(r"\bsudo: (?:command )?not found|\bsudo: No such file or directory")
_SUDO_REFUSED = re.compile(r"is not in the sudoers file|is not allowed to (?:run sudo|execute)|may not run sudo")


def _texts(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _texts(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _texts(item)


def escalation_failure(res: Any, host: str, root_login: str = "log in as root") -> str | None:
    """One line when a result failed because sudo is missing or refuses the login user, else None.
    `root_login`: how this host is reached as root instead (root_logins())."""
    text = "\n".join(_texts(res))
    if _SUDO_MISSING.search(text):
        why = "sudo is not installed there"
    elif _SUDO_REFUSED.search(text):
        why = "sudo refuses the login user"
    else:
        return None
    return (f"escalation to root is impossible on {host}: {why}; {root_login} or install sudo and allow the login "
            "user to use it")


def root_logins(generated_inventory: Mapping[str, Any] | None) -> dict[str, str]:
    """host -> how to reach it as root, for the hosts of the generated (ad-hoc) inventory."""
    hosts = ((generated_inventory or {}).get("all") or {}).get("hosts") or {}
    logins = {}
    for name, host_vars in hosts.items():
        if host_vars.get("ansible_connection") == "local":
            logins[name] = "run alumet-setup as root"
        else:
            port = host_vars.get("ansible_port")
            address = f"{host_vars.get('ansible_host', name)}{f':{port}' if port else ''}"
            logins[name] = f"log in as root (--host root@{address})"
    return logins


def failure_message(res: Mapping[str, Any]) -> str:
    """The most useful single line of a failed or unreachable result (the real cause)."""
    return _one_line(failure_text(res)[0])


def diff_lines(res: Mapping[str, Any]) -> list[str]:
    """A result's --diff as unified diff lines (file modules: before/after; others: prepared text)."""
    import difflib

    found = res.get("diff") if isinstance(res, Mapping) else None
    lines: list[str] = []
    for item in found if isinstance(found, list) else [found] if found else []:
        if not isinstance(item, Mapping):
            continue
        if item.get("prepared"):
            lines += _lines(item["prepared"])
            continue
        before, after = item.get("before"), item.get("after")
        if not isinstance(before, str) or not isinstance(after, str) or before == after:
            continue  # state-only diffs (a dict of file attributes) say nothing a reader needs
        lines += [ln.rstrip("\n") for ln in difflib.unified_diff(
            before.splitlines(keepends=True), after.splitlines(keepends=True),
            fromfile=str(item.get("before_header") or "before"), tofile=str(item.get("after_header") or "after"))]
    return lines


def _took(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return ""
    return f" ({seconds:.1f} s)" if seconds < 10 else f" ({seconds:.0f} s)"


# Where the play's own tasks (lock, facts, build plan, install record) stand among its steps.
BEFORE_STEPS, AFTER_STEPS = "before the steps", "after the steps"


def _task_file(task_path: Any) -> tuple[str, str]:
    """(role, tasks file name without .yml) of a task_path such as .../roles/NAME/tasks/FILE.yml:LINE."""
    path = Path(str(task_path or "").rsplit(":", 1)[0])
    return path.parent.parent.name, path.stem


class Progress:
    """Turns ansible-runner events into what a person follows: a header when the play enters a step
    (`[3/9] agent`), one line per task result (state, name, time), the --diff of changed files and the whole
    failure message under it, the task running now and for how long (terminal.Activity), and, per host, the
    tasks that changed something (`changes`). Skipped tasks and the roles' argument checks show only with -v.
    Usable as event_handler directly."""

    def __init__(self, echo: Callable[[str], None], verbosity: int = 0, diff: bool = False,
                 root_logins: Mapping[str, str] | None = None, steps: PlaySteps | None = None,
                 activity: Activity | None = None):
        # Every line quotes the hosts (task names, messages, program output, diffs of their files): each is
        # one line, its control characters escaped (textsafe), whatever a host or a program wrote.
        self.activity = activity if activity is not None else Activity(echo, tty=False)
        self.echo: Callable[[str], None] = lambda line: self.activity.echo(visible(line))
        self.root_logins = dict(root_logins or {})  # host -> how to reach it as root (escalation failures)
        self.verbosity = verbosity
        self.diff = diff
        self.steps = steps
        self.stats: dict[str, dict[str, int]] = {}
        self.errors: list[str] = []  # ERROR lines ansible-playbook printed outside any task
        self.messages: list[str] = []  # failure messages, for hints
        self.unreachable: dict[str, str] = {}  # host -> one line
        self.escalation: dict[str, str] = {}  # host -> why it could not become root (one line)
        self.changes: dict[str, list[tuple[str, str]]] = {}  # host -> (step, task) of the tasks that changed
        self._started: dict[tuple[str, str], str] = {}
        self._task_step: dict[str, str | None] = {}  # task uuid -> its step (None: the play's own task)
        self._current: str | None = None  # the step the play is in
        self._shown: str | None = None  # the step whose header was printed last
        self._entered = False  # the play has entered a step

    def __call__(self, event: Mapping[str, Any]) -> bool:
        try:
            self.handle(event)
        except Exception as exc:  # a rendering bug must not lose the run: say it, keep going
            self.echo(f"(progress display error: {exc!r})")
        return True  # anything else makes ansible-runner drop the event and the final stats

    def header(self, step: str | None) -> str:
        """`[3/9] agent`: the step's place among the run's steps."""
        if step is None:
            return f"[{AFTER_STEPS}]"
        order = self.steps.steps if self.steps else ()
        return f"[{order.index(step) + 1}/{len(order)}] {step}" if step in order else f"[{step}]"

    def _step_of(self, data: Mapping[str, Any]) -> str | None:
        """The step a task belongs to; a role's entry (argument check) leaves the play where it is."""
        if self.steps is None:
            return None
        role = data.get("role")
        file_role, tasks = _task_file(data.get("task_path"))
        step = self.steps.role_step.get(role) if role else None
        if not role:
            self._current = None  # a task of the play itself (Gather facts)
        elif file_role == role and (role, tasks) in self.steps.play_own and (step is None or not self._entered):
            # A file the play imports for itself (the lock, the record; the build plan before the steps, which
            # the agent step includes again).
            self._current = None
        elif step is not None:
            self._current = step  # a step's role; a shared one (alumet_common) runs inside the current step
            self._entered = True
        return self._current

    def _line(self, step: str | None, line: str) -> None:
        if step != self._shown and (step is not None or self._shown is not None):
            self.echo(self.header(step))
            self._shown = step
        self.echo(line)

    def handle(self, event: Mapping[str, Any]) -> None:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        host = data.get("host", "")
        task = data.get("task") or data.get("name") or ""
        res = data.get("res") or {}
        uuid_ = str(data.get("task_uuid", ""))
        key = (host, uuid_)
        prefix = f"[{host}]"
        # The argument checks Ansible puts at every role's start run even for roles whose step is not in the run.
        checking = str(data.get("task_action", "")).endswith("validate_argument_spec")
        hidden = checking and not self.verbosity
        if kind in ("playbook_on_task_start", "playbook_on_handler_task_start"):
            step = self._task_step[uuid_] = self._current if checking else self._step_of(data)
            self.activity.working(visible(f"{self.header(step)} {task}" if step or self._shown else task))
            return
        step = self._task_step.get(uuid_, self._current)
        if kind == "runner_on_start":
            self._started[key] = event.get("created", "")
            if self.verbosity:
                self._line(step, f"{prefix} TASK {task}")
        elif kind in ("runner_on_ok", "runner_on_failed", "runner_on_skipped", "runner_on_unreachable"):
            suffix = _took(data.get("duration"))
            if kind == "runner_on_skipped":
                if self.verbosity:
                    self._line(step, f"{prefix} skipped: {task}")
            elif kind == "runner_on_ok":
                changed = isinstance(res, Mapping) and bool(res.get("changed"))
                if hidden and not changed:
                    return
                where = step or ("tasks" if self.steps is None else AFTER_STEPS if self._entered else BEFORE_STEPS)
                preview = str(data.get("task_action", "")).endswith("debug") and _lines(res.get("msg") or "")
                # A check-mode preview says what would change ("would install with apt: ..."): that, not its name.
                what = _one_line(preview[0]) if changed and preview else task
                if changed and (where, what) not in self.changes.setdefault(host, []):
                    self.changes[host].append((where, what))
                self._line(step, f"{prefix} {'changed' if changed else 'ok'}: {task}{suffix}")
                if changed and str(data.get("task_action", "")).endswith("debug") and res.get("msg"):
                    for line in _lines(res["msg"]):  # a dry run's "would ..." preview
                        self.echo(f"    {line}")
                if self.diff and changed:
                    for line in diff_lines(res):
                        self.echo(f"    {line}")
            else:
                lines = failure_text(res)
                message = _one_line(lines[0])
                escalation = None if data.get("ignore_errors") else escalation_failure(
                    res, host, self.root_logins.get(host, "log in as root (ansible_user=root in the inventory)"))
                if escalation is not None:
                    message, lines = escalation, [escalation]
                    self.escalation.setdefault(host, escalation)
                if kind == "runner_on_unreachable":
                    from ..targets.ssh import ssh_failure

                    # Ansible's text carries ssh's multi-line banner (host key warnings): one line instead.
                    raw = res.get("msg", "") if isinstance(res, Mapping) else str(res)
                    message = ssh_failure(str(raw)) or message
                    lines = [message]
                    self.unreachable.setdefault(host, message)
                self.messages.append(message)
                label = "UNREACHABLE" if kind == "runner_on_unreachable" else "FAILED"
                ignored = " (ignored)" if data.get("ignore_errors") else ""
                self._line(step, f"{prefix} {label}{ignored}: {task}{suffix}: {message}")
                for line in lines[1:]:
                    self.echo(f"    {line}")
        elif kind in ("runner_retry", "runner_on_async_poll"):
            since = self._started.get(key)
            waited = _seconds(since, event.get("created"))
            clock = f" ({waited:.0f} s)" if waited is not None else ""
            # A poll every few seconds: the status line on a terminal, a line a minute at most elsewhere.
            if data.get("task_action", "").endswith("async_status") or kind == "runner_on_async_poll":
                self.activity.still(visible(f"{prefix} … {task}: still running{clock}"))
            else:
                attempt = res.get("attempts", "?") if isinstance(res, Mapping) else "?"
                self.activity.still(visible(f"{prefix} … {task}: retrying (attempt {attempt}){clock}"))
        elif kind == "playbook_on_no_hosts_matched":
            self.errors.append("no host matched the play")
        elif kind == "playbook_on_stats":
            self.activity.working(None)
            self.stats = stats_from_event(data)
        elif kind in ("verbose", "error", "warning"):
            text = _strip_ansi(event.get("stdout", ""))
            for line in text.splitlines():
                if re.match(r"\s*(\[ERROR\]|ERROR!)", line):
                    self.errors.append(_one_line(re.sub(r"^\s*(\[ERROR\]:?|ERROR!)\s*", "", line)))
            if self.verbosity and text.strip():
                for line in text.rstrip().replace("\r\n", "\n").split("\n"):  # a pty's line ends
                    self.echo(line)


def render_changes(changes: Mapping[str, Sequence[tuple[str, str]]], hosts: Iterable[str] = (),
                   check: bool = False) -> list[str]:
    """Per host, the tasks that reported a change (in check mode: would change), grouped by step in the
    order the play ran them."""
    lines: list[str] = []
    verb = "Would change" if check else "Changed"
    for host in dict.fromkeys([*hosts, *changes]):
        found = changes.get(host) or []
        if not found:
            lines.append(visible(f"{verb} on {host}: nothing"))
            continue
        lines.append(visible(f"{verb} on {host}:"))
        groups: dict[str, list[str]] = {}
        for step, task in found:
            groups.setdefault(step, []).append(task)
        for step, tasks in groups.items():
            lines.append(visible(f"  {step}:"))
            lines += [visible(f"    {task}") for task in tasks]
    return lines


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def stats_from_event(data: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """playbook_on_stats event_data -> host -> {ok, changed, failed, unreachable, skipped}."""
    hosts: set[str] = set()
    for source in _STATS_KEYS.values():
        hosts.update((data.get(source) or {}).keys())
    hosts.update((data.get("processed") or {}).keys())
    return {host: {col: int((data.get(src) or {}).get(host, 0)) for col, src in _STATS_KEYS.items()}
            for host in sorted(hosts)}


def render_summary(stats: Mapping[str, Mapping[str, int]], hosts: Iterable[str] = ()) -> list[str]:
    """The per-host table; a host that never ran (no events) shows as unreachable-less dashes."""
    names = list(dict.fromkeys([*hosts, *stats]))
    # An inventory's host names are shown as any host string is (textsafe).
    rows = [(visible(name), stats.get(name)) for name in names]
    width = max([4, *(len(shown) for shown, _ in rows)])
    lines = [f"{'host':<{width}}  " + "  ".join(f"{c:>{max(len(c), 3)}}" for c in STATS_COLUMNS)]
    for shown, row in rows:
        cells = [str(row[c]) if row else "-" for c in STATS_COLUMNS]
        lines.append(f"{shown:<{width}}  " + "  ".join(f"{v:>{max(len(c), 3)}}" for v, c in zip(cells, STATS_COLUMNS,
                                                                                                 strict=True)))
    return lines


def is_secret(name: str) -> bool:
    """Whether an environment variable's name says it holds a password, passphrase, token or secret."""
    return SECRET_NAME.search(name) is not None and _ASK_FLAG.search(name) is None


def secrets(env: Mapping[str, str]) -> dict[str, str]:
    """The variables of `env` that hold a secret (is_secret), with a value of MIN_SECRET characters or more
    (none is passed on anyway; redacting a "1" or a "yes" from the logs would only garble them)."""
    return {name: value for name, value in env.items() if is_secret(name) and len(value) >= MIN_SECRET}


def env_become_password(env: Mapping[str, str] | None = None) -> str | None:
    """The become password the user's environment gives Ansible (BECOME_PASSWORD_VARS), if any."""
    if env is None:
        from .ansible_config import users_environment

        with users_environment():  # ANSIBLE_* variables are kept from this process's own Ansible
            return env_become_password(dict(os.environ))
    return next((env[name] for name in BECOME_PASSWORD_VARS if env.get(name)), None)


def _environment(runner_env: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """What ansible-playbook sees: ANSIBLE_*, ENV_ALLOW, whatever the runner itself set or changed; never
    a secret (is_secret)."""
    keep = {}
    for name, value in runner_env.items():
        set_by_runner = os.environ.get(name) != value
        if (name.startswith(("ANSIBLE_", "LC_")) or name in ENV_ALLOW or set_by_runner) and not is_secret(name):
            keep[name] = value
    keep.update(extra)
    return keep


def redact(directory: Path, values: Iterable[str]) -> None:
    """Replace every one of `values` by REDACTED in the regular files under `directory` (links are not
    followed): what Ansible or a program it ran printed into the run's log, job events or command file."""
    needles = sorted({v.encode("utf-8", "surrogateescape") for v in values if v}, key=len, reverse=True)
    if not needles:
        return
    for parent, _dirs, names in os.walk(directory):
        for name in names:
            path = os.path.join(parent, name)
            try:
                fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError:
                continue
            with os.fdopen(fd, "r+b") as handle:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    continue
                data = original = handle.read()
                for needle in needles:
                    data = data.replace(needle, REDACTED.encode())
                if data != original:
                    handle.seek(0)
                    handle.write(data)
                    handle.truncate()


@dataclass(frozen=True)
class PlaybookRun:
    """One ansible-playbook run: the playbook, where (inventory files, an inventory generated for ad-hoc hosts,
    every host of the run, --limit), with which variables and steps (tags), and how (check, diff, verbosity,
    forks, remote user). play.py builds it from a PlayRequest; run_playbook runs it."""

    playbook: Path
    inventory: Sequence[str | Path] = ()
    generated_inventory: Mapping[str, Any] | None = None
    hosts: Sequence[str] = ()
    limit: str | None = None
    extravars: Mapping[str, Any] | None = None
    tags: Sequence[str] = ()
    skip_tags: Sequence[str] = ()
    check: bool = False
    diff: bool = False
    verbosity: int = 0
    remote_user: str | None = None
    forks: int | None = None
    roles_path: Path | None = None
    steps: PlaySteps | None = None  # which steps the run has: the progress's step headers


def run_playbook(
    run: PlaybookRun,
    *,
    become_password: str | None = None,
    echo: Callable[[str], None] = print,
    keep: int = KEEP_RUNS,
    runs_dir: Path | None = None,
    live: TextIO | None = None,
) -> RunResult:
    """Run `run` and stream progress to `echo`: step headers when `run.steps` says which the run has, and
    the task running now on `live` (the stream `echo` writes to: a status line if it is a terminal).
    RunnerError when ansible-playbook could not run it; otherwise a RunResult whose `.ok` says whether every
    host succeeded."""
    from ..hostside import resources
    from .ansible_config import users_environment
    from .inventory import write_inventory

    with users_environment():  # the user's variables, kept from this process's own Ansible
        hidden = secrets(os.environ)
        if become_password is None:
            become_password = env_become_password(dict(os.environ))
    if become_password is not None:
        hidden["become password"] = become_password
    runs = runs_directory(runs_dir)
    with signals_caught() as caught, claim_run(runs, keep) as artifact_dir:
        ident = artifact_dir.name  # the run id: the host's lock and the cleanup know its files and modules by it
        private = Path(tempfile.mkdtemp(prefix="as-", dir="/tmp" if os.path.isdir("/tmp") else None))
        activity = Activity(echo, live, tty=None if live is not None else False)
        progress = Progress(echo, run.verbosity, diff=run.diff, root_logins=root_logins(run.generated_inventory),
                            steps=run.steps,
                            activity=activity)
        status, rc = "unstarted", None
        activity.start()
        try:
            sources = [str(Path(p).resolve()) for p in run.inventory]
            if run.generated_inventory is not None:
                sources.append(str(write_inventory(private / "inventory", dict(run.generated_inventory))))
            run_vars = {"alumet_setup_run": ident,
                        "alumet_setup_lock_holder": f"run {ident} of {os.environ.get('USER') or os.getuid()}@"
                                                    f"{socket.gethostname()} pid {os.getpid()}"}
            # Our own file rather than RunnerConfig(extravars=): every string in it is tagged !unsafe,
            # so a value such as "{{ lookup('pipe', ...) }}" reaches the play as text, never as code.
            vars_file = _write_vars(private / "extravars.yml", {**(run.extravars or {}), **run_vars})
            cmdline = ["--extra-vars", f"@{vars_file}"]
            if run.remote_user:
                cmdline += ["--user", run.remote_user]
            passwords = None
            if become_password is not None:
                cmdline.append("--ask-become-pass")
                passwords = {BECOME_PROMPT: become_password}
            # The user's ANSIBLE_* variables and configuration are for the play (ansible_config.py).
            with users_environment():
                # The venv's bin directory first: pipx and plain venvs do not put ansible-playbook on PATH.
                bin_dir = str(Path(sys.executable).parent)
                path = os.pathsep.join([bin_dir, os.environ.get("PATH", os.defpath)])
                control_dir = private / "cp"
                control_dir.mkdir(mode=0o700)
                envvars = {"PATH": path,
                           "ANSIBLE_HOST_KEY_CHECKING": os.environ.get("ANSIBLE_HOST_KEY_CHECKING", "True"),
                           "ANSIBLE_NOCOLOR": "1", "ANSIBLE_DEPRECATION_WARNINGS": "False",
                           # Both: an ansible.cfg control_path would otherwise win over the directory.
                           "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control_dir),
                           "ANSIBLE_SSH_CONTROL_PATH": "%(directory)s/%%C",
                           "ANSIBLE_REMOTE_TMP": f"{REMOTE_DIR}/{ident}/tmp",
                           "ANSIBLE_ASYNC_DIR": f"{REMOTE_DIR}/{ident}/async",
                           # This machine's own temporary files go with the run's private directory.
                           "ANSIBLE_LOCAL_TEMP": str(private / "tmp"),
                           # One ssh round trip per task instead of several (put module, chmod, run, rm): reruns
                           # of ~200 tasks are mostly these round trips. Needs sudo without requiretty.
                           "ANSIBLE_PIPELINING": os.environ.get("ANSIBLE_PIPELINING", "True")}
            common = {"private_data_dir": str(private), "inventory": sources or None, "limit": run.limit,
                      "forks": run.forks, "passwords": passwords, "envvars": envvars, "quiet": True,
                      "roles_path": [str(run.roles_path)] if run.roles_path else None}
            run_args = [*cmdline, *(["--check"] if run.check else []), *(["--diff"] if run.diff else [])]
            try:
                status, rc, artifact_dir = _run_ansible(
                    dict(common, playbook=str(run.playbook), artifact_dir=str(runs), ident=ident,
                         rotate_artifacts=0,  # claim_run rotates: the runner's own removes whatever is there
                         tags=",".join(run.tags) or None, skip_tags=",".join(run.skip_tags) or None,
                         verbosity=run.verbosity or None, cmdline=shlex.join(run_args)),
                    envvars, progress, lambda: bool(caught))
            finally:
                activity.stop()  # before anything else is printed: the status line never mixes with it
                # Whatever ended the play: the run's files and modules on the hosts, and the lock. Only a
                # second signal stops the cleanup too. Hosts the play could not reach are left out (nothing
                # was made there, and each would cost the ssh timeout again); those where root was out of
                # reach get no second warning.
                unreached = [f"!{h}" for h in progress.unreachable]
                cleanup_limit = ",".join([run.limit or "all", *unreached]) if unreached else run.limit
                _cleanup(dict(common, playbook=str(resources.bundled("playbooks") / "cleanup.yml"),
                              roles_path=[str(resources.bundled("roles"))], artifact_dir=str(private / "cleanup"),
                              ident="cleanup", cmdline=shlex.join(cmdline), limit=cleanup_limit),
                         envvars, echo, lambda: len(caught) >= 2, quiet=set(progress.escalation))
        finally:
            activity.stop()  # also when the play never started
            from ..targets.ssh import close_masters

            close_masters(str(private / "cp"))
            shutil.rmtree(private, ignore_errors=True)
            redact(artifact_dir, hidden.values())
    if caught:
        from ..exits import Interrupted

        raise Interrupted(caught[0])

    if not progress.stats:
        detail = progress.errors[0] if progress.errors else _last_output_line(artifact_dir) or status
        raise RunnerError(f"ansible-playbook did not run the playbook: {detail}", rc)
    return RunResult(rc=rc if rc is not None else 1, status=status, stats=progress.stats,
                     artifact_dir=artifact_dir, hosts=list(run.hosts), messages=progress.messages,
                     unreachable=progress.unreachable, escalation=progress.escalation, changes=progress.changes)


def _write_vars(path: Path, variables: Mapping[str, Any]) -> Path:
    from .ansible_data import to_yaml

    path.write_text(to_yaml(dict(variables)), encoding="utf-8")
    path.chmod(0o600)
    return path


def _run_ansible(settings: dict[str, Any], envvars: Mapping[str, str], handler: Callable[[Mapping[str, Any]], bool],
                 cancel: Callable[[], bool], timeout: int | None = None) -> tuple[str, int | None, Path]:
    """One ansible-playbook run: (status, rc, artifact dir). `cancel` is polled four times a second; when it
    says so, ansible-playbook is killed with its process group and waited for."""
    from ansible_runner.config.runner import RunnerConfig  # heavy: only install/uninstall pay for it
    from ansible_runner.exceptions import AnsibleRunnerException
    from ansible_runner.runner import Runner

    from .ansible_config import users_environment

    # The user's ANSIBLE_* variables and configuration are for the play (ansible_config.py).
    with users_environment():
        config = RunnerConfig(**settings, timeout=timeout)
        config.prepare()
        config.env = _environment(config.env, envvars)
    config.pexpect_timeout = 0.25
    runner = Runner(config, event_handler=handler, cancel_callback=cancel)
    try:
        status, rc = runner.run()
    except AnsibleRunnerException as exc:
        raise RunnerError(f"ansible-runner failed: {_one_line(exc)}") from None
    return status, rc, Path(config.artifact_dir)


def _cleanup(settings: dict[str, Any], envvars: Mapping[str, str], echo: Callable[[str], None],
             cancel: Callable[[], bool], quiet: set[str]) -> None:
    """playbooks/cleanup.yml on the run's hosts: silent, but for a host it could not clean (one line each)."""
    failed: dict[str, str] = {}

    def handler(event: Mapping[str, Any]) -> bool:
        data = event.get("event_data") or {}
        if event.get("event") in ("runner_on_failed", "runner_on_unreachable") and data.get("host") not in quiet:
            failed.setdefault(data.get("host", "?"), failure_message(data.get("res") or {}))
        return True

    try:
        status, _rc, _dir = _run_ansible(settings, envvars, handler, cancel, timeout=CLEANUP_TIMEOUT)
    except RunnerError as exc:
        echo(f"alumet-setup: warning: cleanup of the run's temporary files failed: {exc}")
        return
    for host, why in failed.items():
        echo(f"alumet-setup: warning: {host}: the run's temporary files or lock may remain: {why}")
    if status in ("canceled", "timeout"):
        echo(f"alumet-setup: warning: cleanup of the run's temporary files {status}: some may remain on the hosts")


def _last_output_line(artifact_dir: Path) -> str:
    try:
        text = _strip_ansi((artifact_dir / "stdout").read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return ""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return _one_line(lines[-1]) if lines else ""
