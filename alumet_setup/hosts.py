"""The one host abstraction that every doctor check is written against.

A check never touches the machine directly: it asks a `Host` to read a file, list a directory,
stat a path, read an extended attribute or run a command. Two implementations exist:

* `LocalHost` does it with plain system calls. It is the fast path for `alumet-setup doctor` on
  this machine (no ansible, no testinfra import) and, given a `root`, reads a fixture tree laid out
  like a real host, which is how the unit tests drive the real checks.
* `TestinfraHost` wraps a testinfra host (`ssh://`, `podman://`, `ansible://`, ...), so the very same
  checks run on a remote machine or inside a molecule container.

Paths are always absolute paths as seen on the target host.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from . import host_answers

T = TypeVar("T")

# Commands answered 127 when absent, like a shell does.
COMMAND_NOT_FOUND = 127
# Commands in flight per remote host: sshd refuses more than MaxSessions (default 10) sessions on one
# multiplexed connection, and doctor runs 12 checks at once.
REMOTE_SLOTS = 6
# Beyond a command's own timeout (which `timeout` enforces on the host), how long a remote call may take
# to connect and answer before it counts as hung: a stalled ssh connection must not stall doctor.
REMOTE_GRACE = 20.0


class HostError(Exception):
    """The host could not be reached or asked (connection refused, authentication, ...)."""


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0

    @property
    def found(self) -> bool:
        return self.rc != COMMAND_NOT_FOUND


@dataclass(frozen=True)
class FileStat:
    mode: int  # permission bits only (st_mode & 0o7777)
    uid: int
    gid: int
    size: int
    kind: str  # "file", "dir", "link", "other"

    @property
    def is_dir(self) -> bool:
        return self.kind == "dir"

    @property
    def is_file(self) -> bool:
        return self.kind == "file"


class Host(Protocol):
    """What checks may ask of a host. Every method is safe to call from several threads."""

    name: str

    def read_text(self, path: str) -> str | None:
        """Content of a file; None when it does not exist. PermissionError when unreadable."""
        ...

    def read_bytes(self, path: str) -> bytes | None: ...

    def exists(self, path: str) -> bool: ...

    def listdir(self, path: str) -> list[str]:
        """Sorted entry names; [] when the directory does not exist."""
        ...

    def stat(self, path: str, follow: bool = True) -> FileStat | None: ...

    def readlink(self, path: str) -> str | None: ...

    def realpath(self, path: str) -> str: ...

    def getxattr(self, path: str, name: str) -> bytes | None:
        """Raw value of an extended attribute; None when the file or the attribute is absent."""
        ...

    def run(self, argv: Sequence[str], timeout: float = 10.0, env: dict[str, str] | None = None
            ) -> CommandResult: ...

    def which(self, command: str, extra_dirs: Sequence[str] = ()) -> str | None: ...


_STAT_KINDS = {0o040000: "dir", 0o100000: "file", 0o120000: "link"}


def _kind(st_mode: int) -> str:
    return _STAT_KINDS.get(st_mode & 0o170000, "other")


class LocalHost:
    """This machine, or a fixture tree standing in for one when `root` is given."""

    def __init__(self, root: str = "/", name: str = "localhost", path_env: str | None = None):
        self.root = os.path.abspath(root)
        self.name = name
        self._path_env = path_env if path_env is not None else os.environ.get("PATH", os.defpath)

    @property
    def is_fixture(self) -> bool:
        return self.root != "/"

    def _p(self, path: str) -> str:
        if not self.is_fixture:
            return path
        # Resolve inside the fixture, so absolute symlinks in the tree stay inside it.
        return os.path.join(self.root, path.lstrip("/"))

    def read_bytes(self, path: str) -> bytes | None:
        return host_answers.read_bytes(self._resolve(path))

    def read_text(self, path: str) -> str | None:
        data = self.read_bytes(path)
        return None if data is None else data.decode("utf-8", "replace")

    def exists(self, path: str) -> bool:
        return os.path.lexists(self._p(path))

    def listdir(self, path: str) -> list[str]:
        return host_answers.listdir(self._resolve(path))

    def stat(self, path: str, follow: bool = True) -> FileStat | None:
        found = host_answers.stat(self._resolve(path) if follow else self._p(path), follow)
        return None if found is None else FileStat(**found)

    def readlink(self, path: str) -> str | None:
        return host_answers.readlink(self._p(path))

    def realpath(self, path: str) -> str:
        if not self.is_fixture:
            return os.path.realpath(path)
        # Follow links one component at a time, re-rooting absolute targets in the fixture.
        parts = [p for p in path.split("/") if p]
        resolved: list[str] = []
        for _hops in range(40):
            if not parts:
                break
            part = parts.pop(0)
            if part == "..":
                if resolved:
                    resolved.pop()
                continue
            if part == ".":
                continue
            candidate = "/" + "/".join([*resolved, part])
            target = self.readlink(candidate)
            if target is None:
                resolved.append(part)
                continue
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p] + parts
        return "/" + "/".join(resolved)

    def _resolve(self, path: str) -> str:
        return self._p(self.realpath(path)) if self.is_fixture else path

    def getxattr(self, path: str, name: str) -> bytes | None:
        return host_answers.getxattr(self._resolve(path), name)

    def run(self, argv: Sequence[str], timeout: float = 10.0, env: dict[str, str] | None = None
            ) -> CommandResult:
        return CommandResult(tuple(argv), *host_answers.run(list(argv), timeout, env))

    def which(self, command: str, extra_dirs: Sequence[str] = ()) -> str | None:
        if self.is_fixture:
            for directory in [*self._path_env.split(os.pathsep), *extra_dirs]:
                candidate = os.path.join(directory, command)
                st = self.stat(candidate)
                if st and st.is_file and st.mode & 0o111:
                    return candidate
            return None
        return host_answers.which(command, list(extra_dirs), self._path_env)


_UNREACHABLE = re.compile(
    r"(Connection refused|Connection timed out|No route to host|Could not resolve hostname|"
    r"Permission denied \(publickey|Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED|"
    r"no such container|ssh: connect to host)",
    re.IGNORECASE,
)


class TestinfraHost:
    """A host reached through testinfra (ssh, podman, ansible, ...): runs one command there. Doctor asks its
    questions through it in batches (batched_host.BatchedHost), one command per round."""

    __test__ = False  # not a pytest test class, despite its name

    def __init__(self, backend: Any, name: str | None = None):
        self._host = backend
        self.name = name or backend.backend.get_hostname()
        self._slots = threading.BoundedSemaphore(REMOTE_SLOTS)
        self._hung: str | None = None  # set once a call went unanswered: later ones fail at once

    @classmethod
    def connect(cls, spec: str, **kwargs: Any) -> TestinfraHost:
        import testinfra  # imported here: the local doctor must not pay for it

        name = kwargs.pop("name", None) or spec
        return cls(testinfra.get_host(spec, **kwargs), name=name)

    def run(self, argv: Sequence[str], timeout: float = 10.0, env: dict[str, str] | None = None
            ) -> CommandResult:
        command = " ".join(shlex.quote(a) for a in argv)
        if env:
            command = "env " + " ".join(shlex.quote(f"{k}={v}") for k, v in env.items()) + " " + command
        # `command -v` first, so a missing program reads as 127 on every backend.
        script = f"command -v {shlex.quote(argv[0])} >/dev/null 2>&1 || exit 127; exec timeout {timeout:g} {command}"
        result = self._run_shell(script, timeout)
        stdout = result.stdout if isinstance(result.stdout, str) else result.stdout.decode("utf-8", "replace")
        stderr = result.stderr if isinstance(result.stderr, str) else result.stderr.decode("utf-8", "replace")
        if result.rc == 255 and _UNREACHABLE.search(stderr):
            raise HostError(f"{self.name}: {ssh_failure(stderr)}")
        return CommandResult(tuple(argv), result.rc, stdout, stderr)

    def _run_shell(self, script: str, timeout: float = 10.0) -> Any:
        """Run `script` with sh on the host; HostError when the backend has not answered within the
        command's timeout plus REMOTE_GRACE (a hung connection: its thread is left behind, the report goes on)."""
        from .threads import in_background

        def call() -> Any:
            with self._slots:
                return self._host.run("sh -c " + shlex.quote(script))

        if self._hung is not None:
            raise HostError(self._hung)
        deadline = timeout + REMOTE_GRACE
        try:
            return in_background(call).result(timeout=deadline)
        except TimeoutError:
            self._hung = f"{self.name}: no answer within {deadline:g} s (connection hung)"
            raise HostError(self._hung) from None
        except RuntimeError as exc:  # testinfra's ssh backend raises on rc 255 with the result inside
            result = exc.args[0] if exc.args else None
            stderr = getattr(result, "stderr", "") or ""
            stderr = stderr if isinstance(stderr, str) else stderr.decode("utf-8", "replace")
            raise HostError(f"{self.name}: {ssh_failure(stderr) or 'ssh failed (exit code 255)'}") from None


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

    def spec(self) -> str:
        host = f"[{self.destination}]" if ":" in self.destination else self.destination
        return "ssh://" + (f"{self.user}@" if self.user else "") + host + (f":{self.port}" if self.port else "")


