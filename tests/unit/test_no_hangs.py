"""Doctor always finishes: an exception reaches whoever waits, a hung command or connection is cut."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import sshd  # tests/bed, put on sys.path by tests/conftest.py
from checkhelpers import FIXTURES, ScriptedHost, done, stand_in
from hostile import cli, dict_bomb, list_bomb

from alumet_setup.doctor.findings import Context, Status
from alumet_setup.targets import connection
from alumet_setup.targets.connection import TestinfraHost
from alumet_setup.targets.hosts import CommandResult, HostError, LocalHost
from alumet_setup.threads import in_background


def test_an_exception_in_the_background_reaches_the_waiter() -> None:
    def boom() -> None:
        raise ValueError("broken")

    with pytest.raises(ValueError, match="broken"):
        in_background(boom).result(timeout=5)  # before: never set, the waiter waited for ever


def test_a_check_whose_background_command_raises_is_an_error_finding(monkeypatch: pytest.MonkeyPatch) -> None:
    """kernel.perf_probe as root runs setpriv in the background: a HostError there used to hang doctor."""
    import json

    stand_in(monkeypatch, "agent.binary", Status.OK, path="/usr/local/bin/alumet-agent",
             real_path="/opt/alumet/bin/alumet-agent")
    stand_in(monkeypatch, "agent.capabilities", Status.OK, effective=["cap_perfmon"], has_perfmon=True)
    event = {"ok": True, "errno": 0, "error": "", "event": "cycles"}
    as_root = json.dumps({"uid": 0, "own": event, "cpu_wide": event, "rapl": None})

    def script(argv: Sequence[str]) -> CommandResult:
        if argv[0] == "setpriv":
            raise HostError("fixture: connection lost")
        return done(argv, as_root)

    host = ScriptedHost(os.path.join(FIXTURES, "rapl-intel-2s"), script)
    host.which = lambda command, extra_dirs=(): f"/usr/bin/{command}"  # type: ignore[method-assign]
    finding = in_background(lambda: Context(host).evaluate("kernel.perf_probe")).result(timeout=20)
    assert finding.status is Status.ERROR and "connection lost" in finding.detail


@pytest.mark.processes
def test_a_local_command_that_outlives_its_timeout_is_cut_with_its_children(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    start = time.monotonic()
    # The background sleep keeps stdout open: killing sh alone would leave it running (and the pipe open).
    result = LocalHost().run(["sh", "-c", f"sleep 30 & echo $! > {pid_file}; sleep 30"], timeout=1)
    assert result.rc == 124 and "timed out after 1s" in result.stderr
    assert time.monotonic() - start < 10
    child = int(pid_file.read_text())
    for _ in range(50):  # killed with its process group: gone (or a zombie) within moments
        if not _alive(child):
            break
        time.sleep(0.1)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


class _Silent:
    """A testinfra backend that never answers, as a stalled ssh connection does."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def run(self, command: str) -> None:
        self.release.wait(60)


def test_a_remote_call_that_never_answers_is_a_host_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection, "REMOTE_GRACE", 0.5)
    backend = _Silent()
    host = TestinfraHost(backend, name="stalled")
    try:
        with pytest.raises(HostError, match=r"stalled: no answer within 1\.5 s \(connection hung\)"):
            host.run(["true"], timeout=1)
        start = time.monotonic()
        with pytest.raises(HostError, match="connection hung"):  # later calls fail at once
            host.run(["cat", "/etc/os-release"])
        assert time.monotonic() - start < 1
    finally:
        backend.release.set()


@pytest.fixture
def silent_port() -> Iterator[int]:
    with sshd.silent_port() as port:
        yield port


@pytest.mark.processes
def test_doctor_over_ssh_to_a_host_that_never_answers_finishes(silent_port: int) -> None:
    run = subprocess.run([sys.executable, "-m", "alumet_setup", "doctor", "--host", f"root@127.0.0.1:{silent_port}"],
                         capture_output=True, text=True, timeout=90, check=False, stdin=subprocess.DEVNULL)
    assert run.returncode == 2, run.stdout + run.stderr
    assert run.stderr == f"alumet-setup: error: root@127.0.0.1:{silent_port}: connection timed out\n"


DICT_BOMB, LIST_BOMB = dict_bomb(), list_bomb()


@pytest.mark.parametrize(("setting", "value"), [
    ("alumet_agent_environment", DICT_BOMB),  # a dict setting
    ("prereqs_packages_extra", LIST_BOMB),  # a list of str
    ("alumet_group_members", LIST_BOMB),  # a list checked against FORMATS
])
@pytest.mark.processes
def test_an_alias_bomb_in_a_setting_is_one_line_within_a_second(setting: str, value: str) -> None:
    """Before: validation passed, then hashing the settings for the fast path expanded 9**7 values (the CLI
    hung, its memory growing by about 45 MB/s). hostile.cli bounds the CLI's time and memory: a hang fails."""
    from alumet_setup.hostside import resources
    from alumet_setup.playbook.settings import SettingError, load_specs, parse_settings

    specs = load_specs(resources.bundled("roles"))
    start = time.monotonic()
    with pytest.raises(SettingError, match=r"its YAML aliases expand to more than 10000 values \(an alias bomb\?\)"):
        parse_settings([f"{setting}={value}"], specs)
    assert time.monotonic() - start < 1
    run = cli("install", "--check", "--host", "lab01", "--set", f"{setting}={value}")
    assert run.returncode == 2 and run.stdout == "", run.stderr[-2000:]
    assert run.stderr == (f"alumet-setup: error: --set {setting}: its YAML aliases expand to more than 10000 values "
                          "(an alias bomb?): not loaded\n")
