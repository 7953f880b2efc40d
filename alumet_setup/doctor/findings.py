"""What a doctor check returns, and how checks are registered.

A check is a plain function `f(ctx) -> Finding`, registered with `@check(id, title, needs=(...))`
under a stable id. It reads the host only through `ctx.host` (see hosts.py) and the findings of the
checks it names in `needs` with `ctx.finding(id)`; their `data` carries the facts they established.
Reading a check it did not declare is an error (UndeclaredNeed), and `validate` refuses unknown needs
and cycles when the registry is built: two checks can never wait on each other.
"""

from __future__ import annotations

import copy
import enum
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import paths
from ..threads import Pending
from . import choices

if TYPE_CHECKING:
    from ..targets.hosts import Host


class Status(enum.StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    NOT_AVAILABLE = "not-available"  # the hardware or feature is absent here: not a fault
    ERROR = "error"  # the check itself broke; its message says how


@dataclass(init=False)
class Finding:
    status: Status
    detail: str
    # The exact shell commands that fix it, in order (one string is one command; none: ()), and the
    # alumet-setup step that would do it for you.
    fix: tuple[str, ...]
    install_step: str | None
    # Facts established by the check, for later checks, verdicts and --json.
    data: dict[str, Any]

    def __init__(self, status: Status, detail: str, fix: str | Iterable[str] | None = (),
                 install_step: str | None = None, data: dict[str, Any] | None = None) -> None:
        self.status, self.detail, self.install_step = status, detail, install_step
        self.fix = () if fix is None else (fix,) if isinstance(fix, str) else tuple(fix)
        self.data = {} if data is None else data

    @property
    def install_command(self) -> str | None:
        return f"alumet-setup install --only {self.install_step}" if self.install_step else None


def ok(detail: str, **data: Any) -> Finding:
    return Finding(Status.OK, detail, data=data)


def not_available(detail: str, **data: Any) -> Finding:
    return Finding(Status.NOT_AVAILABLE, detail, data=data)


@dataclass(frozen=True)
class CheckSpec:
    id: str
    title: str
    group: str
    func: Callable[[Context], Finding]
    needs: tuple[str, ...] = ()  # the checks whose findings this one reads


# Registration order is display order (run order puts needs first); ids are stable (part of --json).
REGISTRY: dict[str, CheckSpec] = {}


class RegistryError(ValueError):
    """Checks registered wrongly (an unknown need, a cycle): a programming error, raised at start."""


class UndeclaredNeed(RuntimeError):
    """A check read the finding of a check missing from its `needs`."""

GROUPS = {
    "system": "System",
    "toolchain": "Build toolchain",
    "agent": "alumet-agent",
    "kernel": "Kernel settings",
    "procfs": "/proc",
    "rapl": "RAPL",
    "nvml": "NVIDIA (NVML)",
    "config": "Alumet configuration",
}


def check(check_id: str, title: str, needs: Sequence[str] = ()
          ) -> Callable[[Callable[[Context], Finding]], Callable[[Context], Finding]]:
    """Register a check. `needs` may name checks of modules loaded later: validate() judges them."""
    group = check_id.split(".", 1)[0]
    if group not in GROUPS:
        raise RegistryError(f"check {check_id}: unknown group {group}")
    if check_id in needs:
        raise RegistryError(f"check {check_id} needs itself")

    def register(func: Callable[[Context], Finding]) -> Callable[[Context], Finding]:
        if check_id in REGISTRY:
            raise RegistryError(f"check {check_id} registered twice")
        REGISTRY[check_id] = CheckSpec(check_id, title, group, func, tuple(needs))
        return func

    return register


def dependency_order(check_ids: Iterable[str], registry: Mapping[str, CheckSpec] | None = None) -> list[str]:
    """`check_ids` and everything they need, each after its needs, otherwise in the order given.
    RegistryError names an unknown need or the checks of a cycle."""
    registry = REGISTRY if registry is None else registry
    order: list[str] = []
    done: set[str] = set()
    path: list[str] = []  # the checks being visited: meeting one again is a cycle

    def visit(check_id: str, needed_by: str | None) -> None:
        if check_id in done:
            return
        if check_id in path:
            cycle = [*path[path.index(check_id):], check_id]
            raise RegistryError(f"checks need each other in a cycle: {' -> '.join(cycle)}")
        spec = registry.get(check_id)
        if spec is None:
            raise RegistryError(f"check {needed_by} needs {check_id}, which is not registered"
                                if needed_by else f"unknown check {check_id}")
        path.append(check_id)
        for need in spec.needs:
            visit(need, check_id)
        path.pop()
        done.add(check_id)
        order.append(check_id)

    for check_id in check_ids:
        visit(check_id, None)
    return order


def validate(registry: Mapping[str, CheckSpec] | None = None) -> None:
    """Every need is a registered check and no check needs itself through others (RegistryError)."""
    registry = REGISTRY if registry is None else registry
    dependency_order(registry, registry)


@dataclass
class Options:
    """What the user told doctor about this host, and the choices install recorded on it (choices.py):
    the fields below `probe` default to the roles' defaults and are replaced by the recorded ones."""

    config_path: str = paths.CONFIG_FILE
    config_explicit: bool = False  # --config given: a missing file is then a usage error
    agent_path: str | None = None
    probe: bool = False  # doctor --probe: start the agent for a second (checks/agent_probe.py)
    sysctl_file: str = paths.SYSCTL_FILE  # where alumet-setup writes perf_event_paranoid
    perf_paranoid_value: int = 2  # the value it writes there
    group: str = paths.GROUP  # the group that may read RAPL counters and is exempt from hidepid
    powercap_group: str | None = None  # None: `group`
    hidepid_group: str | None = None  # None: `group`
    hidepid_policy: str = "exempt-group"
    powercap_world_readable: bool = False  # the user chose a+r on energy_uj, accepting CVE-2020-8694
    capabilities_ptrace: str | bool = "auto"  # cap_sys_ptrace: auto (where needed), True or False
    capabilities_ptrace_granted: bool | None = None  # what install decided for auto
    record: Any = None  # the choices.Record the fields above came from; None: not read yet

    @property
    def rapl_group(self) -> str:
        return self.powercap_group or self.group

    @property
    def proc_group(self) -> str:
        return self.hidepid_group or self.group


class Context:
    """Handed to every check: the host, the options, and the findings of the checks it needs.

    A check gets a view of the context bound to its spec (`_reader`): the same host, options and
    findings, but `finding()` answers only the ids in its `needs`."""

    def __init__(self, host: Host, options: Options | None = None):
        self.host = host
        self._options = options or Options()
        self._futures: dict[str, Pending[Finding]] = {}
        self._lock = threading.Lock()
        self._options_lock = threading.Lock()
        self._root = self  # views share the root's options
        self._reader: CheckSpec | None = None  # the check this view is handed to; None: the caller's

    def _view(self, spec: CheckSpec) -> Context:
        view = copy.copy(self._root)  # shallow: the findings and locks are shared
        view._reader = spec
        return view

    @property
    def options(self) -> Options:
        """The options with the host's install record applied, read once, by the first check that asks."""
        root = self._root
        if root._options.record is None:
            with root._options_lock:
                if root._options.record is None:
                    root._options = choices.apply(choices.read(root.host), root._options)
        return root._options

    def _claim(self, check_id: str) -> tuple[Pending[Finding], bool]:
        with self._lock:
            future = self._futures.get(check_id)
            if future is not None:
                return future, False
            future = self._futures[check_id] = Pending()
            return future, True

    def evaluate(self, check_id: str) -> Finding:
        """Run a check once (in this thread) or wait for the run already under way.

        A check that raises becomes an `error` finding: one broken check never stops the others.
        """
        future, mine = self._claim(check_id)
        if mine:
            spec = REGISTRY[check_id]
            try:
                finding = spec.func(self._view(spec))
            except Exception as exc:
                finding = Finding(Status.ERROR, f"{type(exc).__name__}: {exc}")
            future.set_result(finding)
        return future.result()

    def finding(self, check_id: str) -> Finding:
        """The finding of another check, run on demand if nobody has run it yet. Inside a check, only
        one it declared in `needs` (UndeclaredNeed otherwise: it would be a hidden dependency)."""
        if check_id not in REGISTRY:
            raise KeyError(f"unknown check {check_id}")
        reader = self._reader
        if reader is not None and check_id not in reader.needs:
            raise UndeclaredNeed(f"check {reader.id} reads {check_id} without declaring it in needs")
        return self.evaluate(check_id)

    def data(self, check_id: str, key: str, default: Any = None) -> Any:
        return self.finding(check_id).data.get(key, default)
