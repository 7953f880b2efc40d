"""NVIDIA GPUs for the nvml plugin: a device, and the NVML library where the agent's dlopen finds it."""

from __future__ import annotations

import re

from ...targets.hosts import Host
from ..findings import Context, Finding, Status, check, not_available, ok

# The soname the agent dlopens (nvml-wrapper 0.12.1 LIB_PATH, see docs/testbed.md "Upstream facts").
LIBRARY = "libnvidia-ml.so.1"
DEV_LINK = "libnvidia-ml.so"  # the -dev symlink: not what the agent loads
GPUS_DIR = "/proc/driver/nvidia/gpus"

# `ldconfig -p` lines: "\tlibnvidia-ml.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1"
_CACHE_LINE = re.compile(r"^\s*(\S+)\s+\(([^)]*)\)\s+=>\s+(\S+)\s*$")
# ld.so cache flags of a 64-bit library; a bare "libc6" entry on such a host is a 32-bit (multilib) one.
_64BIT = ("x86-64", "AArch64", "64bit", "riscv64")


def gpus(host: Host) -> list[str]:
    """PCI addresses of the NVIDIA GPUs the driver knows (or the device nodes without /proc entries)."""
    found = host.listdir(GPUS_DIR)
    if not found and host.exists("/dev/nvidia0"):
        found = ["/dev/nvidia0"]
    return found


def ld_cache(host: Host) -> dict[str, list[str]] | None:
    """soname -> paths in the ld.so cache usable by a 64-bit agent; None when ldconfig could not be run."""
    for ldconfig in ("/sbin/ldconfig", "ldconfig"):
        result = host.run([ldconfig, "-p"])
        if result.ok:
            entries = [(m.group(1), m.group(2), m.group(3)) for m in map(_CACHE_LINE.match, result.stdout.splitlines())
                       if m]
            wide = any(flag in flags for _, flags, _ in entries for flag in _64BIT)
            cache: dict[str, list[str]] = {}
            for soname, flags, path in entries:
                if not wide or any(flag in flags for flag in _64BIT):
                    cache.setdefault(soname, []).append(path)
            return cache
    return None


@check("nvml.device", "NVIDIA GPU")
def device(ctx: Context) -> Finding:
    found = gpus(ctx.host)
    if not found:
        return not_available("no NVIDIA GPU (no /dev/nvidia0, nothing in /proc/driver/nvidia/gpus)")
    return ok(f"{len(found)} NVIDIA GPU(s): {', '.join(found)}", gpus=found)


@check("nvml.library", "NVML library", needs=("nvml.device",))
def library(ctx: Context) -> Finding:
    if ctx.finding("nvml.device").status is Status.NOT_AVAILABLE:
        return not_available("no NVIDIA GPU")
    cache = ld_cache(ctx.host)
    if cache is None:
        return Finding(Status.ERROR, "ldconfig -p could not be run: the ld.so cache is unknown")
    data = {"library": cache.get(LIBRARY, []), "dev_link": cache.get(DEV_LINK, [])}
    if data["library"]:
        return ok(f"{LIBRARY} in the ld.so cache: {data['library'][0]}", **data)
    # With file capabilities glibc runs the agent in secure mode: LD_LIBRARY_PATH is ignored, only the
    # ld.so cache and the default directories count.
    if data["dev_link"]:
        return Finding(Status.FAIL, f"only {DEV_LINK} is in the ld.so cache ({data['dev_link'][0]}), not {LIBRARY}, "
                       "the name the agent loads: reinstall the NVIDIA driver's NVML library", data=data)
    return Finding(Status.FAIL, f"{LIBRARY} is not in the ld.so cache: install the NVIDIA driver's NVML library "
                   "(a directory of its own needs a file in /etc/ld.so.conf.d and `sudo ldconfig`: the agent, "
                   "with file capabilities, ignores LD_LIBRARY_PATH)", data=data)
