"""One test per molecule scenario: `molecule test -s NAME` over the shared molecule/config.yml."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted(p.parent.name for p in (ROOT / "molecule").glob("*/molecule.yml"))
LOGS = ROOT / ".cache" / "logs"


@pytest.mark.molecule
@pytest.mark.containers
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario(scenario: str, bed: dict[str, str], bed_env: dict[str, str]) -> None:
    LOGS.mkdir(parents=True, exist_ok=True)
    log = LOGS / f"molecule-{scenario}.log"
    molecule = Path(sys.executable).parent / "molecule"
    cmd = [str(molecule), "-c", "molecule/config.yml", "test", "-s", scenario]
    start = time.monotonic()
    # molecule calls ansible-playbook and pytest from PATH: use this interpreter's; no colours in the log.
    path = f"{molecule.parent}{os.pathsep}{bed_env.get('PATH', '')}"
    env = {**bed_env, "PATH": path, "NO_COLOR": "1", "PY_COLORS": "0", "ANSIBLE_FORCE_COLOR": "0"}
    with log.open("w") as out:
        proc = subprocess.run(
            cmd,
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            timeout=3600,
            check=False,
        )
    elapsed = time.monotonic() - start
    # Printed for -s/-rA runs; on failure the assertion message carries the log tail, which pytest shows.
    print(f"molecule scenario {scenario}: rc={proc.returncode} in {elapsed:.0f} s, log {log}")
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-80:])
        pytest.fail(
            f"molecule test -s {scenario} failed (rc={proc.returncode}, {elapsed:.0f} s, full log {log}):\n{tail}",
            pytrace=False,
        )
