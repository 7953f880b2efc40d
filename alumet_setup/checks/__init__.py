"""Doctor checks, one module per concern. Importing a module registers its checks (findings.check).

The import order below is the run and display order of the report.
"""

from __future__ import annotations

import importlib

MODULES = ("system", "toolchain", "agent", "agent_probe", "kernel", "probe", "procfs", "rapl", "nvml", "config")


def load_all() -> None:
    for name in MODULES:
        importlib.import_module(f"{__name__}.{name}")
