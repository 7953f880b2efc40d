"""What Alumet accepts in its configuration file, for the pinned release.

Taken from the alumet-dev/alumet sources at tag v0.9.5: the plugin names are those returned by each
plugin's `name()` among the plugins listed in agent/src/bin/main.rs (`static_plugins!`); the csv keys
are the fields of plugin-csv's `Config` (serde `deny_unknown_fields`, no defaults per key).
Doctor, the config templates and their tests read these constants: keep them in this one place.

Sources read for the schema below (alumet-dev/alumet, tag v0.9.5):
  agent/src/bin/main.rs                       GeneralConfig, UnknownPluginInConfigPolicy::Error, CLI flags
  core/alumet/src/agent/config.rs             `enabled`/`enable` key of every `[plugins.X]` table
  core/alumet/src/agent/plugin.rs             "unknown plugin '...' in configuration"
  plugins/rapl/src/lib.rs                     Config: poll_interval, flush_interval, no_perf_events
  plugins/rapl/src/domains.rs                 domain names with the `_total` suffix (package_total)
  plugins/procfs/src/lib.rs                   config::{Config, KernelStatsMonitoring, MeminfoMonitoring,
                                              NetworkMonitoring, ProcessMonitoring, ProcessMonitoringGroup,
                                              EventModeProcessMonitoring, ProcessWatchStrategy}
  plugins/procfs/src/process.rs               MemoryStatsMode (quick, slow_but_accurate)
  plugins/procfs/src/serde_regex.rs           exe_regex: "" means no filter, the key itself is required
  plugins/energy-attribution/src/formula/config.rs   PluginConfig, FormulaConfig, FormulaTimeseriesConfig
  plugins/energy-attribution/src/formula.rs   `ref` must name a per_resource timeseries
  plugins/csv/src/lib.rs                      Config (six keys, chars for the delimiters)
  plugins/perf/src/lib.rs                     Config: poll_interval, flush_interval, *_events lists
  plugins/nvidia-nvml/src/lib.rs              Config: poll_interval, flush_interval, skip_failed_devices, mode
Durations are parsed by humantime (humantime_serde): integer-and-unit pairs such as "1s", "500ms", "1m 30s".
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

ALUMET_VERSION = "0.9.5"

# `[plugins.NAME]` sections the agent knows; any other name makes it refuse to start.
PLUGINS: frozenset[str] = frozenset({
    # every target
    "csv", "prometheus-exporter", "influxdb", "mongodb", "relay-client", "relay-server", "opentelemetry",
    "aggregation", "energy-attribution", "energy-estimation-tdp", "elasticsearch", "kwollect-input",
    "kwollect-output", "filter", "energy-to-carbon",
    # Linux only
    "socket-control", "k8s", "slurm", "oar", "cgroups", "grace-hopper", "rapl", "perf", "procfs", "nvml",
    "process-to-cgroup-bridge", "jetson", "amd-gpu", "quarch",
})

# A present `[plugins.csv]` must set every one of these, and nothing else.
CSV_KEYS: tuple[str, ...] = (
    "output_path", "force_flush", "append_unit_to_metric_name", "use_unit_display_name", "csv_delimiter",
    "csv_late_delimiter",
)

# Keys the agent itself takes out of every `[plugins.X]` table before the plugin sees it (on/off switch).
PLUGIN_SWITCH_KEYS: tuple[str, ...] = ("enabled", "enable")

# humantime's unit names (humantime 2.x, parse_duration).
_DURATION_UNITS = (
    "nsec|ns|usec|us|µs|msec|ms|seconds|second|secs|sec|s|minutes|minute|mins|min|m|hours|hour|hrs|hr|h|"
    "days|day|d|weeks|week|w|months|month|M|years|year|y"
)
_DURATION = re.compile(rf"\s*(?:\d+\s*(?:{_DURATION_UNITS})\s*)+")


def is_duration(value: object) -> bool:
    """True for the strings humantime accepts ("1s", "500ms", "1m 30s"); no decimals, no bare numbers."""
    return isinstance(value, str) and _DURATION.fullmatch(value) is not None


# ---- a small declarative schema: only what the checks below need ---------------------------------

@dataclass(frozen=True)
class Scalar:
    kind: str  # duration, bool, char, string, int, string_list, attribute
    choices: tuple[str, ...] = ()

    def check(self, value: Any, path: str, errors: list[str]) -> None:
        ok = {
            "duration": is_duration(value),
            "bool": isinstance(value, bool),
            "char": isinstance(value, str) and len(value) == 1,
            "string": isinstance(value, str),
            "int": isinstance(value, int) and not isinstance(value, bool) and value >= 0,
            "string_list": isinstance(value, list) and all(isinstance(v, str) for v in value),
            "attribute": isinstance(value, str | int | float | bool),  # energy-attribution filter values
        }[self.kind]
        if not ok:
            errors.append(f"{path}: expected {_EXPECTED[self.kind]}, got {_show(value)}")
        elif self.choices and value not in self.choices:
            errors.append(f"{path}: expected one of {', '.join(map(repr, self.choices))}, got {_show(value)}")


_EXPECTED = {
    "duration": 'a duration such as "1s" or "500ms"',
    "bool": "true or false",
    "char": "a string of exactly one character",
    "string": "a string",
    "int": "a non-negative integer",
    "string_list": "a list of strings",
    "attribute": "a string, number or boolean",
}


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    return repr(value)


@dataclass(frozen=True)
class Table:
    required: Mapping[str, Any] = field(default_factory=dict)
    optional: Mapping[str, Any] = field(default_factory=dict)
    # deny_unknown_fields upstream: any other key is an error. Otherwise serde ignores it, and so do we.
    strict: bool = False
    extra: Scalar | None = None  # schema of keys not listed (serde flatten into a map)

    def check(self, value: Any, path: str, errors: list[str]) -> None:
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a table, got {_show(value)}")
            return
        for key in self.required:
            if key not in value:
                errors.append(f"{path}: missing key {key}")
        for key, item in value.items():
            rule = self.required.get(key) or self.optional.get(key)
            if rule is not None:
                rule.check(item, f"{path}.{key}", errors)
            elif self.extra is not None:
                self.extra.check(item, f"{path}.{key}", errors)
            elif self.strict:
                errors.append(f"{path}: unknown key {key}")


@dataclass(frozen=True)
class TableList:
    """A TOML array of tables (`[[...]]`)."""

    item: Table

    def check(self, value: Any, path: str, errors: list[str]) -> None:
        if not isinstance(value, list):
            errors.append(f"{path}: expected an array of tables, got {_show(value)}")
            return
        for index, item in enumerate(value):
            self.item.check(item, f"{path}[{index}]", errors)


@dataclass(frozen=True)
class Named:
    """A table of user-named entries, each of the same shape (formulas, timeseries)."""

    item: Any
    non_empty: bool = False

    def check(self, value: Any, path: str, errors: list[str]) -> None:
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a table, got {_show(value)}")
            return
        if self.non_empty and not value:
            errors.append(f"{path}: must define at least one entry")
        for name, item in value.items():
            self.item.check(item, f"{path}.{name}", errors)


DURATION, BOOL, CHAR, STRING = Scalar("duration"), Scalar("bool"), Scalar("char"), Scalar("string")
MEMORY_MODE = Scalar("string", ("quick", "slow_but_accurate"))

_RAPL = Table({"poll_interval": DURATION, "flush_interval": DURATION, "no_perf_events": BOOL}, strict=True)

# `enabled` has a serde default in every procfs sub-table; none of them denies unknown fields.
_PROCFS = Table(
    {
        "kernel": Table({"poll_interval": DURATION}, {"enabled": BOOL}),
        "memory": Table({"poll_interval": DURATION, "metrics": Scalar("string_list")}, {"enabled": BOOL}),
        "network": Table({"poll_interval": DURATION}, {"enabled": BOOL}),
        "processes": Table(
            {
                "refresh_interval": DURATION,
                "groups": TableList(Table(
                    {"exe_regex": STRING, "poll_interval": DURATION, "flush_interval": DURATION,
                     "memory_mode": MEMORY_MODE},
                    {"pid": Scalar("int"), "ppid": Scalar("int")},
                )),
                "events": Table({"poll_interval": DURATION, "flush_interval": DURATION, "memory_mode": MEMORY_MODE}),
            },
            {"enabled": BOOL, "strategy": Scalar("string", ("watcher", "event"))},
        ),
    },
    strict=True,
)

_TIMESERIES = Table(
    {"metric": STRING},
    {"resource_kind": STRING, "resource_id": STRING, "consumer_kind": STRING, "consumer_id": STRING,
     "keep_attributes": BOOL},
    extra=Scalar("attribute"),  # any other key filters on a measurement attribute (domain, kind, ...)
)
_FORMULA = Table({
    "expr": STRING, "ref": STRING, "per_resource": Named(_TIMESERIES, non_empty=True),
    "per_consumer": Named(_TIMESERIES), "retention_time": DURATION,
})
_ENERGY_ATTRIBUTION = Table({"formulas": Named(_FORMULA, non_empty=True)})

_CSV = Table(
    {key: (CHAR if key.endswith("delimiter") else STRING if key == "output_path" else BOOL) for key in CSV_KEYS},
    strict=True,
)
_PERF = Table(
    {"poll_interval": DURATION, "flush_interval": DURATION, "hardware_events": Scalar("string_list"),
     "software_events": Scalar("string_list"), "cache_events": Scalar("string_list")},
    strict=True,
)
_NVML = Table(
    {"poll_interval": DURATION, "flush_interval": DURATION, "mode": Scalar("string", ("full", "minimal"))},
    {"skip_failed_devices": BOOL},
    strict=True,
)

# Plugins whose configuration we check key by key; the others are only checked for their name.
PLUGIN_SCHEMAS: dict[str, Table] = {
    "rapl": _RAPL, "procfs": _PROCFS, "energy-attribution": _ENERGY_ATTRIBUTION, "csv": _CSV, "perf": _PERF,
    "nvml": _NVML,
}
# The agent's own keys outside `[plugins]` (GeneralConfig does not deny unknown keys).
_GENERAL = Table(optional={"max_update_interval": DURATION, "source_channel_size": Scalar("int")})


def validate(doc: Mapping[str, Any]) -> list[str]:
    """Every reason the pinned alumet-agent would refuse this configuration, each naming its key path.

    An empty list means valid. Checks what serde would: names, required keys, unknown keys where the
    plugin denies them, and the cheap types (durations, booleans, one-character delimiters).
    """
    errors: list[str] = []
    _GENERAL.check(dict(doc), "(top level)", errors)
    plugins = doc.get("plugins", {})
    if not isinstance(plugins, dict):
        return [*errors, f"plugins: expected a table, got {_show(plugins)}"]
    for name, section in plugins.items():
        path = f"plugins.{name}"
        if name not in PLUGINS:
            errors.append(f"{path}: unknown plugin {name} (alumet-agent {ALUMET_VERSION} refuses to start)")
            continue
        if not isinstance(section, dict):
            errors.append(f"{path}: expected a table, got {_show(section)}")
            continue
        section = dict(section)
        switches = [section.pop(key) for key in PLUGIN_SWITCH_KEYS if key in section]
        enabled = switches[0] if switches else True
        if not isinstance(enabled, bool):
            errors.append(f"{path}.enabled: expected true or false, got {_show(enabled)}")
            continue
        # A disabled plugin is never initialised, so the agent never reads the rest of its section.
        if enabled and name in PLUGIN_SCHEMAS:
            PLUGIN_SCHEMAS[name].check(section, path, errors)
            if name == "energy-attribution":
                _check_formula_refs(section, path, errors)
    return errors


def _check_formula_refs(section: Mapping[str, Any], path: str, errors: list[str]) -> None:
    formulas = section.get("formulas")
    if not isinstance(formulas, dict):
        return
    for name, formula in formulas.items():
        if not isinstance(formula, dict):
            continue
        ref, per_resource = formula.get("ref"), formula.get("per_resource")
        if isinstance(ref, str) and isinstance(per_resource, dict) and ref not in per_resource:
            errors.append(f"{path}.formulas.{name}.ref: {ref!r} is not a per_resource timeseries")


def validate_text(text: str) -> list[str]:
    """`validate` for TOML text; a syntax error is the one error returned."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return [f"not valid TOML: {exc}"]
    return validate(doc)


def enabled_plugins(doc: Mapping[str, Any]) -> list[str]:
    """The plugins this configuration starts, in file order (the agent starts those present and enabled)."""
    plugins = doc.get("plugins", {})
    if not isinstance(plugins, dict):
        return []
    return [
        name for name, section in plugins.items()
        if isinstance(section, dict) and section.get("enabled", section.get("enable", True)) is True
    ]
