"""Doctor checks, one module per concern. Importing a module registers its checks (findings.check).

The import order below is the display order of the report. A module is named after the install step
whose work it checks (sysctl, hidepid), or after its check where no step matches (perf_probe,
agent_probe); tests/unit/test_checks_<module>.py tests it. Check ids are not renamed with modules:
they are part of --json.
"""

from __future__ import annotations

import importlib

from ..findings import REGISTRY, validate

MODULES = ("system", "toolchain", "agent", "agent_probe", "sysctl", "perf_probe", "hidepid", "rapl", "nvml", "config",
           "service")


def load_all() -> None:
    """Register every check, put them in MODULES order, then refuse unknown needs and cycles
    (findings.RegistryError). The reorder matters: any code (a test, a plugin) may import one module before
    load_all runs, and the report's order must not depend on who imported what first."""
    for name in MODULES:
        importlib.import_module(f"{__name__}.{name}")
    rank = {f"{__name__}.{name}": i for i, name in enumerate(MODULES)}
    ordered = sorted(REGISTRY.values(), key=lambda spec: rank.get(spec.func.__module__, len(rank)))
    if list(REGISTRY.values()) != ordered:
        REGISTRY.clear()
        REGISTRY.update((spec.id, spec) for spec in ordered)
    validate()
