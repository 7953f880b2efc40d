"""`--set key=value`: checked against the roles' meta/argument_specs.yml before anything runs.

The specs are read with PyYAML (an ansible-core dependency) rather than
ansible_runner.get_role_argspec(), which starts ansible-doc (a second or more) for the same data.
What an argument spec cannot express is checked here too, before anything runs: absolute paths, the
ranges and formats of rules.py (the roles' preflights check the same table) and profiles.py's durations,
and that a setting belongs to a role some step of this run executes (a setting nobody reads is a mistake,
not a no-op).
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..hostside import profiles, rules, safe_io
from ..steps import STEPS

# What argument_specs cannot express (ranges, formats) is rules.py's, shared with the roles' preflights
# and doctor; the config step's durations and delimiters are profiles.py's, shared with the alumet_config role.
RANGES = rules.RANGES

# name -> (what it must be, check): formats beyond the argument spec's type.
FORMATS: dict[str, tuple[str, Any]] = {
    **{name: (what, lambda v, name=name: rules.fits(name, v)) for name, (what, _) in rules.FORMATS.items()},
    # The config step's durations and delimiters, as profiles.py checks them for `config render` and the role:
    # refused here, before any step runs, rather than by the config step after the earlier ones.
    **{p.variable: ({"duration": 'a duration alumet-agent reads (humantime: "1s", "500ms", "1m 30s")',
                     "char": "exactly one character"}[p.kind], lambda v, p=p: _fits(p, v))
       for p in profiles.PARAMETERS if p.kind in ("duration", "char")},
}

# Values one dict, list or raw --set may stand for, its YAML aliases expanded: a command line holds a
# few dozen; an alias bomb of a few hundred bytes stands for billions, and hashing the settings for the
# fast path (uptodate.py) would expand every one of them.
MAX_VALUES = 10_000

# The first word of the spec description of a variable no user sets (Option.internal).
INTERNAL_MARK = "Internal:"

_TRUE = {"true", "yes", "on", "1", "y", "t"}
_FALSE = {"false", "no", "off", "0", "n", "f"}


def _fits(parameter: profiles.Parameter, value: str) -> bool:
    try:
        parameter.check(value)
    except profiles.ProfileError:
        return False
    return True


class SettingError(ValueError):
    """A --set that names no role option, or whose value does not fit it. The text is one line."""


def split_steps(values: Sequence[str], option: str) -> list[str]:
    """`--only a,b --only c` -> [a, b, c]; an empty name is an error: `--only ',,,'` must not mean every step."""
    steps = [item.strip() for value in values for item in value.split(",")]
    if any(not step for step in steps):
        raise SettingError(f"{option} {','.join(values)!r}: empty step name (steps are separated by single commas)")
    return steps


def check_steps(steps: Sequence[str]) -> None:
    """Every name is a step (SettingError naming the unknown ones, in the order given, and the known ones)."""
    unknown = [s for s in dict.fromkeys(steps) if s not in STEPS]
    if unknown:
        raise SettingError(f"unknown step {', '.join(unknown)} (known: {', '.join(STEPS)})")


def select_steps(only: Sequence[str], skip: Sequence[str]) -> tuple[list[str], list[str]]:
    """--only and --skip of install/uninstall: known steps, none in both."""
    only_steps, skip_steps = split_steps(only, "--only"), split_steps(skip, "--skip")
    check_steps(only_steps + skip_steps)
    both = [s for s in only_steps if s in skip_steps]
    if both:
        raise SettingError(f"step {', '.join(both)} is both in --only and --skip")
    return only_steps, skip_steps


@dataclass(frozen=True)
class Option:
    name: str
    role: str
    type: str = "str"
    elements: str | None = None
    choices: tuple[Any, ...] = ()
    default: Any = None
    description: str = ""

    @property
    def internal(self) -> bool:
        """Set by alumet-setup or the play itself, not by a user: its spec description says "Internal:"
        (an argument spec has no key of its own for it). `alumet-setup settings` leaves it out."""
        return self.description.startswith(INTERNAL_MARK)


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
    """['k=v', ...] -> {k: typed value}; SettingError on the first bad one (checked_used() then says
    whether the run reads it)."""
    result: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SettingError(f"--set {pair!r}: expected key=value")
        option = options.get(key)
        if option is None:
            raise SettingError(unknown_setting(key, options))
        if not safe_io.is_utf8(raw):
            raise SettingError(f"--set {key}: the value is not UTF-8 text (bytes the terminal or locale could "
                               "not decode)")
        result[key] = convert(option, raw)
    return result


def unknown_setting(key: str, options: Iterable[str]) -> str:
    """The one line for a --set key no role knows: the nearest names, not all of them."""
    near = difflib.get_close_matches(key, sorted(options), n=3, cutoff=0.75)
    hint = f"did you mean {', '.join(near)}? " if near else ""
    return f"unknown setting {key} ({hint}`alumet-setup settings` lists them all)"


def by_step(options: Mapping[str, Option], playbook: Path) -> dict[str, list[Option]]:
    """step -> its settings, in step order, from the playbook's step->role mapping; the settings of roles
    no step of `playbook` runs come last, under their role's name."""
    roles = steps_by_role(playbook)
    groups: dict[str, list[Option]] = {step: [] for step in STEPS}
    for option in sorted(options.values(), key=lambda o: o.name):
        steps = [s for s in STEPS if s in roles.get(option.role, ())]
        groups.setdefault(steps[0] if steps else f"{option.role} (no {playbook.stem} step)", []).append(option)
    return {step: found for step, found in groups.items() if found}


