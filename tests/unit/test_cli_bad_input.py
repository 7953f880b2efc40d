"""Bad input through every command: one stderr line, exit 2, and nothing runs against any host."""

from __future__ import annotations

from pathlib import Path

import pytest

from alumet_setup import doctor
from alumet_setup.cli import main
from alumet_setup.hostside import profiles, resources
from alumet_setup.playbook import runner
from alumet_setup.playbook.settings import load_specs
from alumet_setup.targets import connection


def _never(*_args: object, **_kwargs: object) -> None:
    raise AssertionError("a host was contacted or a playbook started on bad input")


@pytest.fixture(autouse=True)
def guard(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "run_playbook", _never)
    monkeypatch.setattr(connection, "connect", _never)
    monkeypatch.setattr(doctor, "diagnose_many", _never)


def _one_line_exit_2(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    with pytest.raises(SystemExit) as caught:
        main(list(args))
    out, err = capsys.readouterr()
    assert caught.value.code == 2, (out, err)
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("alumet-setup: error: "), err
    return lines[0]


@pytest.mark.parametrize("command", ["install", "uninstall", "doctor"])
@pytest.mark.parametrize(("host", "expected"), [
    ("lab01;reboot", "';' not allowed"),
    ("lab01$(id)", "not allowed"),
    ("lab01`id`", "not allowed"),
    ("lab|01", "'|' not allowed"),
    ("-oProxyCommand=touch /tmp/x", "cannot start with '-'"),
    ("root@", "the host part is empty"),
    ("lab01:" + "9" * 5000, "port must be a number from 1 to 65535"),  # before: int()'s ValueError, a traceback
])
def test_malformed_hosts(capsys: pytest.CaptureFixture[str], command: str, host: str, expected: str) -> None:
    assert expected in _one_line_exit_2(capsys, command, "--host", host)


@pytest.mark.parametrize("command", ["install", "uninstall"])
@pytest.mark.parametrize(("setting", "expected"), [
    ("no_such_key=1", "unknown setting no_such_key"),
    ("perf_paranoid_value=5", "must be between -1 and 4"),
    ("perf_paranoid_value=-2", "must be between -1 and 4"),
    ("alumet_config_profile=nope", "'nope' is not one of energy-attribution"),
    ("rustup_allow_insecure_mirror=perhaps", "expected true or false"),
])
def test_bad_settings(capsys: pytest.CaptureFixture[str], command: str, setting: str, expected: str) -> None:
    assert expected in _one_line_exit_2(capsys, command, "--set", setting)


def test_unknown_profile_in_config_render(capsys: pytest.CaptureFixture[str]) -> None:
    assert "unknown profile 'nope' (known: energy-attribution" in _one_line_exit_2(
        capsys, "config", "render", "--profile", "nope")


def test_unknown_plugin_in_doctor(capsys: pytest.CaptureFixture[str]) -> None:
    assert "unknown plugin nope (known: " in _one_line_exit_2(capsys, "doctor", "--plugin", "rapl,nope")


@pytest.mark.parametrize("command", ["install", "uninstall", "doctor"])
def test_missing_inventory(capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str) -> None:
    missing = tmp_path / "nope.ini"
    assert f"--inventory {missing}: no such file" in _one_line_exit_2(capsys, command, "-i", str(missing))


def test_profile_choices_are_the_cli_profiles() -> None:
    # The role's argument spec refuses what profiles.py does not know: one list, checked here.
    assert set(load_specs(resources.bundled("roles"))["alumet_config_profile"].choices) == set(profiles.PROFILES)


@pytest.mark.parametrize("command", ["install", "uninstall"])
@pytest.mark.parametrize(("args", "expected"), [
    (["--only", ",,,"], "--only ',,,': empty step name"),
    (["--only", ""], "--only '': empty step name"),
    (["--skip", " "], "--skip ' ': empty step name"),
    (["--only", "sysctl,"], "--only 'sysctl,': empty step name"),
])
def test_empty_step_lists_are_not_every_step(capsys: pytest.CaptureFixture[str], command: str, args: list[str],
                                             expected: str) -> None:
    assert expected in _one_line_exit_2(capsys, command, *args)


@pytest.mark.parametrize("command", ["install", "uninstall"])
@pytest.mark.parametrize(("setting", "expected"), [
    ("alumet_agent_build_timeout=-5", "--set alumet_agent_build_timeout=-5: must be between 1 and 604800"),
    ("alumet_agent_poll_interval=0", "must be between 1 and 3600"),
    ("alumet_group_name=alumet\nroot", "--set alumet_group_name=alumet\\nroot: control characters"),
    ("hidepid_group=a b", "'a b' is not a Linux group or user name"),
    ("alumet_group_members=ann,-rf", "'-rf' is not a Linux group or user name"),
    ("alumet_agent_git_url=not-a-url", "'not-a-url' is not a git URL"),
    ("alumet_agent_git_url=ext::sh -c touch% /tmp/x", "is not a git URL"),
    ("rustup_update_root=ftp://mirror/rustup", "is not an https:// or http:// URL"),
    ("alumet_agent_version=--upload-pack=touch /tmp/x", "is not a git tag or branch name"),
    ("perf_paranoid_sysctl_file=local.conf", "--set perf_paranoid_sysctl_file=local.conf: expected an absolute path"),
    ("hidepid_fstab=/etc/fstab\0", "control characters"),
    ("alumet_agent_environment={'A B': 1}", "'A B' is not an environment variable name"),
])
def test_settings_checked_beyond_the_argument_specs(capsys: pytest.CaptureFixture[str], command: str, setting: str,
                                                    expected: str) -> None:
    assert expected in _one_line_exit_2(capsys, command, "--set", setting)


@pytest.mark.parametrize(("args", "expected"), [
    (["--skip", "service", "--set", "alumet_service_user=bob"], "--set alumet_service_user: unused: step service "
                                                                 "(role alumet_service) is not run by this install"),
    (["--only", "sysctl", "--set", "alumet_group_name=lab"], "--set alumet_group_name: unused: step group "
                                                              "(role alumet_group) is not run by this install"),
    (["--skip", "config", "--set", "alumet_config_profile=rapl"], "unused: step config (role alumet_config)"),
])
def test_a_setting_no_step_reads_is_refused(capsys: pytest.CaptureFixture[str], args: list[str], expected: str) -> None:
    assert expected in _one_line_exit_2(capsys, "install", *args)


def test_settings_for_the_steps_that_run_are_accepted(tmp_path: Path) -> None:
    from alumet_setup.playbook.settings import check_used, load_specs, parse_settings

    specs = load_specs(resources.bundled("roles"))
    values = parse_settings(["alumet_group_name=lab", "alumet_agent_git_url=ssh://git@example.org/alumet.git",
                             "alumet_agent_git_url=file:///srv/alumet.git",
                             "alumet_agent_build_timeout=7200", "perf_paranoid_sysctl_file=/etc/sysctl.d/a.conf"],
                            specs)
    for command in ("install", "uninstall"):
        check_used(values, specs, resources.playbook(command), command, only=["group", "agent", "sysctl"])


def test_a_service_step_makes_service_settings_used(tmp_path: Path) -> None:
    """The rule reads the playbook's step->role mapping: once a `service` step runs role alumet_service,
    its settings are accepted for runs that include that step, and refused for the others."""
    from alumet_setup.playbook.settings import SettingError, check_used, load_specs

    specs = load_specs(resources.bundled("roles"))
    playbook = tmp_path / "install.yml"
    playbook.write_text("- hosts: all\n  roles:\n    - {role: alumet_group, tags: [group]}\n"
                        "    - {role: alumet_service, tags: [service]}\n")
    check_used(["alumet_service_user"], specs, playbook, "install")
    check_used(["alumet_service_user"], specs, playbook, "install", only=["service"])
    with pytest.raises(SettingError, match=r"unused: step service \(role alumet_service\) is not run"):
        check_used(["alumet_service_user"], specs, playbook, "install", skip=["service"])


# Non-UTF-8 bytes on the command line reach Python as lone surrogates (surrogateescape): b"a\xffb" is "a\udcffb".
@pytest.mark.parametrize("command", ["install", "uninstall"])
@pytest.mark.parametrize(("setting", "expected"), [
    # Before: non-UTF-8 values passed and ansible-playbook failed on its extra vars ("YAML parsing failed").
    ("alumet_config_output_path=a\udcffb", "--set alumet_config_output_path: the value is not UTF-8 text"),  # str
    ("hidepid_fstab=/etc/\udcff", "--set hidepid_fstab: the value is not UTF-8 text"),  # path
    ("perf_paranoid_value=\udcff", "--set perf_paranoid_value: the value is not UTF-8 text"),  # int
    ("alumet_agent_environment={A: \udcff}", "--set alumet_agent_environment: the value is not UTF-8 text"),  # dict
    ("prereqs_packages_extra=a,\udcff", "--set prereqs_packages_extra: the value is not UTF-8 text"),  # list
    ('alumet_agent_environment={A: "\\udcff"}', "'\\udcff' is not UTF-8 text"),  # a YAML escape of one
    ('prereqs_packages_extra=["\\ud83d"]', "'\\ud83d' is not UTF-8 text"),
    # Before: a RecursionError (PyYAML builds documents recursively), a ValueError (a loop of aliases that
    # hashing the settings could not serialise), or values the roles cannot use.
    ("prereqs_packages_extra=" + "[" * 600 + "]" * 600, "YAML nested deeper than 100 levels: not loaded"),
    ("alumet_agent_environment={A: " + "{a: " * 600 + "1" + "}" * 601, "YAML nested deeper than 100 levels"),
    ("capabilities_ptrace=" + "[" * 600 + "]" * 600, "YAML nested deeper than 100 levels"),  # raw
    ("alumet_agent_environment={A: &a [*a]}", "YAML alias *a inside the node it names (a loop): not loaded"),
    ("alumet_agent_environment={A: [&a {b: *a}]}", "YAML alias *a inside the node it names"),
    ("alumet_agent_environment={1: x}", "key 1 is not a string"),
    ("alumet_agent_environment={A: [x, \"a\\nb\"]}", "control characters (newline, NUL...) not allowed"),
    ("prereqs_packages_extra=[[a, b]]", "expected a list (a,b,c or a YAML list of plain values)"),
    ("prereqs_packages_extra=[{a: b}]", "expected a list (a,b,c or a YAML list of plain values)"),
    # Before: PyYAML's int() raised ValueError (more than 4300 digits): a traceback.
    ("alumet_agent_environment={A: " + "9" * 5000 + "}", "a value Python cannot read (Exceeds the limit (4300"),
    ("prereqs_packages_extra=[" + "9" * 5000 + "]", "a value Python cannot read (Exceeds the limit (4300"),
])
def test_hostile_structured_and_undecodable_settings(capsys: pytest.CaptureFixture[str], command: str, setting: str,
                                                    expected: str) -> None:
    line = _one_line_exit_2(capsys, command, "--set", setting)
    assert expected in line and "\udcff" not in line  # shown escaped: the line stays printable


@pytest.mark.parametrize(("setting", "expected"), [
    # Before: exit 2 too, but blaming "the rendered configuration" (tojson writes 😀 as a surrogate pair).
    ("output_path=\U0001f600", "--set output_path: '\\U0001f600' cannot be written into the configuration: "),
    ("csv_delimiter=\U0001f600", "--set csv_delimiter: '\\U0001f600' cannot be written into the configuration: "),
    ("output_path=a\udcffb", "--set output_path: the value is not UTF-8 text"),
    ("csv_delimiter=\udcff", "--set csv_delimiter: the value is not UTF-8 text"),
    ("poll_interval=\udcff", "--set poll_interval: the value is not UTF-8 text"),
])
@pytest.mark.parametrize("others", [[], ["--set", "flush_interval=2s", "--set", "force_flush=false"]])
def test_config_render_blames_the_value_it_cannot_write(capsys: pytest.CaptureFixture[str], setting: str,
                                                        expected: str, others: list[str]) -> None:
    """A value the templates cannot write is named; were they to write it (a filter that writes UTF-8),
    it would be written: either way the rendered file as a whole is never blamed for one value."""
    try:
        main(["config", "render", "--set", setting, *others])
        code: object = 0
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    if code == 0 and "\\U0001f600" in expected:
        assert "\U0001f600" in out and err == ""
        return
    assert code == 2 and out == "" and len(err.splitlines()) == 1, (out, err)
    assert expected in err and "rendered configuration" not in err


NESTED_TOML = {
    # Before: RecursionError and ValueError tracebacks from tomllib; now the toml crate's own refusals.
    "tables": ("a = " + "{b = " * 340 + "1" + "}" * 340 + "\n", "cannot recurse further"),
    "arrays": ("a = " + "[" * 520 + "1" + "]" * 520 + "\n", "cannot recurse further"),
    "integer": ("a = " + "9" * 5000 + "\n", "integer number overflowed"),
    "dotted": (f"[{'.'.join(['t'] * 65)}]\nx = 1\n", "tables or arrays nested too deep"),
}


@pytest.mark.parametrize("case", sorted(NESTED_TOML))
def test_toml_that_python_cannot_parse_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                   case: str) -> None:
    text, expected = NESTED_TOML[case]
    path = tmp_path / "alumet-config.toml"
    path.write_text(text)
    assert f"--config {path}: not valid TOML: {expected}" in _one_line_exit_2(capsys, "doctor", "--config", str(path))
    # config validate judges the file: invalid (exit 1), the reason on stdout, as for any TOML syntax error.
    with pytest.raises(SystemExit) as caught:
        main(["config", "validate", str(path)])
    out, err = capsys.readouterr()
    assert caught.value.code == 1 and err == "" and len(out.splitlines()) == 1, (out, err)
    assert out.startswith(f"{path}: not valid TOML: {expected}")


