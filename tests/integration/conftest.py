"""The molecule scenarios start in the background as soon as the test bed is up, when any of their tests is
selected: they run beside the other integration tests, and test_molecule.py only waits for each."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import scenarios  # tests/bed, put on sys.path by tests/conftest.py


@pytest.fixture(scope="session")
def molecule_runs(bed: dict[str, str], bed_env: dict[str, str]) -> Iterator[dict[str, scenarios.Run]]:
    with scenarios.running(bed_env) as runs:
        yield runs


@pytest.fixture(scope="session", autouse=True)
def _molecule_in_background(request: pytest.FixtureRequest) -> None:
    if any(item.path.name == "test_molecule.py" for item in request.session.items):
        # No test bed here: the molecule tests skip (or fail, with ALUMET_BED_REQUIRED) on their own.
        with contextlib.suppress(pytest.skip.Exception):
            request.getfixturevalue("molecule_runs")
