"""`alumet-setup install`: every bad input is one stderr line, exit 2, and ansible-runner never starts."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from alumet_setup.cli import cli, main
from alumet_setup.hostside import resources
from alumet_setup.playbook import runner
from alumet_setup.playbook.settings import SettingError, convert, load_specs, parse_settings


def _never_run(*_args: object, **_kwargs: object) -> None:
    raise AssertionError("ansible-runner started on bad input")


@pytest.fixture
def guard(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "run_playbook", _never_run)


def _error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    with pytest.raises(SystemExit) as caught:
        main(["install", *args])
    out, err = capsys.readouterr()
    assert caught.value.code == 2, err
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("alumet-setup: error: "), err
    return lines[0]


@pytest.mark.usefixtures("guard")
@pytest.mark.parametrize(("args", "expected"), [
    (["--host", "lab01;rm -rf /"], "';' not allowed"),
    (["--host", "-oProxyCommand=x"], "cannot start with '-'"),
    (["--host", "a b"], "' ' not allowed"),
    (["--host", ""], "empty host"),
    (["--host", "h:0"], "port must be a number from 1 to 65535"),
    (["--host", "h:70000"], "port must be a number from 1 to 65535"),
    (["--user", "x;y"], "--user 'x;y': not a valid user name"),
    (["--set", "no_such_setting=1"], "unknown setting no_such_setting ("),
    (["--set", "perf_paranoid_value=7"], "--set perf_paranoid_value=7: must be between -1 and 4"),
    (["--set", "perf_paranoid_value=-2"], "--set perf_paranoid_value=-2: must be between -1 and 4"),
    (["--set", "perf_paranoid_value=two"], "expected an integer"),
    (["--set", "prereqs_install_recommends=maybe"], "expected true or false"),
    (["--set", "novalue"], "expected key=value"),
    (["--only", "prereqs,nope"], "unknown step nope (known: prereqs, rustup, agent"),
    (["--skip", "sysctl", "--skip", "bogus"], "unknown step bogus"),
    (["--only", "agent,group", "--skip", "group"], "step group is both in --only and --skip"),
    (["-i", "/nonexistent/hosts.ini"], "--inventory /nonexistent/hosts.ini: no such file"),
    (["--no-such-option"], "No such option"),
])
def test_bad_input(capsys: pytest.CaptureFixture[str], args: list[str], expected: str) -> None:
    assert expected in _error(capsys, *args)


@pytest.mark.usefixtures("guard")
def test_host_not_in_inventory(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("[lab]\nlab01\n")
    assert "'lab02' is not a host or group of" in _error(capsys, "-i", str(inventory), "--host", "lab02")


@pytest.mark.usefixtures("guard")
def test_uninstall_shares_the_validation(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["uninstall", "--host", "a b"])
    assert caught.value.code == 2 and len(capsys.readouterr().err.splitlines()) == 1


def test_settings_against_the_real_specs() -> None:
    options = load_specs(resources.bundled("roles"))
    assert "perf_paranoid_value" in options and "prereqs_packages_extra" in options
    assert parse_settings(["perf_paranoid_value=-1", "prereqs_install_recommends=yes",
                           "prereqs_packages_extra=htop, jq"], options) == {
        "perf_paranoid_value": -1, "prereqs_install_recommends": True, "prereqs_packages_extra": ["htop", "jq"]}
    with pytest.raises(SettingError, match="not one of"):
        convert(options["perf_paranoid_value"].__class__(name="mode", role="r", choices=("a", "b")), "c")


@pytest.mark.processes
def test_cli_does_not_import_ansible_runner() -> None:
    code = "import sys, alumet_setup.cli; print('ansible_runner' in sys.modules, 'ansible' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2]).stdout
    assert out.split() == ["False", "False"]


TAGGED = """
- hosts: all
  gather_facts: false
  tasks:
    - name: Reach the host
      ansible.builtin.ping:
      tags: [sysctl]
    - name: Show the paranoid value
      ansible.builtin.debug: {msg: "{{ perf_paranoid_value | default(2) }}"}
      tags: [sysctl]
    - name: Not selected
      ansible.builtin.debug: {msg: never}
      tags: [agent]
"""


@pytest.fixture
def tiny_playbook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The real CLI and runner, with a harmless debug-only playbook in place of install.yml."""
    playbook = tmp_path / "install.yml"
    playbook.write_text(TAGGED)
    monkeypatch.setattr(resources, "playbook", lambda _name: playbook)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return playbook