@pytest.mark.parametrize(("host", "expected"), [
    # Before: tracebacks from testinfra (RuntimeError, ValueError), or a container name read as an option.
    ("foo://x", "--host 'foo://x': unknown connection type 'foo' (testinfra's: local, ssh"),
    ("://", "--host '://': unknown connection type ''"),
    ("paramiko://x", "--host 'paramiko://x': You must install paramiko package"),
    ("winrm://x", "--host 'winrm://x': You must install the pywinrm package"),
    ("ssh://[::1", "--host 'ssh://[::1': not a valid URL (Invalid IPv6 URL)"),
    ("ssh://x:abc", "--host 'ssh://x:abc': not a valid URL (Port could not be cast to integer value"),
    ("ssh://-oProxyCommand=x", "--host 'ssh://-oProxyCommand=x': a host cannot start with '-'"),
    ("ssh://", "--host 'ssh://': empty host"),
    ("ssh://a;b", "--host 'ssh://a;b': ';' not allowed"),
    ("podman://--privileged", "--host 'podman://--privileged': '--privileged' is not a host or container name"),
    ("docker://a b", "'a b' is not a host or container name"),
])
def test_testinfra_urls_are_checked_before_any_connection(capsys: pytest.CaptureFixture[str], host: str,
                                                          expected: str) -> None:
    assert expected in _one_line_exit_2(capsys, "doctor", "--host", host)


@pytest.mark.parametrize(("port", "shown"), [
    ("9" * 5000, "'" + "9" * 40 + "'"),  # before: int()'s ValueError (more than 4300 digits), a traceback
    ("\u00b2", "'\u00b2'"),  # '²'.isdigit() is true, int('²') a ValueError: a traceback
    ("99999", "'99999'"),  # before: handed to ssh ("Bad port")
])
@pytest.mark.processes
def test_inventory_ports_are_checked_before_any_connection(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                           port: str, shown: str) -> None:
    inventory = tmp_path / "hosts.ini"
    inventory.write_text(f"h1 ansible_port={port}\n", encoding="utf-8")
    line = _one_line_exit_2(capsys, "doctor", "-i", str(inventory))
    assert line == (f"alumet-setup: error: --inventory {inventory}: h1: ansible_port {shown} is not a number from 1 "
                    "to 65535")
