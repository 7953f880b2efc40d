"""`--set key=value`: checked against the roles' meta/argument_specs.yml before anything runs.

The specs are read with PyYAML (an ansible-core dependency) rather than
ansible_runner.get_role_argspec(), which starts ansible-doc (a second or more) for the same data.
Ranges cannot be written in an argument spec, so the few that matter live in RANGES below.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# The install steps, in playbook order: each is a tag of playbooks/install.yml (docs/architecture.md).
STEPS = ("prereqs", "rustup", "agent", "group", "sysctl", "capabilities", "hidepid", "powercap", "config", "service")

# Bounds that argument_specs cannot express: name -> (lowest, highest), inclusive.
RANGES: dict[str, tuple[int, int]] = {
    "perf_paranoid_value": (-1, 4),  # kernel values; 4 is Ubuntu's patched default (see alumet-facts.md)
    "prereqs_apt_cache_valid_time": (0, 2**31 - 1),
}

_TRUE = {"true", "yes", "on", "1", "y", "t"}
_FALSE = {"false", "no", "off", "0", "n", "f"}


class SettingError(ValueError):
    """A --set that names no role option, or whose value does not fit it. The text is one line."""


@dataclass(frozen=True)
class Option:
    name: str
    role: str
    type: str = "str"
    elements: str | None = None
    choices: tuple[Any, ...] = ()
    default: Any = None
    description: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)


def load_specs(roles_dir: Path) -> dict[str, Option]:
    """Every option of every entry point of every role under `roles_dir`, by name."""
    options: dict[str, Option] = {}
    for spec_file in sorted(roles_dir.glob("*/meta/argument_specs.y*ml")):
        role = spec_file.parent.parent.name
        data = yaml.safe_load(spec_file.read_text(encoding="utf-8")) or {}
        for entry in (data.get("argument_specs") or {}).values():
            for name, spec in ((entry or {}).get("options") or {}).items():
                spec = spec or {}
                description = spec.get("description", "")
                if isinstance(description, list):
                    description = " ".join(str(d) for d in description)
                options.setdefault(name, Option(
                    name=name, role=role, type=str(spec.get("type", "str")), elements=spec.get("elements"),
                    choices=tuple(spec.get("choices") or ()), default=spec.get("default"),
                    description=str(description),
                ))
    return options


def parse_settings(pairs: Sequence[str], options: Mapping[str, Option]) -> dict[str, Any]:
    """['k=v', ...] -> {k: typed value}; SettingError on the first bad one."""
    result: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SettingError(f"--set {pair!r}: expected key=value")
        option = options.get(key)
        if option is None:
            known = ", ".join(sorted(options)) or "none"
            raise SettingError(f"unknown setting {key} (known: {known})")
        result[key] = convert(option, raw)
    return result


def convert(option: Option, raw: str) -> Any:
    """The value of `--set NAME=raw` as the role expects it, or SettingError saying what fits."""
    value = _convert_type(option.name, option.type, raw, option.elements)
    values: Iterable[Any] = value if isinstance(value, list) else [value]
    if option.choices:
        for item in values:
            if item not in option.choices:
                allowed = ", ".join(str(c) for c in option.choices)
                raise SettingError(f"--set {option.name}={raw}: {item!r} is not one of {allowed}")
    bounds = RANGES.get(option.name)
    if bounds is not None:
        low, high = bounds
        for item in values:
            if isinstance(item, (int, float)) and not low <= item <= high:
                raise SettingError(f"--set {option.name}={raw}: must be between {low} and {high}")
    return value


def _convert_type(name: str, kind: str, raw: str, elements: str | None = None) -> Any:
    def bad(expected: str) -> SettingError:
        return SettingError(f"--set {name}={raw}: expected {expected}")

    text = raw.strip()
    if kind == "int":
        try:
            return int(text, 10)
        except ValueError:
            raise bad("an integer") from None
    if kind == "float":
        try:
            return float(text)
        except ValueError:
            raise bad("a number") from None
    if kind == "bool":
        lowered = text.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise bad("true or false")
    if kind == "list":
        if text.startswith("["):
            try:
                items = yaml.safe_load(text)
            except yaml.YAMLError:
                raise bad("a list (a,b,c or a YAML list)") from None
            if not isinstance(items, list):
                raise bad("a list (a,b,c or a YAML list)")
        else:
            items = [item.strip() for item in text.split(",") if item.strip()]
        return [_convert_type(name, elements or "str", str(item)) for item in items]
    if kind == "dict":
        try:
            parsed = yaml.safe_load(text) if text else {}
        except yaml.YAMLError:
            parsed = None
        if not isinstance(parsed, dict):
            raise bad('a mapping such as {"a": 1}')
        return parsed
    if kind in ("path", "str"):
        if kind == "path" and not text:
            raise bad("a path")
        return raw
    if kind == "raw":
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            return raw
    return raw  # other spec types (bits, bytes, jsonarg): Ansible validates them itself

