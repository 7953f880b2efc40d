"""`alumet-setup install` on this machine as a normal user: the play escalates with sudo itself (no `sudo
alumet-setup`, whose secure_path misses the virtual environment); sudo wanting a password means a prompt;
no usable sudo (Debian minimal has none) means one line and nothing run. This machine has no sudo and the
tests run as root: a normal user is os.geteuid() patched, sudo a stand-in script on PATH."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from alumet_setup.cli import main
from alumet_setup.playbook import local_become, runner


def _sudo(directory: Path, rc: int, stderr: str = "") -> Path:
    """A stand-in for `sudo -n true`: exits `rc` after printing `stderr`, as sudo does."""
    directory.mkdir(exist_ok=True)
    script = directory / "sudo"
    script.write_text(f"#!/bin/sh\necho '{stderr}' >&2\nexit {rc}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return directory


@pytest.fixture
def normal_user(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # only what the test puts there
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return tmp_path / "bin"


def test_root_never_asks() -> None:
    assert local_become.needs_password(is_root=True) is False


@pytest.mark.processes
def test_sudo_without_password_or_with_one(normal_user: Path) -> None:
    _sudo(normal_user, 0)
    assert local_become.needs_password() is False
    _sudo(normal_user, 1, "sudo: a password is required")
    assert local_become.needs_password() is True


@pytest.mark.parametrize(("sudo", "why"), [
    (None, "sudo is not installed"),
    ((1, "Sorry, user lab may not run sudo on lab01."), "Sorry, user lab may not run sudo on lab01."),
])
@pytest.mark.processes
def test_no_usable_sudo_is_one_line_and_nothing_runs(normal_user: Path, capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     sudo: tuple[int, str] | None, why: str) -> None:
    if sudo is not None:
        _sudo(normal_user, *sudo)
    monkeypatch.setattr(runner, "run_playbook", lambda *_a, **_k: pytest.fail("the play started"))
    with pytest.raises(SystemExit) as caught:
        main(["install", "--only", "sysctl"])
    err = capsys.readouterr().err
    assert caught.value.code == 2
    assert err.splitlines() == [f"alumet-setup: error: escalation to root is impossible on this machine: {why}; "
                                "run alumet-setup as root (no sudo needed), or install sudo and allow this user "
                                "to use it"]


@pytest.mark.processes
def test_sudo_wanting_a_password_prompts_for_it(normal_user: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _sudo(normal_user, 1, "sudo: a password is required")
    seen: dict[str, object] = {}

    def run_playbook(*_args: object, **kwargs: object) -> None:
        seen.update(kwargs)
        raise runner.RunnerError("stop here")

    monkeypatch.setattr(runner, "run_playbook", run_playbook)
    from click.testing import CliRunner

    from alumet_setup.cli import cli

    result = CliRunner().invoke(cli, ["install", "--only", "sysctl"], input="pw-3391\n")
    assert "BECOME password" in result.output
    assert seen["become_password"] == "pw-3391"
