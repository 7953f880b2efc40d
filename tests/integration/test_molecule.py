"""One test per molecule scenario: `molecule test -s NAME` over the shared molecule/config.yml.

The scenarios run in the background from the start of the session (tests/conftest.py,
tests/bed/scenarios.py); each test waits for its own and shows the end of its log on failure.
"""

from __future__ import annotations

import pytest
import scenarios  # tests/bed, put on sys.path by tests/conftest.py

TIMEOUT_S = 3600  # from the scenario's start


@pytest.mark.molecule
@pytest.mark.containers
@pytest.mark.parametrize("scenario", scenarios.NAMES)
def test_scenario(scenario: str, molecule_runs: dict[str, scenarios.Run]) -> None:
    run = molecule_runs[scenario]
    returncode = run.wait(TIMEOUT_S)
    # Printed for -s/-rA runs; on failure the assertion message carries the log tail, which pytest shows.
    print(f"molecule scenario {scenario}: rc={returncode}, log {run.log}")
    if returncode != 0:
        pytest.fail(f"molecule test -s {scenario} failed (rc={returncode}, full log {run.log}):\n{run.tail()}",
                    pytrace=False)
