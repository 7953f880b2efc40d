"""Doctor checks, one module per concern. Importing a module registers its checks (findings.check).

The import order below is the display order of the report. A module is named after the install step
whose work it checks (sysctl, hidepid), or after its check where no step matches (perf_probe,
agent_probe); tests/unit/test_checks_<module>.py tests it. Check ids are not renamed with modules:
they are part of --json.
"""

from __future__ import annotations

import importlib

from ..findings import validate

MODULES = ("system", "toolchain", "agent", "agent_probe", "sysctl", "perf_probe", "hidepid", "rapl", "nvml", "config")


def load_all() -> None:
    """Register every check, then refuse unknown needs and cycles (findings.RegistryError)."""
    for name in MODULES:
        importlib.import_module(f"{__name__}.{name}")
    validate()
