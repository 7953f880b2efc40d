"""A remote host read in batches: doctor's checks ask their questions of answers already fetched, and a
host costs a few round trips instead of one per question.

Doctor over SSH runs in rounds (BatchedHost.in_rounds): the checks run on the controller against the
answers known so far; every question without an answer gets a stand-in (absent: no file, no command)
and is noted; the noted questions go to the host in one command (host_answers.py, run there by its
python3), and the checks run again, until a round asks nothing new. Only the last round's findings
count, and in it every question had its real answer, so the findings are those of a host asked one
question at a time. A round costs one command on the host's already open connection; the number of
rounds is the depth of the checks' question chains (which -> stat -> getxattr), not their count.

AnswerHost is the same host without a connection: what a record holds (tests/bed/host_recording.py).
"""

from __future__ import annotations

import base64
import json
import threading
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ..hostside import host_answers
from .hosts import COMMAND_NOT_FOUND, CommandResult, FileStat, HostError, LocalHost, isolated_python

T = TypeVar("T")
_NOT_CALLED = object()  # AnswerHost.call's stand-in: a call without an answer raises, as a failed one does
MAX_ROUNDS = 12  # far more than the checks' deepest chain; a run that needs more asks what is left directly
ROUND_GRACE = 20.0  # beyond the longest command of a round: connecting and answering
# host_answers.py as one shell-safe argument (base64 has no quotes): a few kB, well under the host's limit
# for one argument (128 KiB on Linux).
_PROGRAM = base64.b64encode(zlib.compress((Path(__file__).parents[1] / "hostside" / "host_answers.py").read_bytes(),
                                           9)).decode()
BOOTSTRAP = f"import base64,zlib;exec(zlib.decompress(base64.b64decode('{_PROGRAM}')))"


def answers_argv(python: str, packed: str) -> list[str]:
    """The command that answers one packed batch on a host."""
    return isolated_python(python, BOOTSTRAP, packed)


def key(op: str, args: Sequence[Any]) -> str:
    """One question as a string: the operation and the arguments its answer depends on."""
    return json.dumps([op, *args])


def decode(value: Any, argv: Sequence[str] = ()) -> Any:
    """An encoded answer (host_answers.answer) -> what a Host method returns; raises what the host raised."""
    if not isinstance(value, dict):
        return value
    if "bytes" in value:
        return base64.b64decode(value["bytes"])
    if "stat" in value:
        return FileStat(**value["stat"])
    if "command" in value:
        c = value["command"]
        return CommandResult(tuple(argv), c["rc"], c["stdout"], c["stderr"])
    if "called" in value:
        return value["called"]
    if value.get("raises") == "PermissionError":
        raise PermissionError(13, value.get("message") or "Permission denied")
    if "raises" in value:
        raise OSError(value.get("message") or "error on the host")
    return value


