"""Alumet configuration profiles: parameters, rendering (Jinja2) and validation before anything is written.

The templates are templates/alumet-config/<profile>.toml.j2. They read the role's variable names,
`alumet_config_<parameter>`, so `config render` and the alumet_config role (through its filter plugin,
alumet_setup/config_filter.py) render them with this module alone: one renderer, one validation. Values
reach the TOML through the `toml` filter (toml_value), never as raw text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import alumet_schema

VARIABLE_PREFIX = "alumet_config_"
TEMPLATE_DIR = "alumet-config"


class ProfileError(ValueError):
    """Bad profile name, parameter or value: a usage error, one line."""


@dataclass(frozen=True)
class Parameter:
    name: str
    kind: str  # alumet_schema.Scalar kinds: duration, bool, char, string; or a choice via `choices`
    default: Any
    help: str
    plugins: tuple[str, ...]  # the parameter exists in a profile that enables one of these
    choices: tuple[str, ...] = ()

    @property
    def variable(self) -> str:
        return VARIABLE_PREFIX + self.name

    def parse(self, text: str, label: str | None = None) -> Any:
        """`--set NAME=TEXT` -> the typed value, checked like the validator would (`label` names it; render()
        names the value the templates cannot write)."""
        from .safe_io import is_utf8

        label = label or f"--set {self.name}"
        if not is_utf8(text):
            raise ProfileError(f"{label}: the value is not UTF-8 text (bytes the terminal or locale could not "
                               "decode)")
        value: Any = text
        if self.kind == "bool":
            lowered = text.strip().lower()
            if lowered not in ("true", "false"):
                raise ProfileError(f"{label}: expected true or false, got {text!r}")
            value = lowered == "true"
        errors: list[str] = []
        alumet_schema.Scalar(self.kind, self.choices).check(value, label, errors)
        if errors:
            raise ProfileError(errors[0])
        if isinstance(value, str):
            toml_value(value)  # a lone surrogate cannot be written as UTF-8: refused here, not by the writer
        return value

    def check(self, value: Any) -> Any:
        """A typed value (the role's variable, YAML-typed) -> the value, or ProfileError naming the variable.
        A string stands for a boolean only as true/false, as `--set` takes it."""
        if self.kind == "bool":
            return value if isinstance(value, bool) else self.parse(str(value), self.variable)
        if not isinstance(value, str):
            raise ProfileError(f"{self.variable}: expected a string, got {value!r}")
        return self.parse(value, self.variable)


# Defaults are upstream's own defaults (alumet_schema lists the sources) except where noted.
PARAMETERS: tuple[Parameter, ...] = (
    Parameter("poll_interval", "duration", "1s", "interval between two measurements (rapl, perf, nvml)",
              ("rapl", "perf", "nvml")),
    Parameter("flush_interval", "duration", "5s", "interval between two flushes to the outputs (rapl, perf, nvml)",
              ("rapl", "perf", "nvml")),
    Parameter("no_perf_events", "bool", False, "rapl: always read powercap, never perf_events", ("rapl",)),
    # Relative on purpose: the service runs in /var/lib/alumet (its StateDirectory), an interactive
    # `alumet-agent exec` writes next to the user, as upstream's default does.
    Parameter("output_path", "string", "alumet-output.csv", "csv: output file (truncated at every start)", ("csv",)),
    Parameter("csv_delimiter", "char", ";", "csv: field delimiter", ("csv",)),
    Parameter("csv_late_delimiter", "char", ",", "csv: delimiter inside the __late_attributes column", ("csv",)),
    Parameter("force_flush", "bool", True, "csv: flush the file after every write", ("csv",)),
    Parameter("append_unit_to_metric_name", "bool", True, "csv: metric column reads e.g. rapl_consumed_energy_J",
              ("csv",)),
    Parameter("use_unit_display_name", "bool", True, "csv: unit display name (J) rather than unique name",
              ("csv",)),
    Parameter("procfs_poll_interval", "duration", "5s", "procfs: kernel, memory and network interval",
              ("procfs",)),
    Parameter("process_poll_interval", "duration", "1s", "procfs: per-process interval (event strategy)",
              ("procfs",)),
    Parameter("process_flush_interval", "duration", "4s", "procfs: per-process flush interval (groups and events)",
              ("procfs",)),
    Parameter("memory_mode", "string", "quick", "procfs: per-process memory statistics", ("procfs",),
              ("quick", "slow_but_accurate")),
    # Upstream has no default. Points reach the transform in batches every flush_interval, so keep them
    # longer than that or the interpolation has no neighbours to work with.
    Parameter("retention_time", "duration", "10s", "energy-attribution: how long points are kept",
              ("energy-attribution",)),
    Parameter("nvml_mode", "string", "full", "nvml: full metrics, or power only", ("nvml",), ("full", "minimal")),
    Parameter("nvml_skip_failed_devices", "bool", True, "nvml: go on when one GPU cannot be inspected", ("nvml",)),
)
PARAMETERS_BY_NAME = {p.name: p for p in PARAMETERS}


@dataclass(frozen=True)
class Profile:
    name: str
    plugins: tuple[str, ...]
    description: str
    # How the agent is meant to run with it (alumet_schema.RUN_MODES): "service" is alumet.service
    # (`alumet-agent run`), "exec" is `alumet-agent exec`/`watch` of one program. The template's header
    # says the same (`profile_runs`); a unit test keeps the two equal.
    runs: tuple[str, ...]

    @property
    def template(self) -> str:
        """Path relative to templates/: what the alumet_config role's template task names too."""
        return f"{TEMPLATE_DIR}/{self.name}.toml.j2"

    @property
    def parameters(self) -> tuple[Parameter, ...]:
        return tuple(p for p in PARAMETERS if set(p.plugins) & set(self.plugins))


PROFILES: dict[str, Profile] = {
    p.name: p for p in (
        # procfs "watcher": `run` announces no process, so the service must find them itself.
        Profile("energy-attribution", ("rapl", "procfs", "energy-attribution", "csv"),
                "RAPL energy attributed to every running process by its CPU share", ("service",)),
        # procfs "event": only the program exec starts (or watch names) is measured.
        Profile("energy-attribution-exec", ("rapl", "procfs", "energy-attribution", "csv"),
                "RAPL energy attributed to the one program of alumet-agent exec/watch", ("exec",)),
        Profile("rapl", ("rapl", "csv"), "RAPL energy counters only", ("service", "exec")),
        # The perf plugin starts counting only for the program exec/watch announces.
        Profile("rapl-perf", ("rapl", "perf", "csv"), "RAPL and perf hardware/cache counters of one program",
                ("exec",)),
        Profile("nvml", ("rapl", "nvml", "csv"), "RAPL and NVIDIA GPUs through NVML", ("service", "exec")),
        # Every other profile starts the rapl plugin, which stops the agent at start-up where there is no
        # RAPL ("Both perf_events and powercap failed"): virtual machines, most cloud instances.
        Profile("procfs", ("procfs", "csv"), "system and per-process usage, no energy: for hosts without RAPL",
                ("service", "exec")),
    )
}
# What `config render` and the alumet_config role use when not told: the service's profile.
DEFAULT_PROFILE = "energy-attribution"


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ProfileError(f"unknown profile {name!r} (known: {', '.join(PROFILES)})") from None


def parse_settings(profile: Profile, settings: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """`["poll_interval=2s", ...]` -> {"poll_interval": "2s"}; unknown keys and bad values are errors."""
    known = {p.name: p for p in profile.parameters}
    values: dict[str, Any] = {}
    for item in settings:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep:
            raise ProfileError(f"--set {item!r}: expected KEY=VALUE")
        if key not in known:
            raise ProfileError(f"--set {key}: not a parameter of profile {profile.name} "
                               f"(known: {', '.join(known)})")
        values[key] = known[key].parse(text)
    return values


def variables(profile: Profile, values: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The template variables, named as the role names them: defaults overlaid with `values`."""
    merged = {p.name: p.default for p in profile.parameters} | dict(values or {})
    return {"alumet_config_profile": profile.name} | {VARIABLE_PREFIX + k: v for k, v in merged.items()}


_TOML_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f",
                 "\r": "\\r"}


def toml_value(value: Any) -> str:
    """A TOML literal for a bool, int or str: the templates' `toml` filter.

    Strings are basic strings holding every character as itself except the quote, the backslash and the
    control characters TOML forbids raw (U+0000-U+001F, U+007F), which are escaped. Any other Unicode,
    emoji and other non-BMP characters included, is written as UTF-8: Jinja's `tojson` wrote those as
    JSON surrogate pairs ("\\ud83d\\ude00"), which TOML refuses. A lone surrogate has no UTF-8 form and
    is refused.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if not isinstance(value, str):
        raise ProfileError(f"cannot write {value!r} as a TOML value")
    out = []
    for c in value:
        if "\ud800" <= c <= "\udfff":
            raise ProfileError(f"{value!a} is not valid Unicode (a lone surrogate)")
        if c in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[c])
        elif c < " " or c == "\x7f":
            out.append(f"\\u{ord(c):04X}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def templates_dir() -> Path:
    from .resources import bundled

    return bundled("templates")


def render(profile_name: str, values: Mapping[str, Any] | None = None, template_root: Path | None = None) -> str:
    """The configuration text of a profile; ProfileError when the result would not pass validation."""
    import jinja2  # here, not at import time: doctor must stay fast

    profile = get_profile(profile_name)
    root = (template_root or templates_dir()) / TEMPLATE_DIR
    # ansible.builtin.template's settings, so both give the same bytes: trim_blocks, and trailing
    # newlines dropped by Jinja (included files' too) then restored for the top template only.
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(root)), undefined=jinja2.StrictUndefined, trim_blocks=True,
        keep_trailing_newline=False, autoescape=False,
    )
    env.filters["toml"] = toml_value
    try:
        template = env.get_template(f"{profile.name}.toml.j2")
        text = template.render(variables(profile, values))
        source = (root / f"{profile.name}.toml.j2").read_text(encoding="utf-8")
        text += "\n" * max(0, _trailing_newlines(source) - _trailing_newlines(text))
    except jinja2.TemplateNotFound as exc:
        raise ProfileError(f"profile {profile.name}: template {exc.name} is missing from {root}") from None
    except jinja2.UndefinedError as exc:
        raise ProfileError(f"profile {profile.name}: template error: {exc.message}") from None
    errors = alumet_schema.validate_text(text)
    if errors:
        raise ProfileError(_invalid(profile, values or {}, template_root, errors))
    return text


def _invalid(profile: Profile, values: Mapping[str, Any], template_root: Path | None, errors: list[str]) -> str:
    """The line for a rendering validation refuses. Each value passed its parameter's check, so when one
    alone makes the file invalid it is how the templates write it: that value is named; else the errors of
    the whole file."""
    if len(values) == 1:
        ((name, value),) = values.items()
        return f"--set {name}: {value!a} cannot be written into the configuration: {'; '.join(errors)}"
    for name, value in values.items():
        try:
            render(profile.name, {name: value}, template_root)
        except ProfileError as exc:
            return str(exc)
    return f"profile {profile.name}: rendered configuration is invalid: {'; '.join(errors)}"


def render_role(profile_name: str, template_root: Path, role_vars: Mapping[str, Any]) -> str:
    """What the alumet_config role writes: `role_vars` (alumet_config_<parameter> -> its YAML-typed value)
    checked parameter by parameter, then rendered and validated as `config render` does; ProfileError
    (one line, naming the variable) before any text exists otherwise."""
    profile = get_profile(profile_name)
    values = {p.name: p.check(role_vars[p.variable]) for p in profile.parameters if p.variable in role_vars}
    return render(profile.name, values, template_root)


def role_variables(profile_name: str) -> list[str]:
    """The role variables a profile reads, alumet_config_<parameter>: what the role hands render_role."""
    return [p.variable for p in get_profile(profile_name).parameters]


def _trailing_newlines(text: str) -> int:
    return len(text) - len(text.rstrip("\n"))

