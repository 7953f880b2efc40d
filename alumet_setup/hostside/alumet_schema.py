"""What alumet-agent v0.9.5 accepts in its configuration file, and how it reads it.

The one home of these rules: doctor, `config render|validate`, the templates' tests read them here.
docs/alumet-upstream.md lists every upstream source (alumet-dev/alumet at tag v0.9.5, humantime 2.3.0,
regex 1.12.4, evalexpr 11.3.1) and the test that holds each rule; read it before changing a rule.
"""

from __future__ import annotations

import itertools
import os
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

# humantime 2.3.0's units (src/duration.rs, `impl FromStr for Unit`), in nanoseconds.
_SECOND = 1_000_000_000
_UNITS: dict[str, int] = {
    **dict.fromkeys(("nanos", "nsec", "ns"), 1),
    **dict.fromkeys(("usec", "us", "\u00b5s"), 1_000),
    **dict.fromkeys(("millis", "msec", "ms"), 1_000_000),
    **dict.fromkeys(("seconds", "second", "secs", "sec", "s"), _SECOND),
    **dict.fromkeys(("minutes", "minute", "min", "mins", "m"), 60 * _SECOND),
    **dict.fromkeys(("hours", "hour", "hr", "hrs", "h"), 3600 * _SECOND),
    **dict.fromkeys(("days", "day", "d"), 86400 * _SECOND),
    **dict.fromkeys(("weeks", "week", "wk", "wks", "w"), 7 * 86400 * _SECOND),
    **dict.fromkeys(("months", "month", "M"), 2_630_016 * _SECOND),  # 30.44 days
    **dict.fromkeys(("years", "year", "yr", "yrs", "y"), 31_557_600 * _SECOND),  # 365.25 days
}
_U64 = 2**64 - 1
# Rust's char::is_whitespace (Unicode White_Space); Python's str.isspace() differs (\x1c-\x1f).
_RUST_WS = frozenset("\t\n\x0b\x0c\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000"
                     + "".join(map(chr, range(0x2000, 0x200B))))


class DurationError(ValueError):
    """What humantime's parse_duration says about a string it refuses."""


def _is_unit_char(c: str) -> bool:
    return "a" <= c <= "z" or "A" <= c <= "Z" or c == "\u00b5"


