"""Help that applies (issue 15): each command lists only the options that mean something there."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from alumet_setup.cli import cli


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "alumet_setup", *args], capture_output=True, text=True,
                          timeout=60, check=False)


def help_of(*command: str) -> str:
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0, result.output
    return result.output


def test_uninstall_does_not_offer_the_build_options():
    text = help_of("uninstall")
    assert "--build-host" not in text and "--build-on-each" not in text
    assert "--check" in text and "--diff" in text  # uninstall edits files: fstab, sysctl.d


def test_install_still_offers_the_build_options():
    text = help_of("install")
    assert "--build-host" in text and "--build-on-each" in text


@pytest.mark.processes
def test_uninstall_refuses_a_build_option_as_usage_error():
    result = run("uninstall", "--build-on-each")
    assert result.returncode == 2
    assert result.stderr.startswith("alumet-setup: error: No such option") and "--build-on-each" in result.stderr


def test_doctor_names_its_check_filter_only_check_and_hides_the_old_name():
    text = help_of("doctor")
    assert "--only-check" in text
    assert "--check " not in text and "--check\n" not in text


@pytest.mark.processes
def test_doctor_old_check_name_still_works_with_one_warning_line():
    result = run("doctor", "--check", "system.os", "--json")
    assert result.returncode in (0, 1), result.stderr
    assert result.stderr == "alumet-setup: warning: doctor --check is deprecated, use --only-check\n"
    assert '"system.os"' in result.stdout


@pytest.mark.processes
def test_doctor_only_check_runs_only_those_checks():
    import json

    result = run("doctor", "--only-check", "system.os,system.kernel", "--json")
    assert result.returncode in (0, 1), result.stderr
    ids = [c["id"] for c in json.loads(result.stdout)["hosts"][0]["checks"]]
    assert ids == ["system.os", "system.kernel"]


@pytest.mark.processes
def test_the_command_alone_prints_the_help_and_exits_0():
    result = run()
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: alumet-setup")
    assert "doctor" in result.stdout and "install" in result.stdout
    assert result.stderr == ""


def test_inventory_help_says_an_executable_inventory_is_run():
    for command in ("doctor", "install", "uninstall"):
        text = " ".join(help_of(command).split())
        assert "An executable inventory is run on this machine" in text, command
        assert "INI or YAML)" not in text
