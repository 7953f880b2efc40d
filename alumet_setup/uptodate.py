"""install's fast path: a host that the last install already prepared with these very inputs, and that
doctor finds done, is not run again.

A host is up to date for a run when
- its install record (roles/install_record) lists every step of the run as applied under this run's digest:
  the digest of the inputs (this alumet-setup's version, its bundled roles and playbooks, the settings, the
  inventory files). install_record writes it at the end of a successful run and clears the steps a run is
  about to apply at its start, so a run that failed midway never leaves them looking applied;
- the files that hold the steps' state (the sysctl file, /etc/fstab, the udev rule, the configuration) have
  the sha256 that run recorded;
- and doctor's checks, run now on the host, name none of those steps in a warning or a failure (a build
  tool's warning aside: once the agent is installed only a rebuild needs it, and a rebuild comes only with
  new inputs, hence a new digest).
Drift that none of these sees (say, a group deleted by hand while doctor has nothing against it) stays
until `install --full`.
With the opt-in service step in the run, the unit file is one of those files, and doctor's agent.service
must find the unit active: an up-to-date host with the service then costs what one without it does.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __version__
from .hostside import resources, safe_io
from .playbook.inventory import InventoryError, inventory_files

# Bounds on what is hashed: beyond them there is no fast path (the host, or the run, goes the full way).
MAX_INVENTORY_BYTES = 4 * 1024 * 1024
MAX_WITNESS_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Survey:
    """What the survey found on one host: `up_to_date`, or `reason` says why the run must go on there."""

    host: str
    up_to_date: bool
    reason: str
    seconds: float


def run_steps(only: Sequence[str], skip: Sequence[str], extravars: Mapping[str, Any]) -> list[str]:
    """The steps this install applies (playbooks/install.yml's tags), the opt-in service where --only or
    --set alumet_service_enabled=true asks for it."""
    from .playbook.settings import STEPS, selected_steps

    steps = selected_steps(STEPS, only, skip, extravars)
    if extravars.get("alumet_service_enabled") is True and "service" not in skip and "service" not in steps:
        steps = [*steps, "service"]
    return steps


def _tree_digest(digest: Any, root: Path) -> None:
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")


def run_digest(extravars: Mapping[str, Any], inventory: str | None) -> str | None:
    """The sha256 of everything that decides what install does to a host, None when an inventory file
    cannot be read within MAX_INVENTORY_BYTES (then every host runs)."""
    digest = hashlib.sha256()
    digest.update(f"alumet-setup {__version__}\0".encode())
    for name in ("roles", "playbooks", "templates"):
        _tree_digest(digest, resources.bundled(name))
    digest.update(json.dumps(dict(extravars), sort_keys=True, default=str).encode() + b"\0")
    if inventory is not None:
        total = 0
        try:
            for path in inventory_files(inventory):
                # Bounded by what is left of the budget: a FIFO, a device or a huge file is refused unread.
                data = safe_io.read_bytes(path, MAX_INVENTORY_BYTES - total)
                total += len(data)
                digest.update(path.encode() + b"\0" + data + b"\0")
        except (OSError, safe_io.UnsafeFile, InventoryError):
            return None
    return digest.hexdigest()


def not_applied(record: Any, steps: Sequence[str], digest: str) -> str | None:
    """Why the install record (choices.Record) does not vouch for these steps, or None."""
    stale = [s for s in steps if record.applied.get(s) != digest]
    if len(stale) == len(steps):
        return "no earlier install with these settings"
    return f"not applied with these settings: {', '.join(stale)}" if stale else None


def changed_file(host: Any, files: Mapping[str, str]) -> str | None:
    """The first recorded file that no longer has the content the last install left, or None. Every file is
    read (no stop at the first change): a remote host answers them all in one round trip."""
    changed = []
    for path, recorded in files.items():
        st = host.stat(path, follow=True)
        if st is not None and (not st.is_file or st.size > MAX_WITNESS_BYTES):
            changed.append(path)
            continue
        data = None if st is None else host.read_bytes(path)
        if ("" if data is None else hashlib.sha256(data).hexdigest()) != recorded:
            changed.append(path)
    return f"{changed[0]} changed since the last install" if changed else None


def doctor_objection(report: Any, steps: Sequence[str]) -> str | None:
    """The first warning or failure of doctor's (a doctor.Report) that one of these steps would act on."""
    from .doctor.findings import Status

    for result in report.results:
        finding = result.finding
        if finding.status is Status.ERROR:
            return f"doctor: {result.id}: {finding.detail}"
        if finding.install_step not in steps or finding.status not in (Status.WARN, Status.FAIL):
            continue
        if finding.status is Status.WARN and result.group == "toolchain":
            continue  # a build tool once the agent is there: only a build needs it, and new inputs bring one
        return f"doctor: {result.id}: {finding.detail}"
    return None


def survey(hosts: Sequence[tuple[str, Any]], steps: Sequence[str], digest: str) -> list[Survey]:
    """install's fast path: judge each (name, doctor target) in parallel by its record, its recorded files and
    doctor's checks."""
    from . import doctor
    from .doctor import choices

    def judge(host: Any) -> str | None:
        # Reads only, all of them asked whatever the first answers say: on a remote host they then share
        # round trips (hosts.in_rounds) instead of following one another.
        record = choices.read(host)
        changed = changed_file(host, record.files)
        report = doctor.diagnose(host)
        return not_applied(record, steps, digest) or changed or doctor_objection(report, steps)

    return _each_host(hosts, judge)


def untouched(hosts: Sequence[tuple[str, Any]]) -> list[Survey]:
    """uninstall's fast path: a host without paths.STATE_DIR holds nothing install recorded, and uninstall
    removes or gives back only what install recorded: it has nothing to do there (`up_to_date`)."""
    from . import paths

    def judge(host: Any) -> str | None:
        return None if host.stat(paths.STATE_DIR, follow=False) is None else f"{paths.STATE_DIR} is there"

    return _each_host(hosts, judge)


def _each_host(hosts: Sequence[tuple[str, Any]], judge: Any) -> list[Survey]:
    """`judge(host)` (reads only: the reason the run must go on there, or None) on each (name, doctor target),
    in parallel; a host that cannot be read, or whose reading breaks, runs."""
    from .doctor import HOST_WORKERS
    from .targets.connection import connect
    from .targets.hosts import Host, HostError, read_each
    from .targets.ssh import SshSessions

    def judged(host: Any) -> str:
        try:
            return judge(host) or ""
        except (HostError, OSError):
            raise
        except Exception as exc:  # the survey only saves time: whatever breaks it, the host runs
            return f"not surveyed ({type(exc).__name__}: {exc})"

    with SshSessions() as sessions:
        def connector(target: Any) -> Callable[[], Host]:
            return lambda: connect(target, sessions)

        readings = read_each([(name, connector(target)) for name, target in hosts], judged, HOST_WORKERS)
    return [Survey(r.name, r.value == "", r.value or r.error or "up to date", r.seconds) for r in readings]
