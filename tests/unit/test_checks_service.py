"""agent.service: alumet.service, where install put it, is running under systemd; if not, the fix restarts it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from checkhelpers import ScriptedHost, done, evaluate

from alumet_setup.doctor.checks import service
from alumet_setup.doctor.findings import Status
from alumet_setup.targets.hosts import CommandResult

UNIT_TEXT = "[Service]\nExecStart=/usr/local/bin/alumet-agent --config /etc/alumet/alumet-config.toml run\n"


def host(tmp_path: Path, *, unit: bool = True, enabled: bool = True, systemd: bool = True,
         state: str = "active") -> ScriptedHost:
    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/systemctl").write_text("#!/bin/sh\n")
    (root / "usr/bin/systemctl").chmod(0o755)
    if unit:
        (root / "etc/systemd/system/multi-user.target.wants").mkdir(parents=True)
        (root / "etc/systemd/system/alumet.service").write_text(UNIT_TEXT)
        if enabled:
            (root / "etc/systemd/system/multi-user.target.wants/alumet.service").symlink_to(
                "/etc/systemd/system/alumet.service")
    if systemd:
        (root / "run/systemd/system").mkdir(parents=True)

    def script(argv: Sequence[str]) -> CommandResult | None:
        assert list(argv[1:]) == ["is-active", "alumet.service"], argv
        return done(argv, f"{state}\n", rc=0 if state == "active" else 3)

    return ScriptedHost(str(root), script)


def test_no_unit_is_not_available(tmp_path: Path) -> None:
    f = evaluate(host(tmp_path, unit=False), "agent.service")
    assert f.status is Status.NOT_AVAILABLE and "alumet_service_enabled=true" in f.detail


def test_a_unit_without_systemd_running_is_not_available(tmp_path: Path) -> None:
    """A container: the unit file is there, but no systemd reads it (nothing to restart)."""
    h = host(tmp_path, systemd=False)
    assert evaluate(h, "agent.service").status is Status.NOT_AVAILABLE and not h.calls


def test_running_is_ok(tmp_path: Path) -> None:
    f = evaluate(host(tmp_path), "agent.service")
    assert f.status is Status.OK and f.data["active"] == "active" and "enabled" in f.detail


@pytest.mark.parametrize("state", ["inactive", "failed"])
def test_enabled_but_stopped_fails_with_the_restart_and_where_to_read_why(tmp_path: Path, state: str) -> None:
    f = evaluate(host(tmp_path, state=state), "agent.service")
    assert f.status is Status.FAIL and f.fix == (service.RESTART,) and f.install_step == "service"
    assert state in f.detail and "journalctl -u alumet.service" in f.detail


def test_a_crash_loop_is_said_as_such(tmp_path: Path) -> None:
    """Restart=on-failure: between two crashes systemd reports `activating`."""
    f = evaluate(host(tmp_path, state="activating"), "agent.service")
    assert f.status is Status.FAIL and "keeps stopping" in f.detail


def test_installed_but_not_enabled_is_a_warning_whose_fix_enables_and_starts(tmp_path: Path) -> None:
    f = evaluate(host(tmp_path, enabled=False, state="inactive"), "agent.service")
    assert f.status is Status.WARN and f.fix == ("sudo systemctl enable --now alumet.service",)