class SshControl:
    """One private directory of ssh ControlMaster sockets for a doctor run: each host's commands share
    one connection, and the masters are told to exit when the run ends (no ssh left behind)."""

    def __init__(self) -> None:
        import tempfile  # only for ssh hosts: the local doctor does not pay for it

        self.directory = tempfile.mkdtemp(prefix="as-ssh-")  # short: socket paths are limited to 108 bytes

    def args(self, target: SshTarget) -> str:
        """testinfra's ssh_extra_args: one shell-quoted string (testinfra runs ssh through a shell)."""
        # BatchMode: never prompt (a password or an unknown host key fails at once, with ssh's reason).
        # ConnectTimeout and ServerAlive*: a host that stops answering fails the command instead of hanging it.
        argv = ["-o", "BatchMode=yes", "-o", f"ControlPath={self.directory}/%C", "-o", "ConnectTimeout=10",
                "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3", *target.extra_args]
        return " ".join(shlex.quote(a) for a in argv)

    def close(self) -> None:
        close_masters(self.directory)

    def __enter__(self) -> SshControl:
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


def connect(target: str | SshTarget | None, control: SshControl | None = None) -> Host:
    """The Host for a target: None or `local` -> this machine; an SshTarget -> ssh; anything with `://` ->
    that testinfra backend. A remote host is first reached by its first question (HostError then, in one
    line, when it cannot be)."""
    if target is None or target in ("", "local", "localhost", "local://"):
        return LocalHost()
    if isinstance(target, SshTarget):
        kwargs: dict[str, Any] = {"ssh_identity_file": target.identity_file} if target.identity_file else {}
        if control is not None:
            kwargs["ssh_extra_args"] = control.args(target)
        elif target.extra_args:
            kwargs["ssh_extra_args"] = " ".join(shlex.quote(a) for a in target.extra_args)
        host = TestinfraHost.connect(target.spec(), name=target.name, **kwargs)
    else:
        try:
            host = TestinfraHost.connect(target)
        except Exception as exc:  # testinfra's RuntimeError/ValueError for a URL it cannot use (an inventory's)
            why = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise HostError(f"{target}: cannot connect: {why}") from None
    from .batched_host import BatchedHost

    def transport(argv: list[str], timeout: float) -> CommandResult:
        try:
            return host.run(argv, timeout=timeout)
        except HostError:
            raise
        except Exception as exc:  # testinfra backends raise their own types
            raise HostError(f"{host.name}: cannot connect: {exc}") from exc

    return BatchedHost(transport, host.name)