def spell(value: Any) -> str:
    """A value as --set takes it and YAML/TOML write it: true/false, not Python's True/False."""
    return value if isinstance(value, str) else json.dumps(value)


def value_choices(option: Option) -> tuple[str, ...]:
    """What `--set NAME=` may be followed by, spelled as typed: the spec's choices, or true/false."""
    if option.choices:
        return tuple(spell(c) for c in option.choices)
    return ("true", "false") if option.type == "bool" else ()


def describe(option: Option) -> str:
    """`name  type  default  [choices]` then the description: one setting for `alumet-setup settings`."""
    kind = f"list of {option.elements}" if option.type == "list" and option.elements else option.type
    default = "(none)" if option.default is None else json.dumps(option.default)
    line = f"{option.name} ({kind}, default: {default})"
    if option.choices:
        line += f" one of: {', '.join(spell(c) for c in option.choices)}"
    bounds = RANGES.get(option.name)
    if bounds is not None:
        line += f" from {bounds[0]} to {bounds[1]}"
    if option.name in FORMATS:
        line += f" ({FORMATS[option.name][0]})"
    return line


def to_json(option: Option, step: str) -> dict[str, Any]:
    """One setting for `alumet-setup settings --json`."""
    bounds = RANGES.get(option.name)
    return {"name": option.name, "step": step, "role": option.role, "type": option.type,
            "elements": option.elements, "default": option.default, "choices": list(option.choices),
            "range": list(bounds) if bounds else None,
            "format": FORMATS[option.name][0] if option.name in FORMATS else None,
            "description": option.description}


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
    _check_text(option, raw, value)
    return value


def _check_text(option: Option, raw: str, value: Any) -> None:
    """Strings: no control characters (a newline ends a line of /etc/group, fstab or a unit file) and
    only UTF-8 (a YAML "\\udcff" escape is a lone surrogate too), paths absolute, FORMATS obeyed.
    Every string of a dict or list counts, keys included, at any depth; a dict's keys are strings."""
    shown = ascii(raw)[1:-1]  # the message stays one line, whatever the value holds
    for text in _strings(value):
        if re.search(r"[\x00-\x1f\x7f]", text):
            raise SettingError(f"--set {option.name}={shown}: control characters (newline, NUL...) not allowed")
        if not safe_io.is_utf8(text):
            raise SettingError(f"--set {option.name}={shown}: {text!a} is not UTF-8 text")
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise SettingError(f"--set {option.name}={shown}: key {key!a} is not a string")
    items = list(value.items()) if isinstance(value, dict) else [(None, v) for v in
                                                                  (value if isinstance(value, list) else [value])]
    kind = option.elements if option.type == "list" else option.type
    fmt = FORMATS.get(option.name)
    for key, item in items:
        if kind == "path" and isinstance(item, str) and not item.startswith("/"):
            raise SettingError(f"--set {option.name}={shown}: expected an absolute path")
        if fmt is not None:
            checked = key if isinstance(value, dict) else item
            if isinstance(checked, str) and not fmt[1](checked):
                raise SettingError(f"--set {option.name}={shown}: {checked!a} is not {fmt[0]}")


