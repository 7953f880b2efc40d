"""One real `alumet-setup install` run by the benches: the CLI in a subprocess, timed, its state kept under `work`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed_install(inventory: Path, settings: Sequence[str], work: Path,
                  extra: Sequence[str] = ()) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Seconds the install took and its process; raises RuntimeError with the output's tail when it fails."""
    argv = [sys.executable, "-m", "alumet_setup", "install", "-i", str(inventory),
            *[arg for s in settings for arg in ("--set", s)], *extra]
    env = {**os.environ, "XDG_STATE_HOME": str(work / "state")}
    start = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        raise RuntimeError(f"install failed (rc {proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}")
    return seconds, proc
