"""Unit tests are hermetic unless they say otherwise: a unit test that starts a process (the CLI in a
subprocess, a real command through LocalHost, python3 running a host-side module) must carry the
`processes` marker, so `pytest -m "not processes" tests/unit` is the set that touches nothing outside
the interpreter. The guard below fails an unmarked test that starts one."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def _processes_are_marked(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    if request.node.get_closest_marker("processes") is not None:
        yield
        return
    started: list[Any] = []
    original = subprocess.Popen.__init__

    def noted(self: subprocess.Popen, *args: Any, **kwargs: Any) -> None:
        argv = args[0] if args else kwargs.get("args")
        # ctypes.util.find_library runs `ldconfig -p` when Ansible is first imported (ansible/utils/display.py):
        # a side effect of whichever test imports it first, not a process of the test's own.
        if list(argv or ()) != ["/sbin/ldconfig", "-p"]:
            started.append(argv)
        original(self, *args, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "__init__", noted)
    yield
    if started:
        pytest.fail(f"this unit test started {len(started)} process(es), the first {str(started[0])[:120]!r}: "
                    "mark it (or its module) `processes`, or make it hermetic", pytrace=False)