class AnswerHost(LocalHost):
    """A host whose answers are known in advance: each question gets its answer; one without an answer
    gets the stand-in of a host that lacks the thing asked about, and is noted in `unanswered`."""

    def __init__(self, answers: dict[str, Any] | None = None, name: str = "recorded") -> None:
        super().__init__(name=name)
        self.answers: dict[str, Any] = dict(answers or {})
        self.unanswered: dict[str, tuple[str, list[Any]]] = {}  # key -> (op, arguments for the host)
        self._lock = threading.Lock()

    def learn(self, qkey: str, op: str, call_args: list[Any]) -> None:
        """A question without a known answer: a subclass may find the answer (self.answers[qkey])."""

    def _answer(self, op: str, args: list[Any], absent: Any, call_args: list[Any] | None = None,
                argv: Sequence[str] = ()) -> Any:
        qkey = key(op, args)
        if qkey not in self.answers:
            self.learn(qkey, op, args if call_args is None else call_args)
        if qkey not in self.answers:
            with self._lock:
                self.unanswered.setdefault(qkey, (op, args if call_args is None else call_args))
            return absent
        return decode(self.answers[qkey], argv)

    def read_bytes(self, path: str) -> bytes | None:  # LocalHost.read_text reads through it
        return self._answer("read_bytes", [path], None)

    def exists(self, path: str) -> bool:
        return self._answer("exists", [path], False)

    def listdir(self, path: str) -> list[str]:
        return self._answer("listdir", [path], [])

    def stat(self, path: str, follow: bool = True) -> FileStat | None:
        return self._answer("stat", [path, follow], None)

    def readlink(self, path: str) -> str | None:
        return self._answer("readlink", [path], None)

    def realpath(self, path: str) -> str:
        return self._answer("realpath", [path], path)

    def getxattr(self, path: str, name: str) -> bytes | None:
        return self._answer("getxattr", [path, name], None)

    def run(self, argv: Sequence[str], timeout: float = 10.0, env: dict[str, str] | None = None) -> CommandResult:
        absent = CommandResult(tuple(argv), COMMAND_NOT_FOUND, "", f"{argv[0]}: command not found")
        return self._answer("run", [list(argv)], absent, [list(argv), timeout, env], argv)

    def which(self, command: str, extra_dirs: Sequence[str] = ()) -> str | None:
        return self._answer("which", [command, list(extra_dirs)], None)

    def call(self, name: str, source: str, function: str) -> Any:
        # Keyed by name and function, not the source: a record stays valid when the program's text changes.
        value = self._answer("call", [name, function], _NOT_CALLED, [name, source, function])
        if value is _NOT_CALLED:
            raise OSError(f"{name}.{function}: not answered")
        return value


Transport = Callable[[list[str], float], CommandResult]  # (argv, timeout) -> the command's result on the host
Ask = Callable[[str, float], Any]  # (a packed batch, timeout) -> its answers, decoded JSON; HostError when it cannot


def one_command_each(transport: Transport, name: str) -> Ask:
    """An Ask that runs host_answers.py once per batch through `transport` (`python3 -c SOURCE BATCH`): for
    connections that cannot keep a program running between rounds (testinfra's podman and ansible backends)."""

    def ask(packed: str, timeout: float) -> Any:
        result = transport(answers_argv("python3", packed), timeout)
        if result.rc == COMMAND_NOT_FOUND:
            raise HostError(f"{name}: python3 is missing on the host (doctor needs it)")
        try:
            return json.loads(result.stdout)
        except ValueError:
            detail = (result.stderr.strip().splitlines() or [f"exit code {result.rc}"])[-1]
            raise HostError(f"{name}: cannot read the host: {detail}") from None

    return ask


class BatchedHost(AnswerHost):
    """A remote host asked through `ask`, in batches. Outside in_rounds() (a single read), a question
    without an answer is asked at once, alone."""

    def __init__(self, ask: Ask, name: str) -> None:
        super().__init__(name=name)
        self._ask = ask
        self._speculating = False
        self.round_trips = 0

    def fetch(self, questions: dict[str, tuple[str, list[Any]]]) -> None:
        """Ask the host these questions in one round; their answers join the known ones."""
        batch = [[qkey, op, args] for qkey, (op, args) in questions.items()]
        longest = max((args[1] for _, op, args in batch if op == "run"), default=10.0)
        answers = self._ask(host_answers.pack(batch), longest + ROUND_GRACE)
        self.round_trips += 1
        if not isinstance(answers, dict):
            raise HostError(f"{self.name}: cannot read the host: its answer is not a JSON object")
        with self._lock:
            self.answers.update(answers)

    def learn(self, qkey: str, op: str, call_args: list[Any]) -> None:
        if not self._speculating:
            self.fetch({qkey: (op, call_args)})

    def in_rounds(self, work: Callable[[], T]) -> T:
        """`work` (reads of this host only, no other effect) run until a round asks nothing new; its last
        result, in which every question had the host's answer. Inside a round, `work` simply runs."""
        if self._speculating:
            return work()
        for _ in range(MAX_ROUNDS):
            self.unanswered = {}
            self._speculating = True
            try:
                result = work()
            finally:
                self._speculating = False
            if not self.unanswered:
                return result
            self.fetch(self.unanswered)
        return work()  # what is still unanswered is asked question by question
