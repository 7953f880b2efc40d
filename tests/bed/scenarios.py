"""The molecule scenarios, run in the background: started together, each with its own log, waited for one by
one, and killed (with their containers) whatever happens.

Each scenario has its own container names and ephemeral directory, so they can run at once; one keeps about
one core of a 2-core machine busy (Ansible waits on `podman exec` the rest of the time), so the suite starts
them as soon as the test bed is up (tests/conftest.py) and the rest of the tests run beside them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import yaml

ROOT = Path(__file__).resolve().parents[2]
NAMES = sorted(p.parent.name for p in (ROOT / "molecule").glob("*/molecule.yml"))
LOGS = ROOT / ".cache" / "logs"


@dataclass
class Run:
    scenario: str
    proc: subprocess.Popen[bytes]
    log: Path
    out: IO[bytes]
    started: float
    ended: float | None = None  # set by a watcher thread as soon as the process ends

    def wait(self, timeout: float) -> int | None:
        """The exit status; None if it ran past `timeout` seconds since its start."""
        try:
            return self.proc.wait(timeout=max(1.0, timeout - (time.monotonic() - self.started)))
        except subprocess.TimeoutExpired:
            return None

    def seconds(self) -> float:
        """Its wall time so far, or in all once it ended."""
        return (self.ended or time.monotonic()) - self.started

    def _watch(self) -> None:
        self.proc.wait()
        self.ended = time.monotonic()

    def tail(self, lines: int = 80) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def container_names() -> list[str]:
    """Every platform name of every scenario (a scenario without platforms uses molecule/config.yml's)."""
    names = []
    for path in [ROOT / "molecule" / "config.yml", *(ROOT / "molecule").glob("*/molecule.yml")]:
        names += [p["name"] for p in (yaml.safe_load(path.read_text()) or {}).get("platforms", [])]
    return names


@contextlib.contextmanager
def running(env: Mapping[str, str], names: list[str] | None = None) -> Iterator[dict[str, Run]]:
    """`molecule test -s NAME` for each scenario, all started now; on exit, those still running are killed
    with their children and their containers removed."""
    LOGS.mkdir(parents=True, exist_ok=True)
    molecule = Path(sys.executable).parent / "molecule"
    # molecule calls ansible-playbook and pytest from PATH: use this interpreter's; no colours in the log.
    run_env = {**env, "PATH": f"{molecule.parent}{os.pathsep}{env.get('PATH', '')}", "NO_COLOR": "1",
               "PY_COLORS": "0", "ANSIBLE_FORCE_COLOR": "0"}
    runs: dict[str, Run] = {}
    try:
        for scenario in names or NAMES:
            log = LOGS / f"molecule-{scenario}.log"
            out = log.open("wb")
            # Its own session: a kill takes molecule's ansible-playbook and pytest children too.
            proc = subprocess.Popen([str(molecule), "-c", "molecule/config.yml", "test", "-s", scenario], cwd=ROOT,
                                    env=run_env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
            runs[scenario] = Run(scenario, proc, log, out, time.monotonic())
            threading.Thread(target=runs[scenario]._watch, daemon=True).start()
        yield runs
    finally:
        left = [run for run in runs.values() if run.proc.poll() is None]
        for run in left:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(run.proc.pid, signal.SIGKILL)
            run.proc.wait()
        for run in runs.values():
            run.out.close()
        if left:  # killed before its destroy step: its containers are still there
            subprocess.run(["podman", "rm", "-f", "--ignore", *container_names()], capture_output=True, check=False,
                           env=dict(env))
