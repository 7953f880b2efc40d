"""Shared testinfra fixtures for every molecule scenario's verify step.

`host` is one podman:// testinfra host per molecule instance: commands run through `podman exec`
rather than through Ansible, which the containers.podman connection would otherwise need (slow).
"""

import os
from pathlib import Path

import pytest
import testinfra
import yaml


def _instances() -> list[str]:
    # The podman driver writes no instance config; molecule's inventory names every instance.
    inventory = yaml.safe_load(Path(os.environ["MOLECULE_INVENTORY_FILE"]).read_text())
    return sorted(inventory["all"]["hosts"])


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "host" in metafunc.fixturenames:
        metafunc.parametrize("host", _instances(), indirect=True, scope="module")


@pytest.fixture(scope="module")
def host(request: pytest.FixtureRequest) -> testinfra.host.Host:
    return testinfra.get_host(f"podman://{request.param}")
