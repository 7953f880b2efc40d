"""The one host abstraction that every doctor check is written against.

A check never touches the machine directly: it asks a `Host` to read a file, list a directory,
stat a path, read an extended attribute or run a command. Two implementations exist:

* `LocalHost` does it with plain system calls. It is the fast path for `alumet-setup doctor` on
  this machine (no ansible, no testinfra import) and, given a `root`, reads a fixture tree laid out
  like a real host, which is how the unit tests drive the real checks.
* a remote host (connection.py) answers the same questions in batches (batched_host.BatchedHost), over
  an ssh session (ssh.py) or a testinfra backend, so the very same checks run on a remote machine or
  inside a molecule container.

Paths are always absolute paths as seen on the target host.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from ..hostside import host_answers

T = TypeVar("T")

# Commands answered 127 when absent, like a shell does.
COMMAND_NOT_FOUND = 127


def isolated_python(python: str, program: str, *args: str) -> list[str]:
    """`python -c program args` as every host-side program runs: -I -S, the standard library only (no site
    packages, no PYTHON* variables of the login), so it starts faster and nothing of the login leaks in."""
    return [python, "-I", "-S", "-c", program, *args]


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

    def call(self, name: str, source: str, function: str) -> Any:
        """`function()` of a standard-library program (`source`, loaded as module `name`) run on the host by the
        process that reads it, so as the same user; its JSON-able value. OSError when it failed."""
        ...


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

    def call(self, name: str, source: str, function: str) -> Any:
        if not self.is_fixture:
            return host_answers.call(name, source, function)
        # A fixture tree has no process of its own: the program runs as a command (which the tests script), and
        # its last line of output that is JSON is the value.
        result = self.run(isolated_python("python3", source), timeout=10)
        for line in reversed(result.stdout.splitlines()):
            if line.startswith(("{", "[")):
                with contextlib.suppress(ValueError):
                    return json.loads(line)
        raise OSError(f"{name}.{function}: " + ((result.stderr or result.stdout).strip().splitlines()
                                                or [f"exit code {result.rc}"])[-1])


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
    its one-line error and never holds the others longer than its own deadline (connection.py: SshSession.ask,
    TestinfraHost._run_shell)."""
    import time

    from ..threads import parallel_map

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
