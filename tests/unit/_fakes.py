"""Test doubles shared by the check tests: scripted command results, and stand-in findings of other checks."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import pytest

from alumet_setup.checks import load_all
from alumet_setup.findings import REGISTRY, CheckSpec, Context, Finding, Options, Status
from alumet_setup.hosts import COMMAND_NOT_FOUND, CommandResult, LocalHost

FIXTURES = os.path.join(os.path.dirname(__file__), os.pardir, "fixtures")

load_all()  # register the real checks first, so a stand-in replaces (not precedes) one


class ScriptedHost(LocalHost):
    """A fixture tree whose commands are answered by `script(argv)`; None means command not found."""

    def __init__(self, root: str, script: Callable[[Sequence[str]], CommandResult | None] = lambda argv: None,
                 path_env: str = "/usr/bin:/bin"):
        super().__init__(root=root, name="fixture", path_env=path_env)
        self.script = script
        self.calls: list[tuple[tuple[str, ...], dict[str, str] | None]] = []

    def run(self, argv: Sequence[str], timeout: float = 10.0, env: dict[str, str] | None = None) -> CommandResult:
        self.calls.append((tuple(argv), env))
        result = self.script(argv)
        return result or CommandResult(tuple(argv), COMMAND_NOT_FOUND, "", f"{argv[0]}: command not found")


def done(argv: Sequence[str], stdout: str = "", rc: int = 0, stderr: str = "") -> CommandResult:
    return CommandResult(tuple(argv), rc, stdout, stderr)


def stand_in(monkeypatch: pytest.MonkeyPatch, check_id: str, status: Status, detail: str = "stand-in",
             fix: str | None = None, **data: object) -> None:
    """Replace another engineer's check by a fixed finding, through the registry (undone after the test)."""
    finding = Finding(status, detail, fix=fix, data=data)
    spec = REGISTRY.get(check_id)
    monkeypatch.setitem(REGISTRY, check_id, CheckSpec(check_id, spec.title if spec else check_id,
                                                      check_id.split(".")[0], lambda ctx: finding))


def evaluate(host: LocalHost, check_id: str, options: Options | None = None) -> Finding:
    return Context(host, options).finding(check_id)


PEERS = ("agent.binary", "agent.capabilities", "kernel.perf_event_paranoid")


@pytest.fixture
def peers(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a checkout where another engineer's check is still a stub, answer for it as the runner would."""
    for check_id in PEERS:
        if check_id not in REGISTRY:
            stand_in(monkeypatch, check_id, Status.ERROR, f"unknown check {check_id}")
