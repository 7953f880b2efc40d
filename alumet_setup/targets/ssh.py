"""Reaching a host over ssh for a doctor read: where to connect (SshTarget), one connection per host for
the whole run (SshSession), and ssh's failures said in one line (ssh_failure).

A session runs host_answers.py on the host once, over one ssh connection that stays open: each round of
questions (batched_host.py) is one line written to it and one line of answers read back, so a round after
the first costs a network round trip, not a new ssh, shell and python3. The OpenSSH client does the
connecting, so ~/.ssh/config, the agent, known_hosts and ProxyJump apply as they do for Ansible.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import queue
import re
import shlex
import shutil
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .hosts import COMMAND_NOT_FOUND, HostError, isolated_python

# ssh's own words when it could not get in (or the podman/testinfra equivalent): the host is unreachable.
UNREACHABLE = re.compile(
    r"(Connection refused|Connection timed out|No route to host|Could not resolve hostname|"
    r"Permission denied \(publickey|Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED|"
    r"no such container|ssh: connect to host)",
    re.IGNORECASE,
)

# ssh's own words for why it could not get in -> one line that says what to do about it.
_SSH_REASONS = (
    (re.compile(r"REMOTE HOST IDENTIFICATION HAS CHANGED|Host key verification failed", re.I),
     "host key verification failed: the host's key is not the one in known_hosts (check it, then update "
     "known_hosts)"),
    (re.compile(r"Permission denied \((?P<methods>[^)]*)\)", re.I),
     "authentication failed (Permission denied ({methods})): check the user and the key or ssh agent"),
    (re.compile(r"Connection refused", re.I), "connection refused: no ssh server listening on that port"),
    (re.compile(r"Connection timed out|Operation timed out", re.I), "connection timed out"),
    (re.compile(r"No route to host", re.I), "no route to host"),
    (re.compile(r"Could not resolve hostname (?P<name>\S+?):", re.I), "could not resolve host name {name}"),
)


def ssh_failure(text: str) -> str:
    """One line for an ssh (or Ansible ssh connection) failure; the last non-banner line otherwise."""
    for pattern, message in _SSH_REASONS:
        match = pattern.search(text)
        if match:
            return message.format(**match.groupdict())
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("@")]
    return lines[-1] if lines else ""


@dataclass(frozen=True)
class SshTarget:
    """How to reach one host over ssh: from an inventory entry or a `[user@]host[:port]` --host."""

    name: str  # the label in reports
    destination: str  # an address, or a name ssh resolves itself (so ~/.ssh/config applies)
    user: str | None = None
    port: int | None = None
    identity_file: str | None = None
    extra_args: tuple[str, ...] = ()  # ansible_ssh_common_args + ansible_ssh_extra_args, split

    def ssh_argv(self, remote_command: str) -> list[str]:
        """The ssh command line that runs `remote_command` (one shell-command string) on this host."""
        # BatchMode: never prompt (a password or an unknown host key fails at once, with ssh's reason).
        # ConnectTimeout and ServerAlive*: a host that stops answering ends the connection instead of hanging it.
        argv = ["ssh", "-T", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=5",
                "-o", "ServerAliveCountMax=3", *self.extra_args]
        if self.identity_file:
            argv += ["-i", self.identity_file]
        if self.user:
            argv += ["-l", self.user]
        if self.port:
            argv += ["-p", str(self.port)]
        return [*argv, "--", self.destination, remote_command]  # `--`: the destination is never an option


MAX_REPLY = 64 << 20  # bytes of one round's answers (each answer holds at most host_answers.MAX_ANSWER)
_KEPT_STDERR = 64 << 10  # ssh's and the program's last words, for the error line


class SshSession:
    """One ssh connection to a host, open for a whole run, with a program running there that answers one
    line of questions with one line of answers until its stdin ends. `argv` is the command that starts it
    (for_target: ssh); its exit code says why it ended: 127 no python3, 255 ssh's own failure."""

    def __init__(self, name: str, argv: Sequence[str]) -> None:
        self.name = name
        self._argv = list(argv)
        self._process: subprocess.Popen[bytes] | None = None
        self._replies: queue.Queue[bytes | None] = queue.Queue()
        self._stderr: collections.deque[bytes] = collections.deque()
        self._stderr_reader: threading.Thread | None = None
        self._lock = threading.Lock()
        self._failed: str | None = None  # once the session is gone, every later question fails with this

    @classmethod
    def for_target(cls, target: SshTarget, program: str) -> SshSession:
        """A session that runs `program` (a python3 -c program) on the target."""
        # `sh -c`: the same script whatever the login shell; 127 when python3 is missing.
        script = (f"command -v python3 >/dev/null 2>&1 || exit {COMMAND_NOT_FOUND}; "
                  f"exec {shlex.join(isolated_python('python3', program))}")
        return cls(target.name, target.ssh_argv("sh -c " + shlex.quote(script)))

    def ask(self, line: str, timeout: float) -> Any:
        """Send one line of questions; the decoded line of answers. HostError when the host cannot be reached,
        ends the session, or has not answered within `timeout` seconds (a hung connection: the session is
        ended, the report goes on)."""
        with self._lock:
            if self._failed is not None:
                raise HostError(self._failed)
            process = self._process or self._start()  # a session that was never start()ed
            try:
                assert process.stdin is not None
                process.stdin.write(line.encode() + b"\n")
                process.stdin.flush()
            except (BrokenPipeError, OSError):
                pass  # it has ended: its exit code says why, below
            try:
                reply = self._replies.get(timeout=timeout)
            except queue.Empty:
                self._fail(f"{self.name}: no answer within {timeout:g} s (connection hung)")
                raise HostError(self._failed) from None
            if reply is None or not reply.endswith(b"\n"):
                raise HostError(self._ended(process, cut=reply is not None))
            try:
                return json.loads(reply)
            except ValueError:
                self._fail(f"{self.name}: cannot read the host: its answer is not JSON")
                raise HostError(self._failed) from None

    def start(self) -> None:
        """Connect now rather than at the first question."""
        with self._lock:
            if self._process is None and self._failed is None:
                self._start()

    def close(self) -> None:
        """End the session: the program ends with its stdin, and ssh with it."""
        with self._lock:
            process, self._process = self._process, None
            if self._failed is None:
                self._failed = f"{self.name}: the connection is closed"
        if process is not None:
            _end(process)

    def _start(self) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(self._argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE)
        self._process = process
        threading.Thread(target=self._read_replies, args=(process,), daemon=True).start()
        self._stderr_reader = threading.Thread(target=self._read_stderr, args=(process,), daemon=True)
        self._stderr_reader.start()
        return process

    def _read_replies(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        while True:
            reply = process.stdout.readline(MAX_REPLY)  # without its newline when longer: refused in ask()
            self._replies.put(reply or None)
            if not reply or not reply.endswith(b"\n"):
                return

    def _read_stderr(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stderr is not None
        descriptor, kept = process.stderr.fileno(), 0
        for chunk in iter(lambda: os.read(descriptor, 4096), b""):
            self._stderr.append(chunk)
            kept += len(chunk)
            while kept > _KEPT_STDERR and len(self._stderr) > 1:
                kept -= len(self._stderr.popleft())

    def _ended(self, process: subprocess.Popen[bytes], cut: bool) -> str:
        """The session ended (or sent more than MAX_REPLY): why, in one line; later questions fail with it."""
        if cut:
            self._fail(f"{self.name}: cannot read the host: an answer larger than {MAX_REPLY} bytes")
            return self._failed or ""
        try:
            rc = process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            rc = None
        if self._stderr_reader is not None:
            self._stderr_reader.join(timeout=2)  # its last words, read to their end
        stderr = b"".join(self._stderr).decode("utf-8", "replace")
        if rc == COMMAND_NOT_FOUND:
            why = "python3 is missing on the host (doctor needs it)"
        elif rc == 255:
            why = ssh_failure(stderr) or "ssh failed (exit code 255)"
        else:
            why = "cannot read the host: " + ((stderr.strip().splitlines() or [f"exit code {rc}"])[-1])
        self._fail(f"{self.name}: {why}")
        return self._failed or ""

    def _fail(self, why: str) -> None:
        self._failed = why
        process, self._process = self._process, None
        if process is not None:
            process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)


def _end(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(OSError):
        assert process.stdin is not None
        process.stdin.close()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)


class SshSessions:
    """The ssh sessions of one run, every one ended when the run ends (no ssh left behind)."""

    def __init__(self) -> None:
        self._sessions: list[SshSession] = []
        self._by_target: dict[tuple[SshTarget, str], SshSession] = {}
        self._lock = threading.Lock()

    def open(self, target: SshTarget, program: str) -> SshSession:
        """A session to `target`, connecting now: the handshake goes on while the checks load and make their
        first pass. Opened again, the same session: one connection per host for the run."""
        with self._lock:
            held = self._by_target.get((target, program))
            if held is not None:
                return held
            session = self._by_target[(target, program)] = SshSession.for_target(target, program)
        return self.keep(session)

    def keep(self, session: SshSession) -> SshSession:
        """`session`, started, to be ended with the others."""
        with self._lock:
            self._sessions.append(session)
        session.start()
        return session

    def close(self) -> None:
        from ..threads import parallel_map

        with self._lock:
            sessions, self._sessions = self._sessions, []
            self._by_target.clear()
        parallel_map(lambda s: s.close(), sessions, 16)

    def __enter__(self) -> SshSessions:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def close_masters(directory: str) -> None:
    """Tell every ssh ControlMaster with a socket in `directory` to exit, then remove the directory."""
    with contextlib.suppress(FileNotFoundError):
        for socket in os.listdir(directory):
            with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                subprocess.run(["ssh", "-S", os.path.join(directory, socket), "-O", "exit", "x"],
                               capture_output=True, timeout=10, check=False, stdin=subprocess.DEVNULL)
    shutil.rmtree(directory, ignore_errors=True)
