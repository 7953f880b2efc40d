"""A host as doctor saw it, recorded once on real hardware and replayed by unit tests.

    python tests/bed/host_recording.py OUT.json   # doctor on this machine; every question and answer saved

RecordingHost answers as a remote host does (alumet_setup/hostside/host_answers.py) and writes down each question
a check asked (file reads, stats, listings, links, extended attributes, commands) with its answer. ReplayHost
(alumet_setup/targets/batched_host.py, AnswerHost) answers from such a record:
what was never asked is absent (no file, no command), as on a host that lacks it. Unit tests then run
today's checks against a machine this project cannot keep (a GPU server with RAPL and NVML) without
depending on the machine they run on (tests/unit/test_recorded_hosts.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from alumet_setup.hostside import host_answers  # noqa: E402
from alumet_setup.targets.batched_host import AnswerHost  # noqa: E402


class RecordingHost(AnswerHost):
    """This machine, answered by the functions a remote host answers with (host_answers.answer); every
    answer is kept in `answers`, the record."""

    def __init__(self) -> None:
        super().__init__(name="localhost")

    def learn(self, qkey: str, op: str, call_args: list[Any]) -> None:
        encoded = host_answers.answer(op, call_args)
        with self._lock:
            self.answers[qkey] = encoded


ReplayHost = AnswerHost  # a recorded host: what was never asked is absent (AnswerHost.unanswered)


def load(path: Path) -> tuple[ReplayHost, dict[str, Any]]:
    """The replay host and the report doctor gave on the real machine."""
    record = json.loads(path.read_text())
    return AnswerHost(record["answers"], name=record["report"]["host"]), record["report"]


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
