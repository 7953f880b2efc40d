"""A host as doctor saw it, recorded once on real hardware and replayed by unit tests.

    python tests/bed/host_recording.py OUT.json   # doctor on this machine; every question and answer saved

RecordingHost answers as LocalHost does and writes down each question a check asked (file reads, stats,
listings, links, extended attributes, commands) with its answer. ReplayHost answers from such a record:
what was never asked is absent (no file, no command), as on a host that lacks it. Unit tests then run
today's checks against a machine this project cannot keep (a GPU server with RAPL and NVML) without
depending on the machine they run on (tests/unit/test_recorded_hosts.py).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from alumet_setup.hosts import COMMAND_NOT_FOUND, CommandResult, FileStat, LocalHost  # noqa: E402

MAX_TEXT = 256 * 1024  # a check reads small files: a bigger answer is cut rather than kept whole
OPS = ("read_bytes", "exists", "listdir", "stat", "readlink", "realpath", "getxattr", "run", "which")


def _encode(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"bytes": base64.b64encode(value[:MAX_TEXT]).decode()}
    if isinstance(value, FileStat):
        return {"stat": dataclasses.asdict(value)}
    if isinstance(value, CommandResult):
        return {"command": {"rc": value.rc, "stdout": value.stdout[:MAX_TEXT], "stderr": value.stderr[:MAX_TEXT]}}
    return value


def _decode(value: Any, op: str, args: list[Any]) -> Any:
    if isinstance(value, dict) and "bytes" in value:
        return base64.b64decode(value["bytes"])
    if isinstance(value, dict) and "stat" in value:
        return FileStat(**value["stat"])
    if isinstance(value, dict) and "command" in value:
        c = value["command"]
        return CommandResult(tuple(args[0]), c["rc"], c["stdout"], c["stderr"])
    return value


def _key(op: str, args: Sequence[Any]) -> str:
    return json.dumps([op, *args])


class RecordingHost(LocalHost):
    """LocalHost, with every answer written down (thread-safe: checks run concurrently)."""

    def __init__(self) -> None:
        super().__init__()
        self.answers: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _note(self, op: str, args: list[Any], value: Any) -> Any:
        with self._lock:
            self.answers[_key(op, args)] = _encode(value)
        return value

    def _call(self, op: str, args: list[Any], call: Any) -> Any:
        try:
            return self._note(op, args, call())
        except PermissionError:
            self._note(op, args, {"raises": "PermissionError"})
            raise

    def read_bytes(self, path: str) -> bytes | None:
        return self._call("read_bytes", [path], lambda: super(RecordingHost, self).read_bytes(path))

    def exists(self, path: str) -> bool:
        return self._call("exists", [path], lambda: super(RecordingHost, self).exists(path))

    def listdir(self, path: str) -> list[str]:
        return self._call("listdir", [path], lambda: super(RecordingHost, self).listdir(path))

    def stat(self, path: str, follow: bool = True) -> FileStat | None:
        return self._call("stat", [path, follow], lambda: super(RecordingHost, self).stat(path, follow))

    def readlink(self, path: str) -> str | None:
        return self._call("readlink", [path], lambda: super(RecordingHost, self).readlink(path))

    def realpath(self, path: str) -> str:
        return self._call("realpath", [path], lambda: super(RecordingHost, self).realpath(path))

    def getxattr(self, path: str, name: str) -> bytes | None:
        return self._call("getxattr", [path, name], lambda: super(RecordingHost, self).getxattr(path, name))

    def run(self, argv: Sequence[str], timeout: float = 10.0, env: dict[str, str] | None = None) -> CommandResult:
        return self._call("run", [list(argv)], lambda: super(RecordingHost, self).run(argv, timeout, env))

    def which(self, command: str, extra_dirs: Sequence[str] = ()) -> str | None:
        return self._call("which", [command, list(extra_dirs)],
                          lambda: super(RecordingHost, self).which(command, extra_dirs))


class ReplayHost(LocalHost):
    """A recorded host: each question gets the recorded answer; anything never asked is absent."""

    def __init__(self, answers: dict[str, Any], name: str = "recorded") -> None:
        super().__init__(name=name)
        self.answers = answers
        self.unrecorded: list[str] = []  # questions the record has no answer for (today's checks ask more)

    def _answer(self, op: str, args: list[Any], absent: Any) -> Any:
        key = _key(op, args)
        if key not in self.answers:
            self.unrecorded.append(key)
            return absent
        value = self.answers[key]
        if isinstance(value, dict) and value.get("raises") == "PermissionError":
            raise PermissionError(13, "Permission denied (recorded)", args[0])
        return _decode(value, op, args)

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
        return self._answer("run", [list(argv)], absent)

    def which(self, command: str, extra_dirs: Sequence[str] = ()) -> str | None:
        return self._answer("which", [command, list(extra_dirs)], None)


def load(path: Path) -> tuple[ReplayHost, dict[str, Any]]:
    """The replay host and the report doctor gave on the real machine."""
    record = json.loads(path.read_text())
    return ReplayHost(record["answers"], name=record["report"]["host"]), record["report"]


def record(out: Path) -> dict[str, Any]:
    from alumet_setup import doctor

    host = RecordingHost()
    report = doctor.diagnose(host)
    document = {"answers": host.answers, "report": report.to_json()}
    out.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
    return document


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: host_recording.py OUT.json")
    record(Path(sys.argv[1]))
