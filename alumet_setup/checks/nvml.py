"""NVIDIA GPUs for the nvml plugin: a device, and the NVML library where the agent's dlopen finds it."""

from __future__ import annotations

import re

from ..findings import Context, Finding, Status, check, not_available, ok
from ..hosts import Host

LIBRARY = "libnvidia-ml.so"  # unversioned: the name Alumet dlopens
GPUS_DIR = "/proc/driver/nvidia/gpus"

# `ldconfig -p` lines: "\tlibnvidia-ml.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1"
_CACHE_LINE = re.compile(r"^\s*(\S+)\s+\(([^)]*)\)\s+=>\s+(\S+)\s*$")


def gpus(host: Host) -> list[str]:
    """PCI addresses of the NVIDIA GPUs the driver knows (or the device nodes without /proc entries)."""
    found = host.listdir(GPUS_DIR)
    if not found and host.exists("/dev/nvidia0"):
        found = ["/dev/nvidia0"]
    return found


def ld_cache(host: Host) -> dict[str, list[str]] | None:
    """soname -> paths in the ld.so cache; None when ldconfig could not be run."""
    for ldconfig in ("/sbin/ldconfig", "ldconfig"):
        result = host.run([ldconfig, "-p"])
        if result.ok:
            cache: dict[str, list[str]] = {}
            for line in result.stdout.splitlines():
                match = _CACHE_LINE.match(line)
                if match:
                    cache.setdefault(match.group(1), []).append(match.group(3))
            return cache
    return None


@check("nvml.device", "NVIDIA GPU")
def device(ctx: Context) -> Finding:
    found = gpus(ctx.host)
    if not found:
        return not_available("no NVIDIA GPU (no /dev/nvidia0, nothing in /proc/driver/nvidia/gpus)")
    return ok(f"{len(found)} NVIDIA GPU(s): {', '.join(found)}", gpus=found)


@check("nvml.library", "NVML library")
def library(ctx: Context) -> Finding:
    if ctx.finding("nvml.device").status is Status.NOT_AVAILABLE:
        return not_available("no NVIDIA GPU")
    cache = ld_cache(ctx.host)
    if cache is None:
        return Finding(Status.ERROR, "ldconfig -p could not be run: the ld.so cache is unknown")
    data = {"unversioned": cache.get(LIBRARY, []), "versioned": cache.get(f"{LIBRARY}.1", [])}
    if data["unversioned"]:
        return ok(f"{LIBRARY} in the ld.so cache: {data['unversioned'][0]}", **data)
    # With file capabilities glibc runs the agent in secure mode: LD_LIBRARY_PATH is ignored.
    if data["versioned"]:
        target = data["versioned"][0]
        link = target.rsplit("/", 1)[0] + "/" + LIBRARY
        return Finding(Status.FAIL, f"only {LIBRARY}.1 is in the ld.so cache ({target}): Alumet dlopens {LIBRARY}",
                       fix=f"sudo ln -s {LIBRARY}.1 {link} && sudo ldconfig", data=data)
    return Finding(Status.FAIL, f"{LIBRARY} is not in the ld.so cache: install the NVIDIA driver's NVML library",
                   data=data)
