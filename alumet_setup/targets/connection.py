"""From a target to the Host that doctor's checks read: this machine (LocalHost), a host over ssh (one
SshSession for the run), or any other testinfra backend (`podman://`, `ansible://`...) asked one command
per round. Every remote host is a BatchedHost: the checks' questions go to it in rounds."""

from __future__ import annotations

import shlex
import threading
from collections.abc import Sequence
from typing import Any

from .batched_host import BOOTSTRAP, BatchedHost, one_command_each
from .hosts import CommandResult, Host, HostError, LocalHost
from .ssh import UNREACHABLE, SshSessions, SshTarget, ssh_failure

# Commands in flight per testinfra host: sshd refuses more than MaxSessions (default 10) sessions on one
# multiplexed connection.
REMOTE_SLOTS = 6
# Beyond a command's own timeout (which `timeout` enforces on the host), how long a remote call may take
# to connect and answer before it counts as hung: a stalled connection must not stall doctor.
REMOTE_GRACE = 20.0


class TestinfraHost:
    """A host reached through a testinfra backend (podman, ansible, an ssh:// URL...): runs one command
    there. Doctor asks its questions through it in batches, one command per round."""

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
        if result.rc == 255 and UNREACHABLE.search(stderr):
            raise HostError(f"{self.name}: {ssh_failure(stderr)}")
        return CommandResult(tuple(argv), result.rc, stdout, stderr)

    def _run_shell(self, script: str, timeout: float = 10.0) -> Any:
        """Run `script` with sh on the host; HostError when the backend has not answered within the
        command's timeout plus REMOTE_GRACE (a hung connection: its thread is left behind, the report goes on)."""
        from ..threads import in_background

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


def connect_early(targets: Sequence[object], sessions: SshSessions, limit: int) -> None:
    """Start the ssh connections of the first `limit` targets now, before doctor's checks are even loaded: a
    handshake is what a remote read waits for longest. connect() then finds them open in `sessions`."""
    for target in [t for t in targets if isinstance(t, SshTarget)][:limit]:
        sessions.open(target, BOOTSTRAP)


def connect(target: str | SshTarget | None, sessions: SshSessions | None = None) -> Host:
    """The Host for a target: None or `local` -> this machine; an SshTarget -> an ssh session (kept in
    `sessions`, which ends it; one of its own otherwise); anything with `://` -> that testinfra backend. A remote
    host is first reached by its first question (HostError then, in one line, when it cannot be)."""
    if target is None or target in ("", "local", "localhost", "local://"):
        return LocalHost()
    if isinstance(target, SshTarget):
        session = (sessions or SshSessions()).open(target, BOOTSTRAP)
        return BatchedHost(session.ask, target.name)
    try:
        host = TestinfraHost.connect(target)
    except Exception as exc:  # testinfra's RuntimeError/ValueError for a URL it cannot use (an inventory's)
        why = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HostError(f"{target}: cannot connect: {why}") from None

    def transport(argv: list[str], timeout: float) -> CommandResult:
        try:
            return host.run(argv, timeout=timeout)
        except HostError:
            raise
        except Exception as exc:  # testinfra backends raise their own types
            raise HostError(f"{host.name}: cannot connect: {exc}") from exc

    return BatchedHost(one_command_each(transport, host.name), host.name)