@dataclass(frozen=True)
class Reading(Generic[T]):
    """What read_each got from one host: `value`, or `error` (one line, without the host's name)."""

    name: str
    value: T | None
    error: str | None
    seconds: float


def read_each(connectors: Sequence[tuple[str, Callable[[], Host]]], read: Callable[[Host], T],
              workers: int) -> list[Reading[T]]:
    """`read` (reads of the host only) on each (name, connect) pair, up to `workers` hosts at once, in the order
    given: doctor on many hosts, install's and uninstall's surveys. A host that cannot be reached or read gets
    its one-line error and never holds the others longer than its own deadline (TestinfraHost._run_shell)."""
    import time

    from .threads import parallel_map

    def one(item: tuple[str, Callable[[], Host]]) -> Reading[T]:
        name, connect = item
        start = time.perf_counter()
        try:
            host = connect()
            return Reading(name, in_rounds(host, lambda: read(host)), None, time.perf_counter() - start)
        except (HostError, OSError) as exc:
            return Reading(name, None, str(exc).removeprefix(f"{name}: "), time.perf_counter() - start)

    return parallel_map(one, connectors, workers) if connectors else []


def in_rounds(host: Host, work: Callable[[], T]) -> T:
    """`work`, reads of `host` only, in as few round trips as the host allows (BatchedHost.in_rounds);
    on this machine, simply run."""
    rounds = getattr(host, "in_rounds", None)
    return rounds(work) if rounds is not None else work()


def ssh_target(spec: str) -> str | SshTarget:
    """A --host value without an inventory: a testinfra URL stays as it is; `[user@]host[:port]` is
    checked like install checks it (InventoryError) and becomes an SshTarget."""
    from .inventory import LOCAL_NAMES, check_url, parse_host

    if "://" in spec:
        return check_url(spec)

    if spec in LOCAL_NAMES:
        return "local"
    parsed = parse_host(spec)
    return SshTarget(name=spec, destination=parsed.address or spec, user=parsed.user, port=parsed.port)
