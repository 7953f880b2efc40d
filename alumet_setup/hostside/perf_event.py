"""Prove perf_event access by opening real perf events (measured, not inferred from sysctls).

Self-contained on purpose: standard library only, Python 3.8 compatible, so doctor can ship this
file's source to any host (`python3 -c SOURCE`, locally or over SSH) and run it under the privileges
the agent would have. Also runnable by hand: `python3 perf_event.py [--pmu DIR]`.

It opens two events and reads one value from each:
* own: a software task-clock event on this process, user space only; what `perf stat` and Alumet's
  perf plugin need (allowed at perf_event_paranoid <= 2 without any capability);
* cpu_wide: the RAPL energy-pkg event of the power PMU on the first CPU of its cpumask (pid -1), as
  Alumet's rapl plugin opens it; without that PMU, a CPU-wide software cpu-clock event on CPU 0,
  which needs the same privileges (perf_event_paranoid <= 0, or cap_perfmon).

Prints one JSON line: {"own": {...}, "cpu_wide": {...}, "rapl": bool, "uid": int}, where each
event is {"ok": bool, "errno": int|null, "error": str|null, "value": int|null, ...}.
"""

from __future__ import annotations

import ctypes
import errno as errno_mod
import os
import struct
import sys
from collections.abc import Mapping

# perf_event_open(2) has no libc wrapper: call it by number.
SYSCALL_NR = {
    "x86_64": 298, "amd64": 298, "i386": 336, "i686": 336,
    "aarch64": 241, "arm64": 241, "riscv64": 241, "armv7l": 364,
    "ppc64le": 319, "ppc64": 319, "s390x": 331,
}

PERF_TYPE_SOFTWARE = 1
PERF_COUNT_SW_CPU_CLOCK = 0
PERF_COUNT_SW_TASK_CLOCK = 1
PERF_ATTR_SIZE_VER5 = 112  # the kernel accepts any known size; 112 is supported since Linux 4.1
PERF_FLAG_FD_CLOEXEC = 1 << 3
PERF_EVENT_IOC_ENABLE = 0x2400  # _IO('$', 0)
# Bits of the flags word at offset 40 of struct perf_event_attr.
ATTR_DISABLED = 1 << 0
ATTR_EXCLUDE_KERNEL = 1 << 5
ATTR_EXCLUDE_HV = 1 << 6

PMU_DIRS = ("/sys/bus/event_source/devices/power", "/sys/devices/power")


def perf_event_attr(event_type: int, config: int, flags: int) -> ctypes.Array:
    """A zeroed struct perf_event_attr (VER5) with type, size, config and the flag bits set."""
    buf = ctypes.create_string_buffer(PERF_ATTR_SIZE_VER5)
    struct.pack_into("=IIQ", buf, 0, event_type, PERF_ATTR_SIZE_VER5, config)
    struct.pack_into("=Q", buf, 40, flags)
    return buf


def _result(ok: bool, err: int | None = None, value: int | None = None,
            extra: Mapping[str, object] | None = None) -> dict[str, object]:
    out: dict[str, object] = {"ok": ok, "errno": err, "error": None, "value": value}
    if err is not None:
        out["error"] = f"{errno_mod.errorcode.get(err, 'E?')}: {os.strerror(err)}"
    out.update(extra or {})
    return out


def open_and_read(name: str, event_type: int, config: int, pid: int, cpu: int, flags: int) -> dict[str, object]:
    """Open one event, enable it, read its 8-byte count, close it; report errno on failure."""
    extra: dict[str, object] = {"event": name, "pid": pid, "cpu": cpu}
    nr = SYSCALL_NR.get(os.uname().machine)
    if nr is None:
        return _result(False, errno_mod.ENOSYS, extra={**extra, "arch": os.uname().machine})
    libc = ctypes.CDLL(None, use_errno=True)
    attr = perf_event_attr(event_type, config, flags | ATTR_DISABLED)
    fd = libc.syscall(ctypes.c_long(nr), attr, ctypes.c_int(pid), ctypes.c_int(cpu), ctypes.c_int(-1),
                      ctypes.c_ulong(PERF_FLAG_FD_CLOEXEC))
    if fd < 0:
        return _result(False, ctypes.get_errno(), extra=extra)
    try:
        import fcntl

        fcntl.ioctl(fd, PERF_EVENT_IOC_ENABLE, 0)
        sum(range(10000))  # a little work, so the clock events have something to count
        raw = os.read(fd, 8)
        return _result(True, value=struct.unpack("=Q", raw)[0] if len(raw) == 8 else None, extra=extra)
    except OSError as exc:
        return _result(False, exc.errno, extra=extra)
    finally:
        os.close(fd)


def rapl_event(pmu_dir: str) -> tuple[int, int, int] | None:
    """(type, config, cpu) of the power PMU's energy-pkg event, or None without that PMU."""
    try:
        with open(os.path.join(pmu_dir, "type")) as f:
            pmu_type = int(f.read().strip())
        with open(os.path.join(pmu_dir, "events", "energy-pkg")) as f:
            # "event=0x02" (perhaps among other terms, comma-separated)
            terms = dict(t.strip().partition("=")[::2] for t in f.read().split(","))
        config = int(terms["event"], 0)
        with open(os.path.join(pmu_dir, "cpumask")) as f:
            first = f.read().strip().split(",")[0].split("-")[0]  # "0,28" or "0-3": its first CPU
    except (OSError, ValueError, KeyError):
        return None
    return pmu_type, config, int(first) if first.isdigit() else 0


def probe(pmu_dir: str | None = None) -> dict:
    """Both probes, as the JSON-able dict that main() prints."""
    own = open_and_read("task-clock", PERF_TYPE_SOFTWARE, PERF_COUNT_SW_TASK_CLOCK, 0, -1,
                        ATTR_EXCLUDE_KERNEL | ATTR_EXCLUDE_HV)
    dirs = (pmu_dir,) if pmu_dir else PMU_DIRS
    rapl = next((e for e in (rapl_event(d) for d in dirs) if e is not None), None)
    if rapl is not None:
        pmu_type, config, cpu = rapl
        # The power PMU rejects exclude_* bits and per-task events: pid -1 on one CPU, like Alumet.
        cpu_wide = open_and_read("power/energy-pkg", pmu_type, config, -1, cpu, 0)
    else:
        cpu_wide = open_and_read("cpu-clock", PERF_TYPE_SOFTWARE, PERF_COUNT_SW_CPU_CLOCK, -1, 0, 0)
    return {"own": own, "cpu_wide": cpu_wide, "rapl": rapl is not None, "uid": os.geteuid()}


def to_json(value: object) -> str:
    """The few JSON types the probe prints. Not the json module: importing it (and re) costs more than
    the probe itself, and doctor runs this script on every call."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{to_json(str(k))}: {to_json(v)}" for k, v in sorted(value.items())) + "}"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "".join(c if c >= " " else f"\\u{ord(c):04x}" for c in text) + '"'


def main(argv: list[str] | None = None) -> int:
    """Usage: perf_event.py [--pmu DIR]  (DIR: the power PMU directory, default /sys/.../power)."""
    args = sys.argv[1:] if argv is None else argv
    pmu = args[args.index("--pmu") + 1] if "--pmu" in args[:-1] else None
    print(to_json(probe(pmu)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