@pytest.mark.processes
@pytest.mark.usefixtures("tiny_playbook")
def test_install_runs_the_selected_steps(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["install", "--only", "sysctl", "--set", "perf_paranoid_value=1", "--check"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    shown = [line for line in lines if "Show the paranoid value" in line]
    assert len(shown) == 1 and re.fullmatch(r"\[localhost\] ok: Show the paranoid value \([0-9.]+ s\)", shown[0])
    assert not any("Not selected" in line for line in lines)
    assert lines[-1] == "Next: alumet-setup doctor"
    assert "Check mode: nothing was changed." in lines
    assert ["localhost", "2", "0", "0", "0", "0"] in [line.split() for line in lines]  # the summary row
    assert "Would change on localhost: nothing" in lines  # the closing list, before the summary
    assert (tmp_path / "state" / "alumet-setup" / "runs").is_dir()


@pytest.mark.processes
@pytest.mark.usefixtures("tiny_playbook")
def test_become_password_prompt_is_hidden_and_kept_off_disk(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["install", "--only", "sysctl", "-K"], input="Hidden-pw-4471\n")
    assert result.exit_code == 0, result.output
    assert "Hidden-pw-4471" not in result.output
    for path in (tmp_path / "state").rglob("*"):
        if path.is_file():
            assert b"Hidden-pw-4471" not in path.read_bytes(), path


SECRETS = {  # variable -> a value found nowhere else
    "ANSIBLE_BECOME_PASS": "Become-pw-5521", "ANSIBLE_SUDO_PASS": "Sudo-pw-7730", "ANSIBLE_SU_PASS": "Su-pw-1184",
    "ANSIBLE_PRIVATE_KEY_PASSPHRASE": "Phrase-9902", "ANSIBLE_GALAXY_SERVER_X_TOKEN": "Tok-3307",
    "ANSIBLE_VAULT_SECRET_NOTE": "Vault-6648", "ANSIBLE_NET_PASSWORD": "Net-pw-4415", "MY_API_TOKEN": "Api-2290",
    "DB_PASSWORD": "Db-pw-8812", "AWS_SECRET_ACCESS_KEY": "Aws-5573",
}


@pytest.mark.processes
@pytest.mark.usefixtures("tiny_playbook")
def test_secrets_in_the_environment_are_written_to_no_file_of_the_run(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: ansible-runner wrote every ANSIBLE_* variable, ANSIBLE_BECOME_PASS included, into the run
    directory's `command` file. The become password is still honoured: answered at the prompt from memory."""
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("ANSIBLE_ASK_PASS", "False")  # a flag, not a secret: passed on as it was
    with pytest.raises(SystemExit) as caught:  # main(): the user's ANSIBLE_* kept from the tool's own Ansible
        main(["install", "--only", "sysctl"])
    assert caught.value.code == 0
    runs = tmp_path / "state" / "alumet-setup" / "runs"
    files = [p for p in runs.rglob("*") if p.is_file()]
    assert any(p.name == "command" for p in files) and any(p.parent.name == "job_events" for p in files)
    for path in files:
        data = path.read_bytes()
        for name, value in SECRETS.items():
            assert value.encode() not in data, (path, name)
    (command,) = (json.loads(p.read_text()) for p in files if p.name == "command")
    assert "--ask-become-pass" in command["command"]  # the environment's password, answered from memory
    assert command["env"]["ANSIBLE_ASK_PASS"] == "False" and not set(SECRETS) & set(command["env"])


def test_redact_replaces_a_value_in_every_file_under_a_run(tmp_path: Path) -> None:
    (tmp_path / "job_events").mkdir()
    (tmp_path / "stdout").write_text("sudo: Sudo-pw-7730 Sudo-pw-7730\n")
    (tmp_path / "job_events" / "1-x.json").write_text('{"stdout": "Sudo-pw-7730"}')
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.write_text("Sudo-pw-7730")
    (tmp_path / "link").symlink_to(outside)  # a link is not followed
    runner.redact(tmp_path, ["Sudo-pw-7730", ""])
    assert (tmp_path / "stdout").read_text() == "sudo: <redacted> <redacted>\n"
    assert (tmp_path / "job_events" / "1-x.json").read_text() == '{"stdout": "<redacted>"}'
    assert outside.read_text() == "Sudo-pw-7730"


@pytest.mark.processes
@pytest.mark.usefixtures("tiny_playbook")
def test_unreachable_host_exits_2() -> None:
    result = CliRunner().invoke(cli, ["install", "--host", "root@127.0.0.1:1", "--only", "sysctl"])
    assert result.exit_code == 2, result.output  # like doctor: 2 when a host cannot be reached
    assert "127.0.0.1_1: unreachable: connection refused" in result.output
    assert "Next: alumet-setup doctor" not in result.output  # a failed run is not followed by doctor
