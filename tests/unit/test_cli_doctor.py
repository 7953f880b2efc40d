"""`alumet-setup doctor` as a user runs it: exit codes, one-line errors, JSON on stdout only."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from alumet_setup import __version__


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "alumet_setup", *args], capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.mark.processes
def test_version():
    result = cli("--version")
    assert result.returncode == 0
    assert __version__ in result.stdout


@pytest.mark.processes
@pytest.mark.parametrize("command", [[], ["doctor"], ["install"], ["uninstall"], ["config", "render"]])
def test_help_on_every_command(command):
    result = cli(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout


@pytest.mark.processes
def test_doctor_json_goes_to_stdout_alone_and_the_exit_code_says_ready():
    result = cli("doctor", "--json")
    assert result.returncode in (0, 1), result.stderr
    document = json.loads(result.stdout)
    host = document["hosts"][0]
    assert result.returncode == (0 if host["ready"] else 1)
    assert result.stderr == ""


@pytest.mark.processes
def test_doctor_restricted_to_one_plugin_judges_only_that_plugin():
    result = cli("doctor", "--json", "--plugin", "csv")
    document = json.loads(result.stdout)
    assert list(document["hosts"][0]["plugins"]) == ["csv"]


@pytest.mark.processes
def test_list_checks_names_every_check():
    result = cli("doctor", "--list-checks")
    assert result.returncode == 0
    ids = [line.split()[0] for line in result.stdout.splitlines()]
    assert "kernel.perf_event_paranoid" in ids and "procfs.hidepid" in ids


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["doctor", "--bogus"], "No such option"),
        (["doctor", "--plugin", "rapl,quantum"], "unknown plugin quantum"),
        (["doctor", "--only-check", "nope.nope"], "unknown check nope.nope"),
        (["doctor", "--config", "/nonexistent/alumet.toml"], "no such file"),
        (["frobnicate"], "No such command"),
    ],
)
@pytest.mark.processes
def test_bad_input_is_one_line_exit_2_no_traceback(args, message):
    result = cli(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("alumet-setup: error: ")
    assert message in lines[0]


@pytest.mark.processes
def test_invalid_toml_config_is_a_usage_error(tmp_path):
    bad = tmp_path / "alumet-config.toml"
    bad.write_text("[plugins.rapl\npoll_interval = ")
    result = cli("doctor", "--config", str(bad))
    assert result.returncode == 2
    assert "not valid TOML" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.processes
def test_text_report_has_no_orphan_or_duplicate_or_lines():
    """`or:` only follows fix commands, and never repeats one (here: agent.binary, config.file, perf probe)."""
    result = cli("doctor", "-v", "--agent", "/etc/passwd")
    assert result.returncode in (0, 1), result.stderr
    lines = result.stdout.splitlines()
    for index, line in enumerate(lines):
        if line.strip().startswith("or: "):
            before = lines[index - 1].strip()
            assert before.startswith(("fix: ", "1. ", "2. ", "3. ", "4. ")), (before, line)
            assert line.strip().removeprefix("or: ") not in before, (before, line)
    assert any(line.strip() == "fix: alumet-setup install --only agent" for line in lines), result.stdout


def test_colours_follow_the_terminal_conventions() -> None:
    """--color decides; auto colours a terminal unless NO_COLOR (any non-empty value) or TERM=dumb (issue 25)."""
    import io

    from alumet_setup.terminal import use_color

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert use_color("auto", Tty(), {"TERM": "xterm"}) is True
    assert use_color("auto", Tty(), {"TERM": "xterm", "NO_COLOR": "1"}) is False
    assert use_color("auto", Tty(), {"TERM": "dumb"}) is False
    assert use_color("auto", io.StringIO(), {}) is False  # a pipe
    assert use_color("always", io.StringIO(), {"NO_COLOR": "1"}) is True
    assert use_color("never", Tty(), {}) is False


@pytest.mark.processes
def test_color_always_paints_the_report_and_never_does_not() -> None:
    painted = cli("doctor", "--only-check", "system.os", "--color", "always")
    plain = cli("doctor", "--only-check", "system.os", "--color", "never")
    assert "\x1b[" in painted.stdout and "\x1b[" not in plain.stdout


@pytest.mark.processes
def test_list_checks_json_names_what_each_check_blocks() -> None:
    checks = {c["id"]: c for c in json.loads(cli("doctor", "--list-checks", "--json").stdout)["checks"]}
    assert checks["rapl.access"]["blocks"] == ["rapl", "energy-attribution"]
    assert checks["config.file"]["degrades"] == ["energy-attribution"]