class _Humantime:
    """A line-by-line port of humantime 2.3.0's `Parser` (src/duration.rs): same loops, same errors."""

    def __init__(self, src: str):
        self.src, self.i = src, 0
        self.sec = self.nsec = 0

    def next(self) -> str | None:
        if self.i >= len(self.src):
            return None
        self.i += 1
        return self.src[self.i - 1]

    def first_digit(self) -> int | None:
        off = self.i
        while (c := self.next()) is not None:
            if "0" <= c <= "9":
                return ord(c) - 48
            if c not in _RUST_WS:
                raise DurationError(f"expected a number at {off}")
        return None

    def fraction(self, off: int) -> tuple[int, int, int]:
        numerator, denominator, zeros = 0, 1, True
        while (c := self.next()) is not None:
            if "0" <= c <= "9":
                denominator *= 10
                if c != "0" or not zeros:
                    zeros = False
                    numerator = numerator * 10 + ord(c) - 48
                if max(numerator, denominator) > _U64:
                    raise DurationError("number is too large")
            elif _is_unit_char(c):
                break
            elif c not in _RUST_WS:
                raise DurationError(f"invalid character at {off}")
            off = self.i
        if denominator == 1:
            raise DurationError(f"invalid character at {off}")  # "1." : no digit after the separator
        return numerator, denominator, off

    def add(self, n: int, frac: tuple[int, int] | None, unit: str) -> None:
        if unit not in _UNITS:
            raise DurationError(f"time unit needed, for example {n}sec or {n}ms" if not unit
                                else f"unknown time unit {unit!r}")
        scale = _UNITS[unit]
        total = n * scale
        if (scale >= _SECOND and n * (scale // _SECOND) > _U64) or (scale < _SECOND and total > _U64):
            raise DurationError("number is too large")
        if frac is not None:
            numerator, denominator = frac
            if scale == 1:
                raise DurationError("values below 1ns are not supported")
            # humantime multiplies in u64 then divides exactly: a remainder is a precision error.
            unit_num = scale if scale < 3600 * _SECOND else scale // _SECOND
            if numerator * unit_num > _U64 or (numerator * unit_num) % denominator:
                raise DurationError("number is too large or cannot be represented without a lack of precision")
            part = numerator * unit_num // denominator
            total += part if scale < 3600 * _SECOND else part * _SECOND
        sec, nsec = divmod(total, _SECOND)
        nsec += self.nsec
        sec += self.sec + nsec // _SECOND
        if sec > _U64:
            raise DurationError("number is too large")
        self.sec, self.nsec = sec, nsec % _SECOND

    def parse(self) -> int:
        n = self.first_digit()
        if n is None:
            raise DurationError("value was empty")
        while True:
            frac, off = None, self.i
            while (c := self.next()) is not None:
                if "0" <= c <= "9":
                    n = n * 10 + ord(c) - 48
                    if n > _U64:
                        raise DurationError("number is too large")
                elif _is_unit_char(c):
                    break
                elif c == ".":
                    numerator, denominator, off = self.fraction(off)
                    frac = (numerator, denominator)
                    break
                elif c not in _RUST_WS:
                    raise DurationError(f"invalid character at {off}")
                off = self.i
            start, off, next_n = off, self.i, None
            while (c := self.next()) is not None:
                if "0" <= c <= "9":
                    next_n = ord(c) - 48
                    break
                if c in _RUST_WS:
                    break
                if not _is_unit_char(c):
                    raise DurationError(f"invalid character at {off}")
                off = self.i
            self.add(n, frac, self.src[start:off])
            if next_n is None:
                next_n = self.first_digit()
                if next_n is None:
                    return self.sec * _SECOND + self.nsec
            n = next_n


def parse_duration(text: str) -> int:
    """Nanoseconds, as humantime 2.3.0's parse_duration reads `text`; DurationError when it refuses it.

    Fractions ("1.5s"), several parts with or without spaces ("1m 30s", "1m30s"), and a bare "0".
    """
    if text == "0":
        return 0
    return _Humantime(text).parse()


def is_duration(value: object) -> bool:
    """True for the strings humantime_serde accepts (it reads strings only: a TOML number is refused)."""
    if not isinstance(value, str):
        return False
    try:
        parse_duration(value)
    except DurationError:
        return False
    return True


# ---- a small declarative schema: only what the checks below need ---------------------------------

@dataclass(frozen=True)
class Scalar:
    kind: str  # a key of _EXPECTED
    choices: tuple[str, ...] = ()

    def check(self, value: Any, path: str, errors: list[str]) -> None:
        problem = _KIND_CHECKS[self.kind](value)
        if problem is not None:
            errors.append(f"{path}: {problem}")
        elif self.choices and value not in self.choices:
            errors.append(f"{path}: expected one of {', '.join(map(repr, self.choices))}, got {_show(value)}")


def _simple(kind: str, test: Any) -> Any:
    return lambda value: None if test(value) else f"expected {_EXPECTED[kind]}, got {_show(value)}"


def _duration_problem(value: Any) -> str | None:
    expected = f"expected {_EXPECTED['duration']}, got {_show(value)}"
    if not isinstance(value, str):
        return expected
    try:
        parse_duration(value)
    except DurationError as exc:
        return f"{expected} (humantime 2.3.0: {exc})"
    return None


def _interval_problem(value: Any) -> str | None:
    """A trigger's interval: the agent's trigger builder refuses zero, and rapl unwraps that refusal (a panic)."""
    if (problem := _duration_problem(value)) is not None:
        return problem
    return None if parse_duration(value) > 0 else f"expected {_EXPECTED['interval']}, got {_show(value)}"


def _string_list_problem(value: Any) -> str | None:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return None
    return f"expected {_EXPECTED['string_list']}, got {_show(value)}"


def _names_problem(parse: Any, what: str) -> Any:
    """A list of perf event names, each checked by a port of plugins/perf/src/events.rs."""
    def problem(value: Any) -> str | None:
        if (listed := _string_list_problem(value)) is not None:
            return listed
        bad = [name for name in value if parse(name) is None]
        return f"invalid {what} event in config: {', '.join(map(repr, bad))} (known: see docs/alumet-upstream.md)" \
            if bad else None
    return problem


def _meminfo_problem(value: Any) -> str | None:
    if (listed := _string_list_problem(value)) is not None:
        return listed
    bad = [name for name in value if not name.isascii()]
    # convert_to_snake_case (plugins/procfs/src/lib.rs) asserts ASCII: the agent would panic.
    return f"entries must be ASCII (the agent panics otherwise), got {', '.join(map(repr, bad))}" if bad else None


def _regex_problem(value: Any) -> str | None:
    if not isinstance(value, str):
        return f"expected {_EXPECTED['string']}, got {_show(value)}"
    problem = rust_regex_problem(value)
    # serde_regex.rs calls Regex::new(..).unwrap(): an invalid regex panics the agent at start.
    return f"invalid regex {value!r}: {problem} (the agent panics on it)" if problem else None


_EXPECTED = {
    "duration": 'a duration such as "1s" or "500ms"',
    "bool": "true or false",
    "char": "a string of exactly one character",
    "string": "a string",
    "int": "a non-negative integer",
    "u32": "an integer from 0 to 4294967295",
    "u16": "an integer from 0 to 65535",
    "i32": "an integer from -2147483648 to 2147483647",
    "number": "a number",
    "interval": 'a duration above zero such as "1s" or "500ms"',
    "string_list": "a list of strings",
    "attribute": "a string, number or boolean",
}

def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    return repr(value)


# ---- perf event names: plugins/perf/src/events.rs (parse_hardware, parse_software, parse_cache) -----
# Matched after Rust's to_ascii_uppercase; any other name is "invalid ... event in config".
PERF_HARDWARE_EVENTS: frozenset[str] = frozenset({
    "CPU_CYCLES", "INSTRUCTIONS", "CACHE_REFERENCES", "CACHE_MISSES", "BRANCH_INSTRUCTIONS", "BRANCH_MISSES",
    "BUS_CYCLES", "STALLED_CYCLES_FRONTEND", "STALLED_CYCLES_BACKEND", "REF_CPU_CYCLES",
})
PERF_SOFTWARE_EVENTS: frozenset[str] = frozenset({
    "PAGE_FAULTS", "CONTEXT_SWITCHES", "CPU_MIGRATIONS", "PAGE_FAULTS_MIN", "PAGE_FAULTS_MAJ", "ALIGNMENT_FAULTS",
    "EMULATION_FAULTS", "CGROUP_SWITCHES",
})
PERF_CACHE_IDS = ("L1D", "L1I", "LL", "DTLB", "ITLB", "BPU", "NODE")
PERF_CACHE_OPS = ("READ", "WRITE", "PREFETCH")
PERF_CACHE_RESULTS = ("ACCESS", "MISS")


def _ascii_upper(name: str) -> str:
    # Rust's to_ascii_uppercase: str.upper() would also map non-ASCII letters ("\u017f" -> "S").
    return "".join(chr(ord(c) - 32) if "a" <= c <= "z" else c for c in name)


def perf_hardware_name(name: str) -> str | None:
    """The canonical (metric) name of a hardware event, None when parse_hardware refuses it."""
    upper = _ascii_upper(name)
    return upper if upper in PERF_HARDWARE_EVENTS else None


def perf_software_name(name: str) -> str | None:
    upper = _ascii_upper(name)
    return upper if upper in PERF_SOFTWARE_EVENTS else None


def perf_cache_name(name: str) -> str | None:
    """`<cache>_<op>_<result>`, split in three at the first two underscores as parse_cache does."""
    parts = [_ascii_upper(p) for p in name.split("_", 2)]
    if len(parts) != 3 or parts[0] not in PERF_CACHE_IDS or parts[1] not in PERF_CACHE_OPS \
            or parts[2] not in PERF_CACHE_RESULTS:
        return None
    return "_".join(parts)


# ---- exe_regex: what Rust's regex crate (1.12, Regex::new) refuses -----------------------------------
def rust_regex_problem(pattern: str) -> str | None:
    """Why Rust's Regex::new refuses `pattern`, or None. An empty pattern is upstream's "no filter".

    Asked of the crate itself: paula embeds regex 1.12.3 / regex-syntax 0.8.10 / regex-automata 0.4.14, the
    agent regex 1.12.4 / 0.8.11 / 0.4.14, with Regex::new's default limits in both (docs/alumet-upstream.md).
    """
    if pattern == "":
        return None
    try:
        import paula  # here, not at import time: doctor compiles a regex only when a configuration has one
    except ImportError:  # the collection run by an Ansible without it: alumet-setup's templates have none
        return "cannot be judged here: the Python package paula (Rust's regex crate) is not installed"
    try:
        paula.Regex(pattern)
    except ValueError as exc:
        # regex-syntax's message is a drawing of the pattern, then "error: WHAT" on its last line.
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        return lines[-1].removeprefix("error: ") if lines else "refused"
    return None


_KIND_CHECKS: dict[str, Any] = {
    "duration": _duration_problem,
    "bool": _simple("bool", lambda v: isinstance(v, bool)),
    "char": _simple("char", lambda v: isinstance(v, str) and len(v) == 1),
    "string": _simple("string", lambda v: isinstance(v, str)),
    "int": _simple("int", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0),
    "u32": _simple("u32", lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 0xFFFF_FFFF),
    "u16": _simple("u16", lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 0xFFFF),
    "i32": _simple("i32", lambda v: isinstance(v, int) and not isinstance(v, bool) and -(2**31) <= v < 2**31),
    # serde reads an f64 from a TOML integer as well as from a float.
    "number": _simple("number", lambda v: isinstance(v, int | float) and not isinstance(v, bool)),
    "interval": _interval_problem,
    "string_list": _string_list_problem,
    "attribute": _simple("attribute", lambda v: isinstance(v, str | int | float | bool)),
    "regex": _regex_problem,
    "meminfo": _meminfo_problem,
    "perf_hardware": _names_problem(perf_hardware_name, "hardware"),
    "perf_software": _names_problem(perf_software_name, "software"),
    "perf_cache": _names_problem(perf_cache_name, "cache"),
}


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


@dataclass(frozen=True)
class Tagged:
    """A Rust enum as serde reads it from TOML: a table with exactly one key, the variant's name, holding that
    variant's fields; or, where the enum has unit variants, one of their names as a string."""

    variants: Mapping[str, Any]
    names: tuple[str, ...] = ()

    def check(self, value: Any, path: str, errors: list[str]) -> None:
        if isinstance(value, str) and self.names:
            Scalar("string", self.names).check(value, path, errors)
            return
        if isinstance(value, dict) and len(value) == 1:
            [(variant, item)] = value.items()
            if variant in self.variants:
                self.variants[variant].check(item, f"{path}.{variant}", errors)
                return
        wanted = [*map(repr, self.names), f"a table with one key of {', '.join(self.variants)}"]
        errors.append(f"{path}: expected {' or '.join(wanted)}, got {_show(value)}")


DURATION, BOOL, CHAR, STRING = Scalar("duration"), Scalar("bool"), Scalar("char"), Scalar("string")
MEMORY_MODE = Scalar("string", ("quick", "slow_but_accurate"))
# Every source's poll_interval makes its trigger, whose builder refuses zero: rapl and procfs's kernel, memory and
# network sources unwrap that refusal (a panic), the others fail to start (docs/alumet-upstream.md).
INTERVAL = Scalar("interval")

_RAPL = Table({"poll_interval": INTERVAL, "flush_interval": DURATION, "no_perf_events": BOOL}, strict=True)

# `enabled` has a serde default in every procfs sub-table; none of them denies unknown fields.
_PROCFS = Table(
    {
        "kernel": Table({"poll_interval": INTERVAL}, {"enabled": BOOL}),
        "memory": Table({"poll_interval": INTERVAL, "metrics": Scalar("meminfo")}, {"enabled": BOOL}),
        "network": Table({"poll_interval": INTERVAL}, {"enabled": BOOL}),
        "processes": Table(
            {
                "refresh_interval": DURATION,
                "groups": TableList(Table(
                    {"exe_regex": Scalar("regex"), "poll_interval": INTERVAL, "flush_interval": DURATION,
                     "memory_mode": MEMORY_MODE},
                    {"pid": Scalar("u32"), "ppid": Scalar("u32")},  # u32 in the agent
                )),
                "events": Table({"poll_interval": INTERVAL, "flush_interval": DURATION, "memory_mode": MEMORY_MODE}),
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
# An empty `formulas` table is valid upstream: the plugin then adds no transform.
_ENERGY_ATTRIBUTION = Table({"formulas": Named(_FORMULA)})

_CSV = Table(
    {key: (CHAR if key.endswith("delimiter") else STRING if key == "output_path" else BOOL) for key in CSV_KEYS},
    strict=True,
)
_PERF = Table(
    {"poll_interval": INTERVAL, "flush_interval": DURATION, "hardware_events": Scalar("perf_hardware"),
     "software_events": Scalar("perf_software"), "cache_events": Scalar("perf_cache")},
    strict=True,
)
_NVML = Table(
    {"poll_interval": INTERVAL, "flush_interval": DURATION, "mode": Scalar("string", ("full", "minimal"))},
    {"skip_failed_devices": BOOL},
    strict=True,
)


# The other plugins of the binary: their keys, which are required (no serde default), the simple types, and
# whether they deny unknown keys. docs/alumet-upstream.md names each one's Config struct.
U16, STRINGS, NUMBER = Scalar("u16"), Scalar("string_list"), Scalar("number")
_SOCKET_CONTROL = Table({"socket_path": STRING}, strict=True)
_RELAY_CLIENT = Table(
    {"buffer_max_length": Scalar("int"), "buffer_timeout": DURATION,
     "retry": Table({"max_times": U16, "initial_delay": DURATION, "max_delay": DURATION}, strict=True)},
    {"client_name": STRING, "relay_server": STRING},
    strict=True,
)
_RELAY_SERVER = Table({"address": STRING}, strict=True)
_PROMETHEUS_EXPORTER = Table(
    {"host": STRING, "prefix": STRING, "suffix": STRING, "port": U16, "add_attributes_to_labels": BOOL},
    strict=True,
)
_INFLUXDB = Table(
    {"host": STRING, "token": STRING, "org": STRING, "bucket": STRING,
     "attributes_as": Scalar("string", ("tag", "field"))},
    {"attributes_as_tags": STRINGS, "attributes_as_fields": STRINGS},
    strict=True,
)
_MONGODB = Table(
    {"host": STRING, "port": U16, "database": STRING, "collection": STRING},
    {"username": STRING, "password": STRING},
    strict=True,
)
_OPENTELEMETRY = Table(
    {"collector_host": STRING, "prefix": STRING, "suffix": STRING, "use_unit_display_name": BOOL,
     "add_attributes_to_labels": BOOL},
    strict=True,
)
_GRACE_HOPPER = Table({"poll_interval": INTERVAL, "root_path": STRING}, strict=True)
_JETSON = Table({"poll_interval": INTERVAL, "flush_interval": DURATION}, strict=True)
_AMD_GPU = Table({"poll_interval": INTERVAL, "flush_interval": DURATION, "skip_failed_devices": BOOL}, strict=True)
_QUARCH = Table(
    {"quarch_ip": STRING, "quarch_port": U16, "qis_port": U16, "java_bin": STRING, "qis_jar_path": STRING,
     "poll_interval": INTERVAL, "flush_interval": DURATION},
    strict=True,
)
# None of the plugins below denies unknown keys: serde ignores them, and so do we.
_K8S = Table(
    {"token_retrieval": Tagged({"kubectl": Table(optional={"service_account": STRING, "namespace": STRING}),
                                "file": STRING}, names=("kubectl", "file", "auto")),
     "poll_interval": INTERVAL, "annotate_containers": BOOL},
    {"k8s_node": STRING, "k8s_api_url": STRING, "annotate_foreign_measurements": BOOL},
)
_SLURM = Table(
    {"poll_interval": INTERVAL, "ignore_non_jobs": BOOL,
     "jobs_monitoring_level": Scalar("string", ("job", "step", "substep", "task"))},
    {"cgroupv1_refresh_interval": DURATION, "add_source_in_pause_state": BOOL, "annotate_foreign_measurements": BOOL},
)
_OAR = Table(
    {"oar_version": Scalar("string", ("oar2", "oar3")), "poll_interval": INTERVAL, "jobs_only": BOOL},
    {"annotate_foreign_measurements": BOOL},
)
_CGROUPS = Table({"poll_interval": INTERVAL})
_PROCESS_TO_CGROUP_BRIDGE = Table(
    {"processes_metrics": STRINGS, "merge_similar_cgroups": BOOL, "keep_processed_measurements": BOOL})
_AGGREGATION = Table({"interval": DURATION, "function": Scalar("string", ("Sum", "Mean")), "metrics": STRINGS})
# Its poll_interval only divides the energy (no trigger): zero is not refused.
_ENERGY_ESTIMATION_TDP = Table({"poll_interval": DURATION, "tdp": NUMBER, "nb_vcpu": NUMBER, "nb_cpu": NUMBER})
_ELASTICSEARCH = Table({
    "server_url": STRING, "allow_insecure": BOOL, "index_prefix": STRING, "metric_unit_as_index_suffix": BOOL,
    "auth": Tagged({"api_key": Table({"key": STRING}), "basic": Table({"user": STRING, "password": STRING}),
                    "basic_file": Table({"file": STRING}), "bearer": Table({"token": STRING})}),
})
_KWOLLECT_INPUT = Table(
    {"site": STRING, "hostname": STRING, "metrics": STRINGS, "login": STRING, "password": STRING},
    {"utc_offset": Scalar("i32")},
)
_KWOLLECT_OUTPUT = Table(
    {"url": STRING, "append_unit_to_metric_name": BOOL, "use_unit_display_name": BOOL},
    {"login": STRING, "password": STRING, "hostname": STRING},
)
_FILTER = Table(optional={"include": STRINGS, "exclude": STRINGS})
# Every key has a serde default (on the whole struct).
_ENERGY_TO_CARBON = Table(optional={
    "mode": Scalar("string", ("intensity_override", "country", "world_avg")),
    "intensity_override": Table({"intensity": NUMBER}), "country": Table({"code": STRING}),
})

# Every plugin of the binary, checked key by key.
PLUGIN_SCHEMAS: dict[str, Table] = {
    "rapl": _RAPL, "procfs": _PROCFS, "energy-attribution": _ENERGY_ATTRIBUTION, "csv": _CSV, "perf": _PERF,
    "nvml": _NVML, "socket-control": _SOCKET_CONTROL, "relay-client": _RELAY_CLIENT, "relay-server": _RELAY_SERVER,
    "prometheus-exporter": _PROMETHEUS_EXPORTER, "influxdb": _INFLUXDB, "mongodb": _MONGODB,
    "opentelemetry": _OPENTELEMETRY, "grace-hopper": _GRACE_HOPPER, "jetson": _JETSON, "amd-gpu": _AMD_GPU,
    "quarch": _QUARCH, "k8s": _K8S, "slurm": _SLURM, "oar": _OAR, "cgroups": _CGROUPS,
    "process-to-cgroup-bridge": _PROCESS_TO_CGROUP_BRIDGE, "aggregation": _AGGREGATION,
    "energy-estimation-tdp": _ENERGY_ESTIMATION_TDP, "elasticsearch": _ELASTICSEARCH,
    "kwollect-input": _KWOLLECT_INPUT, "kwollect-output": _KWOLLECT_OUTPUT, "filter": _FILTER,
    "energy-to-carbon": _ENERGY_TO_CARBON,
}
# Plugins of the binary whose configuration cannot be judged here, each with why; validate passes them and
# unjudged_plugins() says so. Every name of PLUGINS is in PLUGIN_SCHEMAS or here (a unit test holds it).
UNJUDGED_PLUGINS: dict[str, str] = {}
# The agent's own keys outside `[plugins]` (GeneralConfig does not deny unknown keys).
_GENERAL = Table(optional={"max_update_interval": DURATION, "source_channel_size": Scalar("int")})


def plugin_switch(section: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """What the agent does to a `[plugins.X]` table (extract_plugins_config, core/alumet/src/agent/config.rs):
    it removes `enabled`, or else `enable` (true when neither), and hands the rest to the plugin."""
    rest = dict(section)
    for key in PLUGIN_SWITCH_KEYS:
        if key in rest:
            return rest.pop(key), rest
    return True, rest


def _enabled_sections(doc: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    plugins = doc.get("plugins", {})
    if not isinstance(plugins, dict):
        return {}
    sections = {}
    for name, section in plugins.items():
        if isinstance(section, dict):
            enabled, rest = plugin_switch(section)
            if enabled is True:
                sections[name] = rest
    return sections


def validate(doc: Mapping[str, Any]) -> list[str]:
    """Every reason the pinned alumet-agent would refuse this configuration, each naming its key path.

    An empty list means valid. Checks what serde would: names, required keys, unknown keys where the
    plugin denies them, the cheap types (durations, booleans, one-character delimiters), what the
    plugins parse at start (perf event names, exe_regex, formula expressions), the metrics the formulas
    name, and metrics two plugins would register with another type or unit.
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
        enabled, rest = plugin_switch(section)
        if not isinstance(enabled, bool):
            errors.append(f"{path}.enabled: expected true or false, got {_show(enabled)}")
            continue
        # A disabled plugin is never initialised, so the agent never reads the rest of its section.
        if enabled and name in PLUGIN_SCHEMAS:
            schema = PLUGIN_SCHEMAS[name]
            if schema.strict and all(key in section for key in PLUGIN_SWITCH_KEYS):
                errors.append(f"{path}: both enabled and enable: the agent removes only enabled, and {name} "
                              "refuses the key enable it is then given")
                rest.pop("enable")
            schema.check(rest, path, errors)
            if name == "energy-attribution":
                _check_formulas(rest, path, errors)
            if name == "filter" and "include" in rest and "exclude" in rest:  # refused by the plugin's init
                errors.append(f"{path}: include and exclude together: the filter plugin refuses both")
    if not errors:
        errors.extend(metric_conflicts(doc))
        errors.extend(_formula_metric_errors(doc))
    return errors


def unjudged_plugins(doc: Mapping[str, Any]) -> list[str]:
    """One line for each enabled plugin whose configuration validate() cannot judge, naming it and why."""
    return [f"plugins.{name}: not judged: {UNJUDGED_PLUGINS[name]}"
            for name in _enabled_sections(doc) if name in UNJUDGED_PLUGINS]


def _check_formulas(section: Mapping[str, Any], path: str, errors: list[str]) -> None:
    formulas = section.get("formulas")
    if not isinstance(formulas, dict):
        return
    for name, formula in formulas.items():
        if not isinstance(formula, dict):
            continue
        ref, per_resource = formula.get("ref"), formula.get("per_resource")
        if isinstance(ref, str) and isinstance(per_resource, dict) and ref not in per_resource:
            errors.append(f"{path}.formulas.{name}.ref: {ref!r} is not a per_resource timeseries")
        expr = formula.get("expr")
        if isinstance(expr, str) and (reason := evalexpr_build_error(expr)):
            errors.append(f"{path}.formulas.{name}.expr: evalexpr cannot compile {expr!r}: {reason}")


# ---- formula expressions: the energy-attribution plugin compiles each `expr` at start -----------------
# A port of evalexpr 11.3.1's build_operator_tree (tokenizer, then tree building), which the plugin calls
# before the pipeline runs: what it refuses stops the agent. Variables are bound only when the formula is
# evaluated, so unknown names, operand counts and types are not build errors and are not checked here.

class ExprError(ValueError):
    """evalexpr's reason, worded as its Display writes it."""


# Rust's char::is_whitespace (the White_Space property): Python's isspace() also takes U+001C..U+001F.
_RUST_WHITESPACE = frozenset("\t\n\x0b\x0c\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000"
                             + "".join(chr(c) for c in range(0x2000, 0x200B)))
_OPERATOR_CHARS = "+-*/%^=!><&|"
_ASSIGNMENTS = frozenset({"=", "+=", "-=", "*=", "/=", "%=", "^=", "&&=", "||="})
# Tokens that can end / start an operand: identifiers and values ("id", "value"), and the braces.
_RIGHTSIDED = frozenset({")", "id", "value"})
_LEFTSIDED = frozenset({"(", "id", "value"})


def _rust_f64(text: str) -> bool:
    """Whether Rust's `str::parse::<f64>` reads `text` (its grammar: no underscores, no spaces)."""
    import re

    return re.fullmatch(r"(?i)[+-]?(inf|infinity|nan|([0-9]+|[0-9]+\.[0-9]*|[0-9]*\.[0-9]+)(e[+-]?[0-9]+)?)",
                        text) is not None


def _rust_i64(literal: str) -> bool:
    """evalexpr's parse_dec_or_hex: decimal, or hexadecimal after `0x`, within i64."""
    digits, base = (literal[2:], 16) if literal.startswith("0x") else (literal, 10)
    allowed = "0123456789abcdefABCDEF" if base == 16 else "0123456789"
    if not digits or any(c not in allowed for c in digits) or len(digits.lstrip("0")) > 19:
        return False  # (more digits than any i64 has: spares int() its limit on long strings)
    return int(digits, base) < 2**63


def _partial_tokens(expr: str) -> list[tuple[str, str]]:
    """(kind, text) pieces: kind is "lit" (a run of other characters), "ws", "str", or the character."""
    out: list[tuple[str, str]] = []
    i, n = 0, len(expr)
    while i < n:
        c = expr[i]
        i += 1
        if c == '"':
            text = []
            while True:
                if i >= n:
                    raise ExprError("Found an unmatched double quote '\"'")
                c = expr[i]
                i += 1
                if c == '"':
                    break
                if c == "\\":
                    if i >= n:
                        raise ExprError("Illegal escape sequence: \\")
                    if expr[i] not in '"\\':
                        raise ExprError(f"Illegal escape sequence: \\{expr[i]}")
                    c = expr[i]
                    i += 1
                text.append(c)
            out.append(("str", "".join(text)))
            continue
        if c == "/" and i < n and expr[i] == "/":  # a line comment
            end = expr.find("\n", i)
            i = n if end < 0 else end + 1
            continue
        if c == "/" and i < n and expr[i] == "*":
            end = expr.find("*/", i + 1)
            if end < 0:
                raise ExprError("Error: unmatched inline comment")
            i = end + 2
            continue
        if c in _OPERATOR_CHARS or c in "(),;":
            out.append((c, c))
        elif c in _RUST_WHITESPACE:
            out.append(("ws", " "))
        elif out and out[-1][0] == "lit":
            out[-1] = ("lit", out[-1][1] + c)
        else:
            out.append(("lit", c))
    return out


def _tokens(expr: str) -> list[tuple[str, str]]:
    """evalexpr's tokenize: (kind, text), kind an operator, "(", ")", ",", ";", "id" or "value"."""
    parts = _partial_tokens(expr)
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(parts):
        kind, text = parts[i]
        second = parts[i + 1][0] if i + 1 < len(parts) else None
        third = parts[i + 2] if i + 2 < len(parts) else None
        step = 1
        if kind == "ws":
            pass
        elif kind == "str":
            out.append(("value", text))
        elif kind == "lit":
            if _rust_i64(text) or _rust_f64(text) or text in ("true", "false"):
                out.append(("value", text))
            elif second in ("+", "-") and third and third[0] == "lit" and _rust_f64(text + second + third[1]):
                out.append(("value", text + second + third[1]))  # 2.5e-3: the exponent's sign splits a literal
                step = 3
            else:
                out.append(("id", text))
        elif kind in "&|":
            if second is None:
                raise ExprError(f"Found a partial token '{kind}' that should be followed by another partial token.")
            if second != kind:
                shown = f'"{parts[i + 1][1]}"' if second == "str" else parts[i + 1][1]
                raise ExprError(f"Found a partial token '{kind}' that should not be followed by '{shown}'.")
            step = 3 if third and third[0] == "=" else 2
            out.append((kind * 2 + "=" * (step == 3), ""))
        elif kind in "+-*/%^=!><" and second == "=":
            out.append(({"=": "==", "!": "!="}.get(kind, kind + "="), ""))
            step = 2
        else:
            out.append((kind, text))
        i += step
    return out


# Operator: precedence, how many children it takes (None: a sequence takes any), left to right.
_OPERATORS: dict[str, tuple[int, int | None]] = {
    "root": (200, 1), "+": (95, 2), "sub": (95, 2), "neg": (110, 1), "*": (100, 2), "/": (100, 2),
    "%": (100, 2), "^": (120, 2), "==": (80, 2), "!=": (80, 2), ">": (80, 2), "<": (80, 2), ">=": (80, 2),
    "<=": (80, 2), "&&": (75, 2), "||": (70, 2), "!": (110, 1), **dict.fromkeys(_ASSIGNMENTS, (50, 2)),
    ",": (40, None), ";": (0, None), "value": (200, 0), "id": (200, 0), "write": (200, 0), "call": (190, 1),
}
_MISSING_OPERATOR = ("Found an opening parenthesis that is preceded by something that does not take any arguments "
                     "on the right, or found a closing parenthesis that is succeeded by something that does not "
                     "take any arguments on the left.")


class _Node:
    __slots__ = ("arity", "children", "left_to_right", "op", "precedence", "unary")

    def __init__(self, op: str) -> None:
        self.op = op
        self.children: list[_Node] = []
        self.precedence, self.arity = _OPERATORS[op]
        self.unary = self.arity == 1 and op != "root"
        self.left_to_right = op not in ("=", "call")

    def too_many_children(self) -> bool:
        return self.arity is not None and len(self.children) > self.arity


def _goes_below(upper: _Node, node: _Node) -> bool:
    return (upper.precedence < node.precedence or node.unary
            or (upper.precedence == node.precedence and not upper.left_to_right and not node.left_to_right))


def _insert(target: _Node, node: _Node, is_root: bool) -> None:
    """evalexpr's insert_back_prioritized, its tail call as a loop."""
    while True:
        if not (is_root or _goes_below(target, node)):
            raise ExprError("Tried to append a node to another node with higher precedence.")
        if target.arity == 0:
            raise ExprError("Tried to append a node to a leaf node.")
        if len(target.children) != target.arity:
            target.children.append(node)
            return
        last = target.children[-1]
        if _goes_below(last, node):
            target, is_root = last, False
            continue
        if node.arity == 0:
            raise ExprError("Tried to append a node to a leaf node.")
        target.children.pop()
        if target.op == "root" and (target.children or node.op == "root"):
            raise ExprError(_MISSING_OPERATOR)
        if node.op == "root" and (node.children or last.op == "root"):
            raise ExprError(_MISSING_OPERATOR)
        target.children.append(node)
        node.children.append(last)
        return


def _collapse_all_sequences(stack: list[_Node]) -> None:
    if not stack:
        raise ExprError("Found an unmatched closing parenthesis ')'.")
    root = stack.pop()
    while True:
        if root.op == "root":
            if root.too_many_children():
                raise ExprError(_MISSING_OPERATOR)
            stack.append(root)
            return
        if not stack:
            raise ExprError("Found an unmatched closing parenthesis ')'.")
        higher = stack.pop()
        if root.arity is None:
            higher.children.append(root)
            root = higher
        else:
            if root.too_many_children():
                raise ExprError(_MISSING_OPERATOR)
            stack.extend((higher, root))
            return


# Building is quadratic in the depth of the tree (each operator walks down its right edge, as evalexpr's does);
# a real formula is a line long, and a longer one is left unchecked rather than hang doctor.
MAX_CHECKED_EXPR_CHARS = 1000


def evalexpr_build_error(expr: str) -> str | None:
    """Why evalexpr 11.3.1's build_operator_tree refuses `expr`, None when it builds a tree (or when `expr` is
    longer than MAX_CHECKED_EXPR_CHARS: not checked)."""
    if len(expr) > MAX_CHECKED_EXPR_CHARS:
        return None
    try:
        tokens = _tokens(expr)
        stack = [_Node("root")]
        last_rightsided = False
        for index, (kind, _) in enumerate(tokens):
            following = tokens[index + 1][0] if index + 1 < len(tokens) else None
            node: _Node | None
            if kind == "(":
                stack.append(_Node("root"))
                node = None
            elif kind == ")":
                if len(stack) <= 1:
                    raise ExprError("Found an unmatched closing parenthesis ')'.")
                _collapse_all_sequences(stack)
                node = stack.pop() if stack else None
            elif kind == "id":
                node = _Node("write" if following in _ASSIGNMENTS else "call" if following in _LEFTSIDED else "id")
            elif kind == "-":
                node = _Node("sub" if last_rightsided else "neg")
            else:
                node = _Node(kind)
            if node is not None:
                if not stack:
                    raise ExprError("Found an unmatched closing parenthesis ')'.")
                root = stack.pop()
                if node.arity is None:  # a sequence: `,` or `;`
                    if root.op == node.op:
                        root.children.append(_Node("root"))
                        stack.append(root)
                    elif root.op == "root":
                        node.children.extend((root, _Node("root")))
                        stack.extend((_Node("root"), node))
                    elif root.precedence < node.precedence:
                        node.children.extend((root.children.pop(), _Node("root")))
                        stack.extend((root, node))
                    else:
                        while True:  # collapse_root_stack_to
                            if not stack:
                                raise ExprError("Found an unmatched closing parenthesis ')'.")
                            higher = stack.pop()
                            if higher.precedence > node.precedence:
                                higher.children.append(root)
                                root = higher
                            else:
                                stack.append(higher)
                                break
                        node.children.append(root)
                        stack.append(node)
                elif root.arity is None:
                    _insert(root.children[-1], node, True)
                    stack.append(root)
                else:
                    _insert(root, node, True)
                    stack.append(root)
            last_rightsided = kind in _RIGHTSIDED
        _collapse_all_sequences(stack)
        if len(stack) > 1:
            raise ExprError("Found an unmatched opening parenthesis '('.")
    except ExprError as exc:
        return str(exc)
    return None


# ---- metrics: what each plugin registers in start(), read by energy-attribution's formulas ------------
# Each metric is (name, value type, unit); create_metric refuses a name already registered with another
# type or unit ("incompatible"), and the agent stops. Units are written as the agent prints them.
PROCFS_KERNEL_METRICS = (("kernel_cpu_time", "u64", "ms"), ("kernel_context_switches", "u64", "1"),
                         ("kernel_new_forks", "u64", "1"), ("kernel_n_procs_running", "u64", "1"),
                         ("kernel_n_procs_blocked", "u64", "1"))
PROCFS_NETWORK_METRICS = (("network_bytes", "u64", "B"), ("network_packets", "u64", "1"),
                          ("network_packet_drops", "u64", "1"), ("network_errors", "u64", "1"))
PROCFS_PROCESS_METRICS = (("cpu_time_delta", "u64", "ns"), ("cpu_percent", "f64", "%"), ("memory_usage", "u64", "B"))
MEMINFO_METRIC = ("u64", "B")  # every procfs memory entry, converted to bytes
PERF_METRIC = ("u64", "1")
RAPL_METRICS = (("rapl_consumed_energy", "f64", "J"),)
FORMULA_METRIC = ("f64", "J")  # the result of each energy-attribution formula, named after it
NVML_MINIMAL_METRICS = (("nvml_energy_consumption", "f64", "mJ"), ("nvml_instant_power", "u64", "mW"))
NVML_FULL_METRICS = (*NVML_MINIMAL_METRICS, ("nvml_temperature_gpu", "u64", "°C"),
                     ("nvml_gpu_utilization", "u64", "%"), ("nvml_gpu_memory_info", "u64", "B"),
                     ("nvml_decoder_sampling_period", "u64", "µs"), ("nvml_encoder_sampling_period", "u64", "µs"),
                     ("nvml_n_compute_processes", "u64", "1"), ("nvml_n_graphic_processes", "u64", "1"),
                     ("nvml_memory_utilization", "u64", "%"), ("nvml_decoder_utilization", "u64", "%"),
                     ("nvml_encoder_utilization", "u64", "%"), ("nvml_sm_utilization", "u64", "%"))


def meminfo_metric_name(entry: str) -> str:
    """procfs's convert_to_snake_case: "MemTotal" -> "mem_total", "Committed_AS" -> "committed_as"."""
    if len(entry) <= 1:
        return entry
    if "_" in entry:
        return entry.lower()
    out = entry[0].lower()
    for prev, c in itertools.pairwise(entry):
        if "A" <= c <= "Z" and ("a" <= prev <= "z" or "A" <= prev <= "Z"):
            out += "_"
        out += c.lower()
    return out


def _sub(table: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = table.get(key)
    return value if isinstance(value, dict) and value.get("enabled", True) is True else {}


@dataclass(frozen=True)
class Registration:
    """One create_metric call of an enabled plugin: `origin` is the configuration key that makes it."""

    name: str
    value_type: str
    unit: str
    origin: str


def registered_metrics(doc: Mapping[str, Any]) -> tuple[list[Registration], bool]:
    """The metrics the enabled plugins we model register, and whether every enabled plugin is modelled."""
    found: list[Registration] = []
    modelled = True

    def add(origin: str, metrics: Any) -> None:
        found.extend(Registration(name, value_type, unit, origin) for name, value_type, unit in metrics)

    for name, section in _enabled_sections(doc).items():
        if name == "rapl":
            add("plugins.rapl", RAPL_METRICS)
        elif name == "procfs":
            # start() registers them in this order: kernel, memory, network, processes.
            if _sub(section, "kernel"):
                add("plugins.procfs.kernel", PROCFS_KERNEL_METRICS)
            if memory := _sub(section, "memory"):
                entries = memory.get("metrics")
                entries = entries if isinstance(entries, list) else []
                add("plugins.procfs.memory.metrics",
                    ((meminfo_metric_name(m), *MEMINFO_METRIC) for m in entries if isinstance(m, str) and m.isascii()))
            if _sub(section, "network"):
                add("plugins.procfs.network", PROCFS_NETWORK_METRICS)
            if _sub(section, "processes"):
                add("plugins.procfs.processes", PROCFS_PROCESS_METRICS)
        elif name == "perf":
            for key, kind, parse in (("hardware_events", "hardware", perf_hardware_name),
                                     ("software_events", "software", perf_software_name),
                                     ("cache_events", "cache", perf_cache_name)):
                events = section.get(key)
                events = events if isinstance(events, list) else []
                add(f"plugins.perf.{key}",
                    ((f"perf_{kind}_{parse(e)}", *PERF_METRIC) for e in events if isinstance(e, str) and parse(e)))
        elif name == "nvml":
            add("plugins.nvml", NVML_MINIMAL_METRICS if section.get("mode") == "minimal" else NVML_FULL_METRICS)
        elif name == "energy-attribution":
            formulas = section.get("formulas", {})
            for formula in formulas if isinstance(formulas, dict) else ():
                add(f"plugins.energy-attribution.formulas.{formula}", ((formula, *FORMULA_METRIC),))
        elif name != "csv":
            modelled = False
    return found, modelled


def produced_metrics(doc: Mapping[str, Any]) -> set[str] | None:
    """The metric names the enabled plugins register, or None when one of them is a plugin we do not model."""
    found, modelled = registered_metrics(doc)
    return {r.name for r in found} if modelled else None


def metric_conflicts(doc: Mapping[str, Any]) -> list[str]:
    """Metrics registered twice with another type or unit: whichever create_metric comes second fails and
    the agent stops. The same name with the same type and unit is one metric (the registry returns the first)."""
    first: dict[str, Registration] = {}
    errors = []
    for reg in registered_metrics(doc)[0]:
        seen = first.setdefault(reg.name, reg)
        if (seen.value_type, seen.unit) != (reg.value_type, reg.unit):
            errors.append(f"{reg.origin}: metric {reg.name!r} ({reg.value_type}, {reg.unit}) is also registered by "
                          f"{seen.origin} as ({seen.value_type}, {seen.unit}): the agent stops at start (This "
                          f"metric has already been registered: {reg.name}); rename one of them")
    return errors


def _formula_metric_errors(doc: Mapping[str, Any]) -> list[str]:
    section = _enabled_sections(doc).get("energy-attribution")
    metrics = produced_metrics(doc)
    if not section or metrics is None:
        return []
    errors = []
    for formula_name, formula in section.get("formulas", {}).items():
        for group in ("per_resource", "per_consumer"):
            for ident, series in formula.get(group, {}).items():
                metric = series.get("metric")
                if metric not in metrics:
                    errors.append(f"plugins.energy-attribution.formulas.{formula_name}.{group}.{ident}.metric: "
                                  f"could not find metric {metric!r}: no enabled plugin produces it")
    return errors


# ---- how the agent is run: `run` (the service) publishes no start-of-measurement event ---------------
RUN_MODES = ("service", "exec")


def event_only_measurements(doc: Mapping[str, Any]) -> list[str]:
    """What in this configuration measures only the program `alumet-agent exec`/`watch` announces.

    Only exec and watch publish StartConsumerMeasurement (core/alumet/src/agent/exec.rs, watch.rs); under
    `run`, which the service runs, procfs's "event" strategy and the perf plugin measure nothing.
    """
    sections = _enabled_sections(doc)
    found = []
    processes = _sub(sections.get("procfs", {}), "processes")
    if processes.get("strategy") == "event":
        found.append('plugins.procfs.processes.strategy = "event" measures only the program of alumet-agent '
                     'exec/watch: under run (the service) no process is measured; use strategy = "watcher"')
    if "perf" in sections:
        found.append("plugins.perf measures only the program of alumet-agent exec/watch: under run (the service) "
                     "it measures nothing")
    return found


# alumet.service (roles/alumet_service/templates/alumet.service.j2) runs the agent with ProtectSystem=strict
# and PrivateTmp=: the only directory it can write and others can read is its StateDirectory, also its
# working directory, where a relative path lands.
SERVICE_STATE_DIRECTORY = "/var/lib/alumet"


def service_write_problems(doc: Mapping[str, Any]) -> list[str]:
    """The files this configuration makes the agent write where alumet.service cannot: the csv plugin opens
    its output_path at start (plugins/csv), so the agent stops with a read-only file system error."""
    import posixpath

    csv = _enabled_sections(doc).get("csv")
    if csv is None:
        return []
    output = csv.get("output_path", "alumet-output.csv")
    if not isinstance(output, str):
        return []  # validate() says why
    where = posixpath.normpath(posixpath.join(SERVICE_STATE_DIRECTORY, output))
    if where.startswith(SERVICE_STATE_DIRECTORY + "/"):
        return []
    return [f"plugins.csv.output_path = {output!r}: alumet.service can write only under {SERVICE_STATE_DIRECTORY} "
            "(ProtectSystem=strict; its /tmp is private), so the agent would stop at start with a read-only file "
            "system; use a path relative to it, e.g. \"alumet-output.csv\""]


# What systemd puts in a `User=` service's environment (systemd.exec(5), "Environment Variables in Spawned
# Processes"; STATE_DIRECTORY because the unit sets StateDirectory=), besides the unit's Environment= lines.
# Only the names matter to the check; the values are stand-ins.
SYSTEMD_SERVICE_ENVIRONMENT: dict[str, str] = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin", "LANG": "C.UTF-8", "USER": "alumet",
    "LOGNAME": "alumet", "HOME": "/", "SHELL": "/usr/sbin/nologin", "INVOCATION_ID": "0" * 32,
    "JOURNAL_STREAM": "0:0", "SYSTEMD_EXEC_PID": "1", "STATE_DIRECTORY": "/var/lib/alumet",
}


def service_environment(unit_text: str | None, config_path: str) -> dict[str, str]:
    """The environment alumet.service gives the agent: systemd's variables, then the unit's Environment=
    assignments (without a unit: the alumet_service role's, ALUMET_CONFIG)."""
    env = {**SYSTEMD_SERVICE_ENVIRONMENT, "ALUMET_CONFIG": config_path}
    for line in (unit_text or "").splitlines():
        key, _, value = line.strip().partition("=")
        if key == "Environment":
            for item in value.split():
                name, sep, val = item.strip("\"'").partition("=")
                if sep:
                    env[name] = val
    return env


def unit_config_path(unit_text: str) -> str | None:
    """The configuration file a unit hands the agent: ExecStart's `--config FILE`, else ALUMET_CONFIG
    (agent/src/bin/main.rs CommonArgs: `#[arg(long, env = "ALUMET_CONFIG")]`)."""
    for line in unit_text.splitlines():
        key, _, value = line.strip().partition("=")
        if key == "ExecStart":
            words = value.split()
            for flag, following in zip(words, [*words[1:], ""], strict=True):
                if flag == "--config" and following:
                    return following
                if flag.startswith("--config="):
                    return flag.partition("=")[2]
    return service_environment(unit_text, "").get("ALUMET_CONFIG") or None


# ---- ${VAR} substitution, done on the whole file before TOML parsing (substitute_env, agent/config.rs) --

def substitute_env(text: str, env: Mapping[str, str]) -> str:
    """A port of the agent's substitute_env: `${NAME}` -> env[NAME] anywhere (comments too), `\\${` escapes.

    ValueError names the first variable that is missing, or the unclosed `${`.
    """
    nxt = text.find("${")
    if nxt < 0:
        return text
    out: list[str] = []
    rest = text
    while nxt >= 0:
        if nxt == 0 or rest[nxt - 1] != "\\":
            out.append(rest[:nxt])
            rest = rest[nxt:]
            end = rest.find("}")
            if end < 0:
                raise ValueError("wrong use of the substitution syntax, it should be ${ENV_VAR}")
            name = rest[2:end]
            if name not in env:
                raise ValueError(f"the environment variable {name} does not exist (the agent substitutes "
                                 "${...} anywhere in the file, comments included; write \\${ for a literal)")
            out.append(env[name])
            start = end + 1
        else:
            out.append(rest[:nxt - 1] + "$")
            start = nxt + 1
        rest = rest[start:]
        nxt = rest.find("${")
    out.append(rest)
    return "".join(out)


class TomlError(tomllib.TOMLDecodeError):
    """Text that is not a TOML document the agent reads: its syntax, an integer beyond i64, a nesting deeper
    than the document walkers here go. One line."""


# Tables and arrays nest a few levels in a real configuration; those who walk the document recurse once per
# level (the toml crate stops a little deeper on its own).
MAX_TOML_DEPTH = 64
I64 = range(-(2**63), 2**63)  # the toml crate's integers; a literal beyond them is a parse error


def _toml_loads(text: str) -> dict[str, Any]:
    """The agent's TOML: rtoml embeds the toml crate (toml_parser 1.1, TOML 1.1) that alumet-agent parses its
    configuration with (docs/alumet-upstream.md); Python's tomllib is TOML 1.0 and refuses `\\e`, `\\xHH` or
    multi-line inline tables. An Ansible that runs the collection without rtoml renders only alumet-setup's own
    templates, which are TOML 1.0: tomllib reads those alike."""
    try:
        import rtoml  # here, not at import time: doctor reads TOML only when there is a configuration
    except ImportError:
        return tomllib.loads(text)
    try:
        doc = rtoml.loads(text)
    except rtoml.TomlParsingError as exc:  # one line: "REASON at line L column C"
        raise TomlError(" ".join(str(exc).split())) from None
    return doc


def parse_toml(text: str) -> dict[str, Any]:
    """The configuration as the agent's TOML parser reads `text` a user or a host supplied: TomlError (a
    TOMLDecodeError, so callers catch one exception) for whatever it refuses, never another error."""
    try:
        doc = _toml_loads(text)
    except tomllib.TOMLDecodeError:
        raise
    except RecursionError:
        raise TomlError(f"tables or arrays nested too deep (more than {MAX_TOML_DEPTH} levels)") from None
    except ValueError as exc:  # int() of more digits than sys.get_int_max_str_digits() allows
        raise TomlError(f"a value Python cannot read ({str(exc).split(';')[0]})") from None
    pending: list[tuple[Any, int]] = [(doc, 1)]
    while pending:  # those who walk the document recurse too: refuse what they could not walk
        node, depth = pending.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        for child in children:
            if isinstance(child, (dict, list)):
                if depth >= MAX_TOML_DEPTH:
                    raise TomlError(f"tables or arrays nested too deep (more than {MAX_TOML_DEPTH} levels)")
                pending.append((child, depth + 1))
            elif isinstance(child, int) and not isinstance(child, bool) and child not in I64:
                raise TomlError(f"integer {child} out of range: the agent's TOML integers are 64-bit (i64)")
    return doc


def validate_text(text: str, env: Mapping[str, str] | None = None) -> list[str]:
    """`validate` for the text of a file, after the agent's ${VAR} substitution with `env` (default: ours)."""
    try:
        text = substitute_env(text, os.environ if env is None else env)
    except ValueError as exc:
        return [f"env var substitution failed: {exc}"]
    try:
        doc = parse_toml(text)
    except tomllib.TOMLDecodeError as exc:
        return [f"not valid TOML: {exc}"]
    return validate(doc)


def enabled_plugins(doc: Mapping[str, Any]) -> list[str]:
    """The plugins this configuration starts, in file order (the agent starts those present and enabled)."""
    return list(_enabled_sections(doc))