def _strings(value: Any) -> Iterator[str]:
    """Every string in a parsed value, dict keys included, without recursion (MAX_VALUES bounds it)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            pending += [*item.keys(), *item.values()]
        elif isinstance(item, (list, tuple, set, frozenset)):
            pending += list(item)


def _role_entries(playbook: Path) -> list[tuple[str, str, list[str]]]:
    """(role, tasks file, tags) of every role `playbook` runs, from its roles: lists and its import_role/
    include_role tasks, in the order its plays run them (pre_tasks, roles, tasks, post_tasks)."""
    plays = yaml.safe_load(playbook.read_text(encoding="utf-8")) or []
    entries: list[tuple[str, str, list[str]]] = []
    for play in plays:
        for section in ("pre_tasks", "roles", "tasks", "post_tasks"):
            for entry in play.get(section) or ():
                if section == "roles":
                    name = entry if isinstance(entry, str) else entry.get("role") or entry.get("name")
                    entries.append((str(name), "main", [] if isinstance(entry, str) else _tags(entry.get("tags"))))
                    continue
                for action in ("ansible.builtin.import_role", "import_role", "ansible.builtin.include_role",
                               "include_role"):
                    if isinstance(entry.get(action), dict):
                        entries.append((str(entry[action]["name"]), str(entry[action].get("tasks_from", "main")),
                                        _tags(entry.get("tags"))))
    return entries


def steps_by_role(playbook: Path) -> dict[str, set[str]]:
    """role -> the step tags that run it in `playbook` ('always' included): the one step->role mapping, read
    from the playbook itself."""
    mapping: dict[str, set[str]] = {}
    for role, _tasks, tags in _role_entries(playbook):
        mapping.setdefault(role, set()).update(tags)
    return mapping


def selected_steps(steps: Sequence[str], only: Sequence[str], skip: Sequence[str], extravars: Mapping[str, Any],
                   opt_in: bool = True) -> list[str]:
    """The steps of `steps` a run applies, in their order: --only's, else every one but the opt-in service
    (unless `alumet_service_enabled=true` asks for it, or not `opt_in`: uninstall always undoes it), less --skip."""
    wanted = extravars.get("alumet_service_enabled") is True or not opt_in
    return [s for s in steps if (s in only if only else s != "service" or wanted) and s not in skip]


@dataclass(frozen=True)
class PlaySteps:
    """What install/uninstall progress needs to name the step of each task of a play (runner.Progress)."""

    steps: tuple[str, ...]  # the run's steps, in the order the play runs them
    role_step: Mapping[str, str]  # role -> the step that runs it
    play_own: frozenset[tuple[str, str]]  # (role, tasks file) the play runs for itself, outside any step


def play_steps(playbook: Path, only: Sequence[str] = (), skip: Sequence[str] = (),
               extravars: Mapping[str, Any] | None = None) -> PlaySteps:
    """The steps of a run of `playbook` and how its tasks map to them, from the playbook's step tags."""
    entries = _role_entries(playbook)
    role_step = {role: tag for role, _tasks, tags in entries for tag in tags if tag in STEPS}
    order = list(dict.fromkeys(tag for _role, _tasks, tags in entries for tag in tags if tag in STEPS))
    own = frozenset((role, tasks) for role, tasks, tags in entries if "always" in tags)
    return PlaySteps(tuple(selected_steps(order, only, skip, extravars or {}, opt_in=playbook.stem == "install")),
                     role_step, own)


def _tags(tags: Any) -> list[str]:
    return [tags] if isinstance(tags, str) else list(tags or ())


def check_used(names: Iterable[str], options: Mapping[str, Option], playbook: Path, command: str,
               only: Sequence[str] = (), skip: Sequence[str] = ()) -> None:
    """SettingError for the first setting whose role no step of this run executes."""
    roles = steps_by_role(playbook)
    for name in names:
        role = options[name].role
        tags = roles.get(role)
        if tags is None:
            raise SettingError(f"--set {name}: unused: role {role} is not part of {command} (no step runs it)")
        if "always" in tags:
            continue
        running = [t for t in tags if (not only or t in only) and t not in skip]
        if not running:
            steps = ", ".join(sorted(tags))
            raise SettingError(f"--set {name}: unused: step {steps} (role {role}) is not run by this {command}")


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
                items = _load_yaml(name, text)
            except yaml.YAMLError:
                raise bad("a list (a,b,c or a YAML list)") from None
            if not isinstance(items, list) or any(isinstance(i, (list, dict)) for i in items):
                raise bad("a list (a,b,c or a YAML list of plain values)")
        else:
            items = [item.strip() for item in text.split(",") if item.strip()]
        return [_convert_type(name, elements or "str", str(item)) for item in items]
    if kind == "dict":
        try:
            parsed = _load_yaml(name, text) if text else {}
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
            return _load_yaml(name, text)
        except yaml.YAMLError:
            return raw
    return raw  # other spec types (bits, bytes, jsonarg): Ansible validates them itself


def _load_yaml(name: str, text: str) -> Any:
    """A YAML --set value within MAX_VALUES (safe_io.check_yaml, the rule inventories follow too)."""
    try:
        return safe_io.load_yaml(text, max_nodes=MAX_VALUES)
    except safe_io.UnsafeYaml as exc:
        raise SettingError(f"--set {name}: {exc}") from None

