"""config.file: the Alumet configuration parses and uses only what alumet-agent 0.9.5 accepts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from checkhelpers import FIXTURES, evaluate

from alumet_setup.doctor.findings import Options, Status
from alumet_setup.hostside import alumet_schema, profiles
from alumet_setup.targets.hosts import LocalHost

HOST = LocalHost(root=os.path.join(FIXTURES, "config"))


def config(name: str, explicit: bool = False) -> Options:
    return Options(config_path=f"/{name}", config_explicit=explicit)


def test_good() -> None:
    f = evaluate(HOST, "config.file", config("good.toml"))
    assert f.status is Status.OK, f.detail
    assert f.data["plugins"] == ["rapl", "csv"]  # enabled ones only: perf says enabled = false


def test_missing_is_a_warning_unless_asked_for() -> None:
    f = evaluate(HOST, "config.file", config("absent.toml"))
    assert f.status is Status.WARN and f.install_step == "config"
    assert evaluate(HOST, "config.file", config("absent.toml", explicit=True)).status is Status.FAIL


def test_unknown_plugin_section() -> None:
    f = evaluate(HOST, "config.file", config("unknown-section.toml"))
    assert f.status is Status.FAIL and f.install_step == "config"
    assert f.data["problems"] == ["plugins.nvidia: unknown plugin nvidia (alumet-agent 0.9.5 refuses to start)"]


def test_csv_needs_every_key() -> None:
    f = evaluate(HOST, "config.file", config("csv-partial.toml"))
    assert f.status is Status.FAIL
    assert "plugins.csv: missing key use_unit_display_name" in f.data["problems"]
    assert "plugins.csv: missing key csv_late_delimiter" in f.data["problems"]
    # `enable` is the agent's switch, not a csv key; `delimiter` is a typo serde would reject.
    assert [p for p in f.data["problems"] if "unknown key" in p] == ["plugins.csv: unknown key delimiter"]


def test_broken_toml() -> None:
    f = evaluate(HOST, "config.file", config("broken.toml"))
    assert f.status is Status.FAIL and "not valid TOML" in f.detail


def test_schema_knows_the_plugins_alumet_setup_configures() -> None:
    assert {"rapl", "perf", "procfs", "nvml", "energy-attribution", "csv", "cgroups", "socket-control"} \
        <= alumet_schema.PLUGINS
    assert len(alumet_schema.CSV_KEYS) == 6


# ---- alumet.service runs `alumet-agent run`: measurements only exec/watch start are a warning ------------

UNIT = """[Service]
Environment=ALUMET_CONFIG=/etc/alumet/alumet-config.toml
ExecStart=/usr/local/bin/alumet-agent --config /etc/alumet/alumet-config.toml run
StateDirectory=alumet
"""


def service_host(tmp_path: Path, profile: str, unit: str | None = UNIT, enabled: bool = True,
                 text: str | None = None, rapl: bool = True) -> LocalHost:
    (tmp_path / "etc" / "alumet").mkdir(parents=True)
    if rapl:  # the power PMU's sysfs directory, as on an Intel host
        (tmp_path / "sys" / "devices" / "power" / "events").mkdir(parents=True)
        (tmp_path / "sys" / "devices" / "power" / "events" / "energy-pkg").write_text("event=0x02\n")
    (tmp_path / "etc" / "alumet" / "alumet-config.toml").write_text(text or profiles.render(profile))
    if unit is not None:
        systemd = tmp_path / "etc" / "systemd" / "system"
        (systemd / "multi-user.target.wants").mkdir(parents=True)
        (systemd / "alumet.service").write_text(unit)
        if enabled:
            (systemd / "multi-user.target.wants" / "alumet.service").symlink_to("../alumet.service")
    return LocalHost(root=str(tmp_path))


def test_an_exec_profile_run_by_the_enabled_service_is_a_warning(tmp_path: Path) -> None:
    f = evaluate(service_host(tmp_path, "energy-attribution-exec"), "config.file")
    assert f.status is Status.WARN and f.install_step == "config"
    assert f.detail.startswith("/etc/alumet/alumet-config.toml is run by alumet.service (enabled) as "
                               '`alumet-agent run`: plugins.procfs.processes.strategy = "event" measures only')
    assert f.data["service"] == {"unit": "/etc/systemd/system/alumet.service", "enabled": True,
                                 "config": "/etc/alumet/alumet-config.toml"}
    assert f.fix == ("alumet-setup install --only config --set alumet_config_profile=energy-attribution",)


def test_perf_run_by_an_installed_but_disabled_service_is_a_warning_too(tmp_path: Path) -> None:
    f = evaluate(service_host(tmp_path, "rapl-perf", enabled=False), "config.file")
    assert f.status is Status.WARN
    assert "(installed, not enabled)" in f.detail and "plugins.perf measures only" in f.detail


@pytest.mark.parametrize("profile", ["energy-attribution", "rapl", "nvml"])
def test_a_service_profile_run_by_the_service_is_ok(tmp_path: Path, profile: str) -> None:
    f = evaluate(service_host(tmp_path, profile), "config.file")
    assert f.status is Status.OK, f.detail
    assert f.data["service"]["enabled"] is True


def test_without_the_unit_or_with_another_config_an_exec_profile_is_ok(tmp_path: Path) -> None:
    assert evaluate(service_host(tmp_path / "a", "rapl-perf", unit=None), "config.file").status is Status.OK
    other = UNIT.replace("--config /etc/alumet/alumet-config.toml", "--config /etc/alumet/other.toml")
    f = evaluate(service_host(tmp_path / "b", "rapl-perf", unit=other), "config.file")
    assert f.status is Status.OK and f.data["service"]["config"] == "/etc/alumet/other.toml"


def test_variables_come_from_the_services_environment_when_it_runs_the_file(tmp_path: Path) -> None:
    text = profiles.render("rapl").replace('"alumet-output.csv"', '"${STATE_DIRECTORY}/${ALUMET_TEST_NOPE}.csv"')
    f = evaluate(service_host(tmp_path, "rapl", text=text), "config.file")
    assert f.status is Status.FAIL
    assert f.data["problems"] == ["env var substitution failed: the environment variable ALUMET_TEST_NOPE does not "
                                  "exist (the agent substitutes ${...} anywhere in the file, comments included; "
                                  "write \\${ for a literal)"]


# ---- no RAPL (a VM): the rapl plugin stops the agent at start-up --------------------------------------


def test_a_rapl_profile_run_by_the_enabled_service_without_rapl_fails(tmp_path: Path) -> None:
    f = evaluate(service_host(tmp_path, "energy-attribution", rapl=False), "config.file")
    assert f.status is Status.FAIL and f.install_step == "config"
    assert "has no RAPL: the agent stops at start-up" in f.detail and "(enabled)" in f.detail
    assert f.fix == ("alumet-setup install --only config --set alumet_config_profile=procfs",
                     "sudo systemctl restart alumet.service")
    assert evaluate(service_host(tmp_path / "off", "rapl", rapl=False, enabled=False), "config.file").status \
        is Status.WARN


def test_without_rapl_the_procfs_profile_or_no_service_is_ok(tmp_path: Path) -> None:
    assert evaluate(service_host(tmp_path / "a", "procfs", rapl=False), "config.file").status is Status.OK
    assert evaluate(service_host(tmp_path / "b", "rapl", rapl=False, unit=None), "config.file").status is Status.OK


def test_an_output_the_service_cannot_write_fails_only_when_the_service_runs_the_file(tmp_path: Path) -> None:
    text = profiles.render("rapl", {"output_path": "/var/log/alumet-output.csv"})
    f = evaluate(service_host(tmp_path / "a", "rapl", text=text), "config.file")
    assert f.status is Status.FAIL and f.install_step == "config"
    assert "alumet.service can write only under /var/lib/alumet" in f.detail
    assert evaluate(service_host(tmp_path / "b", "rapl", text=text, unit=None), "config.file").status is Status.OK
