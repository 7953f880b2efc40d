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
import signal
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

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
        try:
            with open(self._resolve(path), "rb") as handle:
                return handle.read()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def read_text(self, path: str) -> str | None:
        data = self.read_bytes(path)
        return None if data is None else data.decode("utf-8", "replace")

    def exists(self, path: str) -> bool:
        return os.path.lexists(self._p(path))

    def listdir(self, path: str) -> list[str]:
        try:
            return sorted(os.listdir(self._resolve(path)))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def stat(self, path: str, follow: bool = True) -> FileStat | None:
        try:
            st = os.stat(self._resolve(path)) if follow else os.lstat(self._p(path))
        except (FileNotFoundError, NotADirectoryError):
            return None
        return FileStat(st.st_mode & 0o7777, st.st_uid, st.st_gid, st.st_size, _kind(st.st_mode))

    def readlink(self, path: str) -> str | None:
        try:
            return os.readlink(self._p(path))
        except (FileNotFoundError, OSError):
            return None

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
        try:
            return os.getxattr(self._resolve(path), name)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            if exc.errno in (61, 95):  # ENODATA: no such attribute; EOPNOTSUPP: fs without xattrs
                return None
            raise

    def run(self, argv: Sequence[str], timeout: float = 10.0, env: dict[str, str] | None = None
            ) -> CommandResult:
        full_env = None
        if env:
            full_env = {**os.environ, **env}
        try:
            # Its own session: on timeout the whole process group is killed, so a child that keeps the
            # output pipes open (`sh -c 'sleep 600 & ...'`) cannot keep us reading for ever.
            proc = subprocess.Popen(
                list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env,
                stdin=subprocess.DEVNULL, errors="replace", start_new_session=True,
            )
        except FileNotFoundError:
            return CommandResult(tuple(argv), COMMAND_NOT_FOUND, "", f"{argv[0]}: command not found")
        except PermissionError as exc:
            return CommandResult(tuple(argv), 126, "", str(exc))
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.communicate(timeout=5)
            return CommandResult(tuple(argv), 124, "", f"{argv[0]}: timed out after {timeout:g}s")
        return CommandResult(tuple(argv), proc.returncode, stdout, stderr)

    def which(self, command: str, extra_dirs: Sequence[str] = ()) -> str | None:
        if self.is_fixture:
            for directory in [*self._path_env.split(os.pathsep), *extra_dirs]:
                candidate = os.path.join(directory, command)
                st = self.stat(candidate)
                if st and st.is_file and st.mode & 0o111:
                    return candidate
            return None
        found = shutil.which(command, path=self._path_env)
        if found:
            return found
        for directory in extra_dirs:
            candidate = os.path.join(os.path.expanduser(directory), command)
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                return candidate
        return None


# Small programs run on a remote host where a shell one-liner would be fragile. The target has
# python3 (Ansible needs it too); the snippets stay Python 3.8 compatible for Ubuntu 22.04 hosts.
_PY_STAT = (
    "import os,sys\n"
    "p=sys.argv[1]\n"
    "try: s=(os.stat if sys.argv[2]=='1' else os.lstat)(p)\n"
    "except (FileNotFoundError,NotADirectoryError): sys.exit(3)\n"
    "print(s.st_mode,s.st_uid,s.st_gid,s.st_size)\n"
)
_PY_XATTR = (
    "import os,sys\n"
    "try: sys.stdout.write(os.getxattr(sys.argv[1],sys.argv[2]).hex())\n"
    "except OSError as e: sys.exit(3 if e.errno in (2,20,61,95) else 4)\n"
)
_PY_LIST = (
    "import os,sys\n"
    "try: print('\\0'.join(sorted(os.listdir(sys.argv[1]))),end='')\n"
    "except (FileNotFoundError,NotADirectoryError): pass\n"
)
_PY_READ = (
    "import sys\n"
    "try: sys.stdout.write(open(sys.argv[1],'rb').read().hex())\n"
    "except (FileNotFoundError,NotADirectoryError,IsADirectoryError): sys.exit(3)\n"
    "except PermissionError: sys.exit(5)\n"
)

_UNREACHABLE = re.compile(
    r"(Connection refused|Connection timed out|No route to host|Could not resolve hostname|"
    r"Permission denied \(publickey|Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED|"
    r"no such container|ssh: connect to host)",
    re.IGNORECASE,
)


class TestinfraHost:
    """A host reached through testinfra (ssh, podman, ansible, ...): the same questions, remotely."""

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

    def ping(self) -> None:
        """Fail early, with one line, when the host cannot be reached or has no python3."""
        try:
            result = self.run(["python3", "-c", "pass"])
        except HostError:
            raise
        except Exception as exc:  # testinfra backends raise their own types
            raise HostError(f"{self.name}: cannot connect: {exc}") from exc
        if result.rc == COMMAND_NOT_FOUND:
            raise HostError(f"{self.name}: python3 is missing on the host (doctor needs it)")
        if not result.ok:
            detail = (result.stderr.strip().splitlines() or [f"exit code {result.rc}"])[-1]
            raise HostError(f"{self.name}: cannot run commands: {detail}")

    def _py(self, source: str, *args: str) -> CommandResult:
        return self.run(["python3", "-c", source, *args])

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

    def read_bytes(self, path: str) -> bytes | None:
        result = self._py(_PY_READ, path)
        if result.rc == 3:
            return None
        if result.rc == 5:
            raise PermissionError(f"{path}: permission denied")
        if not result.ok:
            raise OSError(f"{path}: {result.stderr.strip()}")
        return bytes.fromhex(result.stdout)

    def read_text(self, path: str) -> str | None:
        data = self.read_bytes(path)
        return None if data is None else data.decode("utf-8", "replace")

    def exists(self, path: str) -> bool:
        return self.stat(path, follow=False) is not None

    def listdir(self, path: str) -> list[str]:
        out = self._py(_PY_LIST, path).stdout
        return [name for name in out.split("\0") if name]

    def stat(self, path: str, follow: bool = True) -> FileStat | None:
        result = self._py(_PY_STAT, path, "1" if follow else "0")
        if result.rc == 3:
            return None
        if not result.ok:
            raise OSError(f"{path}: {result.stderr.strip()}")
        mode, uid, gid, size = (int(v) for v in result.stdout.split())
        return FileStat(mode & 0o7777, uid, gid, size, _kind(mode))

    def readlink(self, path: str) -> str | None:
        result = self.run(["readlink", "--", path])
        return result.stdout.rstrip("\n") if result.ok else None

    def realpath(self, path: str) -> str:
        result = self.run(["realpath", "-m", "--", path])
        return result.stdout.rstrip("\n") if result.ok else path

    def getxattr(self, path: str, name: str) -> bytes | None:
        result = self._py(_PY_XATTR, path, name)
        if result.rc == 3:
            return None
        if not result.ok:
            raise OSError(f"{path}: cannot read {name}: {result.stderr.strip()}")
        return bytes.fromhex(result.stdout)

    def which(self, command: str, extra_dirs: Sequence[str] = ()) -> str | None:
        dirs = ":".join(extra_dirs)
        script = f'PATH="$PATH:{dirs}" command -v {shlex.quote(command)}' if dirs else \
            f"command -v {shlex.quote(command)}"
        result = self._run_shell(script)
        out = result.stdout.strip()
        return out if result.rc == 0 and out.startswith("/") else None


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
    """A reachable Host for a target (HostError otherwise, in one line): None or `local` -> this
    machine; an SshTarget -> ssh; anything with `://` -> that testinfra backend."""
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
    host.ping()
    return host


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
