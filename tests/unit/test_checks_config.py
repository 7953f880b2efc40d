"""config.file: the Alumet configuration parses and uses only what alumet-agent 0.9.5 accepts."""

from __future__ import annotations

import os

from _fakes import FIXTURES, evaluate

from alumet_setup import alumet_schema
from alumet_setup.findings import Options, Status
from alumet_setup.hosts import LocalHost

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
