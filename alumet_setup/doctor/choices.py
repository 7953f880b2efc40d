"""The choices install applied on a host, as the install_record role wrote them, for doctor to judge by.

The file is small JSON written by root: {"version": 1, "choices": {NAME: VALUE}, "applied": {STEP: DIGEST},
"files": {PATH: SHA256}} with NAME one of the role variables in CHOICES, "applied" the steps the last
successful runs applied, each under the digest of that run's inputs, and "files" the sha256 ("": absent) of
the files that hold those steps' state, as that run left them (install's fast path, alumet_setup/uptodate.py).
It is read
size-bounded and validated value by value; anything else (absent, too large, not a root-owned regular
file, not JSON, a wrong value) leaves doctor on the roles' defaults and says why in the system.choices
check, never a traceback; a malformed "applied" only means no step counts as applied.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import paths
from ..hostside import rules

VERSION = 1
MAX_BYTES = 16384  # the real file is about 400 bytes

_STEP = re.compile(r"^[a-z_]{1,32}$")
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


def _path(value: object) -> bool:
    return isinstance(value, str) and value.startswith("/") and "\0" not in value and "\n" not in value \
        and len(value) <= 4096


def _rule(name: str) -> Callable[[object], bool]:
    """The rule install's --set and the role's preflight check `name` by (rules.py): one copy."""
    return lambda value: rules.fits(name, value)


def _bool(value: object) -> bool:
    return isinstance(value, bool)


def _ptrace(value: object) -> bool:
    return value in ("auto", True, False) and not (isinstance(value, int) and not isinstance(value, bool))


# Role variable -> (its validator, the doctor Options field it sets).
CHOICES: dict[str, tuple[Callable[[object], bool], str]] = {
    "alumet_group_name": (_rule("alumet_group_name"), "group"),
    "perf_paranoid_value": (_rule("perf_paranoid_value"), "perf_paranoid_value"),
    "perf_paranoid_sysctl_file": (_path, "sysctl_file"),
    "capabilities_ptrace": (_ptrace, "capabilities_ptrace"),
    "capabilities_ptrace_granted": (_bool, "capabilities_ptrace_granted"),
    "hidepid_policy": (lambda v: v in ("keep", "exempt-group", "disable"), "hidepid_policy"),
    "hidepid_group": (_rule("hidepid_group"), "hidepid_group"),
    "powercap_group": (_rule("powercap_group"), "powercap_group"),
    "powercap_world_readable": (_bool, "powercap_world_readable"),
    "alumet_config_file": (_path, "config_path"),
}


@dataclass(frozen=True)
class Record:
    """What was read: status 'ok', 'absent' or 'invalid' (then `problem` says why and `values` is empty)."""

    path: str
    status: str
    values: Mapping[str, Any] = field(default_factory=dict)
    problem: str | None = None
    ignored: tuple[str, ...] = ()  # names this doctor does not know (a newer install_record role)
    applied: Mapping[str, str] = field(default_factory=dict)  # step -> digest of the run that applied it
    files: Mapping[str, str] = field(default_factory=dict)  # path -> its sha256 then ("": absent)


def parse(text: str, path: str = paths.CHOICES_FILE) -> Record:
    """Validate the record's text; a bad value makes the whole record invalid (it was written by one run)."""
    def invalid(why: str) -> Record:
        return Record(path, "invalid", problem=why)

    try:
        doc = json.loads(text)
    except ValueError as exc:
        return invalid(f"not valid JSON ({exc})")
    except RecursionError:  # nested deeper than the parser goes
        return invalid("not valid JSON (nested too deep)")
    if not isinstance(doc, dict) or doc.get("version") != VERSION or not isinstance(doc.get("choices"), dict):
        return invalid(f'not an install record of version {VERSION} ({{"version": 1, "choices": {{...}}}})')
    values: dict[str, Any] = {}
    ignored = []
    for name, value in doc["choices"].items():
        spec = CHOICES.get(name)
        if spec is None:
            ignored.append(str(name)[:64])
            continue
        if not spec[0](value):
            return invalid(f"{name}: unexpected value {json.dumps(value)[:64]}")
        values[name] = value
    return Record(path, "ok", values, ignored=tuple(sorted(ignored)), **_fast_path(doc))


def _fast_path(doc: dict[str, Any]) -> dict[str, Any]:
    """"applied" and "files"; anything malformed in them counts as no step applied (install runs them all)."""
    applied, files = doc.get("applied"), doc.get("files", {})
    if not isinstance(applied, dict) or not isinstance(files, dict) or len(files) > 16:
        return {}
    if not all(isinstance(k, str) and _STEP.match(k) and isinstance(v, str) and _DIGEST.match(v)
               for k, v in applied.items()):
        return {}
    if not all(_path(k) and isinstance(v, str) and (v == "" or _DIGEST.match(v)) for k, v in files.items()):
        return {}
    return {"applied": dict(applied), "files": dict(files)}


def read(host: Any, path: str = paths.CHOICES_FILE) -> Record:
    """The host's record, read through the Host protocol: only a root-owned regular file of at most
    MAX_BYTES that nobody else can write (anyone could otherwise tell doctor a weaker host is fine)."""
    try:
        st = host.stat(path, follow=False)
        if st is None:
            return Record(path, "absent")
        if not st.is_file:
            return Record(path, "invalid", problem=f"not a regular file ({st.kind})")
        if st.uid != 0 or st.mode & 0o022:
            return Record(path, "invalid", problem=f"not root-owned and root-only writable (uid {st.uid}, "
                          f"mode {st.mode:04o})")
        if st.size > MAX_BYTES:
            return Record(path, "invalid", problem=f"{st.size} bytes, more than {MAX_BYTES}")
        data = host.read_bytes(path)
    except PermissionError:
        return Record(path, "invalid", problem="not readable by this user: run doctor with sudo")
    except OSError as exc:
        return Record(path, "invalid", problem=f"unreadable ({exc})")
    if data is None:
        return Record(path, "absent")
    if len(data) > MAX_BYTES:  # it grew between stat and read
        return Record(path, "invalid", problem=f"more than {MAX_BYTES} bytes")
    return parse(data.decode("utf-8", "replace"), path)


def apply(record: Record, options: Any) -> Any:
    """`options` (findings.Options) with the recorded choices in place of the defaults; an explicit
    --config stays. The record itself is kept on the options for the system.choices check."""
    changes: dict[str, Any] = {"record": record}
    for name, value in record.values.items():
        target = CHOICES[name][1]
        if target == "config_path" and options.config_explicit:
            continue
        changes[target] = value
    return dataclasses.replace(options, **changes)


def describe(record: Record) -> str:
    """'perf_paranoid_value=2, perf_paranoid_sysctl_file=/etc/sysctl.d/zz.conf, ...', in CHOICES order."""
    shown = [f"{name}={_show(record.values[name])}" for name in CHOICES if name in record.values]
    return ", ".join(shown)


def _show(value: object) -> str:
    return json.dumps(value) if isinstance(value, bool) else str(value)
