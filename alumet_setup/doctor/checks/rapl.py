"""RAPL energy counters: the perf_events power PMU, the powercap fallback, and whether the agent can read them."""

from __future__ import annotations

import re
import shlex
from typing import Any

from packaging.version import Version

from ... import paths
from ...targets.hosts import Host
from ..findings import Context, Finding, Status, check, not_available, ok

PMU_DIRS = ("/sys/devices/power", "/sys/bus/event_source/devices/power")
POWERCAP_DIR = "/sys/devices/virtual/powercap/intel-rapl"
DOMAINS = ("pkg", "cores", "gpu", "psys", "ram")
AMD_FIXED = Version("5.17")  # AMD RAPL through perf_events reports wrong values before this kernel
# What the rapl plugin of alumet-agent v0.9.5 says when it cannot read RAPL, by case (docs/alumet-upstream.md,
# "What the rapl plugin says"): its messages, as doctor quotes them and the probe finds them in the agent's log.
AGENT_PERF_REFUSED = "I could not use perf_events to read RAPL energy counters"
AGENT_POWERCAP_REFUSED = "I could not use the powercap sysfs to read RAPL energy counters"
AGENT_BOTH_FAILED = "Both perf_events and powercap failed, unable to read RAPL counters"
AGENT_NO_ZONES = "At least one power zone is required for PowercapProbe"
AGENT_NO_PMU = "/sys/devices/power does not exist"
AGENT_INCONSISTENT = "Powercap and perf_events don't report the same RAPL domains"


def agent_refusal(has_pmu: bool, has_zones: bool, powercap_dir: bool) -> str:
    """The words the rapl plugin stops with on a host where it can read neither interface."""
    if has_zones:  # readable names, unreadable energy_uj: perf_events (if any) failed first, then powercap
        return AGENT_POWERCAP_REFUSED
    if has_pmu:  # no powercap zone: perf_events only, and it was refused
        return AGENT_PERF_REFUSED
    # No PMU: a powercap directory without zones leaves an empty list, no directory an error as well.
    return AGENT_NO_ZONES if powercap_dir else AGENT_BOTH_FAILED

_ZONE = re.compile(r"^intel-rapl:\d+$")
_SUBZONE = re.compile(r"^intel-rapl:\d+:\d+$")


def pmu_dir(host: Host) -> str | None:
    return next((d for d in PMU_DIRS if host.exists(d)), None)


def _read(host: Host, path: str) -> str | None:
    text = host.read_text(path)
    return None if text is None else text.strip()


def read_pmu(host: Host, directory: str) -> dict[str, Any]:
    """type, cpumask and the energy-* events (config from `event=0x..`, scale, unit) of the power PMU."""
    events: dict[str, dict[str, Any]] = {}
    for domain in DOMAINS:
        base = f"{directory}/events/energy-{domain}"
        spec = _read(host, base)
        if spec is None:
            continue
        match = re.search(r"event=(0x[0-9a-fA-F]+|\d+)", spec)
        scale = _read(host, base + ".scale")
        events[f"energy-{domain}"] = {
            "config": int(match.group(1), 0) if match else None,
            "scale": float(scale) if scale else None,
            "unit": _read(host, base + ".unit"),
        }
    pmu_type = _read(host, f"{directory}/type")
    return {"type": int(pmu_type) if pmu_type and pmu_type.isdigit() else None,
            "cpumask": _read(host, f"{directory}/cpumask"), "events": events}


def cpu_vendor(host: Host) -> str | None:
    for line in (host.read_text("/proc/cpuinfo") or "").splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "vendor_id":
            return value.strip()
    return None


def zones(host: Host) -> list[str]:
    """Sysfs paths of the package zones and their subzones (intel-rapl:N, intel-rapl:N:M)."""
    found = []
    for name in host.listdir(POWERCAP_DIR):
        if _ZONE.match(name):
            zone = f"{POWERCAP_DIR}/{name}"
            found.append(zone)
            found += [f"{zone}/{sub}" for sub in host.listdir(zone) if _SUBZONE.match(sub)]
    return found


def group_ids(host: Host) -> dict[int, str]:
    """gid -> name from the host's /etc/group (not this machine's: doctor may run over SSH)."""
    names = {}
    for line in (host.read_text("/etc/group") or "").splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and fields[2].isdigit():
            names[int(fields[2])] = fields[0]
    return names


def grant_command(group: str) -> str:
    """Give `group` read access to every energy_uj now (0440 also closes world read)."""
    files = f"{POWERCAP_DIR}/intel-rapl:*/energy_uj {POWERCAP_DIR}/intel-rapl:*/intel-rapl:*/energy_uj"
    return f"sudo sh -c {shlex.quote(f'chgrp {group} {files} && chmod 0440 {files}')}"


@check("rapl.pmu", "RAPL perf PMU", needs=("system.kernel",))
def pmu(ctx: Context) -> Finding:
    directory = pmu_dir(ctx.host)
    vendor = cpu_vendor(ctx.host)
    if directory is None:
        return not_available("/sys/devices/power does not exist: the RAPL PMU module is absent or this is a VM",
                             vendor=vendor)
    data = {**read_pmu(ctx.host, directory), "vendor": vendor}
    domains = ", ".join(name.removeprefix("energy-") for name in data["events"])
    if not data["events"]:
        return Finding(Status.WARN, f"{directory} has no energy-* events: RAPL is not exposed by this CPU", data=data)
    if vendor == "AuthenticAMD":
        release = ctx.data("system.kernel", "version")
        if release and Version(release) < AMD_FIXED:
            return Finding(Status.WARN, f"AMD RAPL through perf_events is buggy before Linux {AMD_FIXED} "
                           f"(running {release}): upgrade the kernel", data=data)
    return ok(f"power PMU type {data['type']}, domains {domains}, CPUs {data['cpumask']}", **data)


@check("rapl.powercap", "RAPL powercap")
def powercap(ctx: Context) -> Finding:
    found = zones(ctx.host)
    if not found:
        return not_available(f"{POWERCAP_DIR} has no RAPL zones: powercap intel_rapl is absent or this is a VM")
    group = ctx.options.rapl_group
    gids = group_ids(ctx.host)
    gid = next((g for g, name in gids.items() if name == group), None)
    listed = []
    for zone in found:
        st = ctx.host.stat(f"{zone}/energy_uj")
        listed.append({"zone": zone.rsplit("/", 1)[1], "name": _read(ctx.host, f"{zone}/name"),
                       "mode": f"{st.mode:04o}" if st else None,
                       "group": gids.get(st.gid, str(st.gid)) if st else None,
                       "group_read": bool(st and gid is not None and st.gid == gid and st.mode & 0o040),
                       "world_read": bool(st and st.mode & 0o004)})
    group_readable = all(z["group_read"] for z in listed)
    world_readable = any(z["world_read"] for z in listed)
    data = {"zones": listed, "group": group, "gid": gid,
            "group_readable": group_readable, "world_readable": world_readable}
    names = ", ".join(f"{z['zone']} {z['name']}" for z in listed)
    fix = grant_command(group)
    if world_readable and not ctx.options.powercap_world_readable:
        return Finding(Status.WARN, "energy_uj is world-readable: any user can run the CVE-2020-8694 (PLATYPUS) "
                       f"power side channel; grant group {group} instead", fix=fix, install_step="powercap", data=data)
    if group_readable or world_readable:
        who = "everyone (as asked)" if world_readable and not group_readable else f"group {group}"
        return ok(f"{len(listed)} zones ({names}), energy_uj readable by {who}", **data)
    if gid is None:
        return Finding(Status.WARN, f"group {group} does not exist: energy_uj stays readable by root only",
                       fix=(f"sudo groupadd --system {group}", fix), install_step="group", data=data)
    modes = sorted({f"{z['mode']} {z['group']}" for z in listed})
    return Finding(Status.WARN, f"energy_uj not readable by group {group} ({'; '.join(modes)}): "
                   "the powercap fallback is closed to the agent", fix=fix, install_step="powercap", data=data)


def udev_rule(group: str) -> str:
    """The rule that re-grants `group` read on energy_uj whenever a powercap zone appears (every boot):
    udev GROUP=/MODE= do not apply to sysfs attributes, hence RUN+= chgrp/chmod."""
    return (f'ACTION=="add", SUBSYSTEM=="powercap", KERNEL=="intel-rapl:*", '
            f'RUN+="/bin/chgrp {group} /sys%p/energy_uj", RUN+="/bin/chmod g+r /sys%p/energy_uj"')


def _rule_grants(rule: str, group: str, world: bool) -> bool:
    """Does the udev rule chgrp energy_uj to `group` and chmod it group-readable (or world, when asked)?"""
    lines = [line for line in rule.splitlines() if not line.lstrip().startswith("#")]
    text = "\n".join(lines)
    if "powercap" not in text or "energy_uj" not in text:
        return False
    chgrp = re.search(rf"chgrp\s+{re.escape(group)}\b", text) is not None
    chmod = re.search(r"chmod\s+(?:[ugo]*g[ugo]*\+r\w*|0?[0-7][4-7][0-7])\b", text) is not None
    if world:
        return chmod or re.search(r"chmod\s+(?:a|[ugo]*o[ugo]*)\+r|chmod\s+0?[0-7][0-7][4-7]\b", text) is not None
    return chgrp and chmod


@check("rapl.persistence", "RAPL access after reboot", needs=("rapl.powercap",))
def persistence(ctx: Context) -> Finding:
    if ctx.finding("rapl.powercap").status is Status.NOT_AVAILABLE:
        return not_available("no powercap zones: nothing to persist")
    group = ctx.options.rapl_group
    rule = ctx.host.read_text(paths.UDEV_RULE)
    data = {"rule": paths.UDEV_RULE, "present": rule is not None}
    fix = (f"printf '%s\\n' {shlex.quote(udev_rule(group))} | sudo tee {paths.UDEV_RULE} >/dev/null",
           "sudo udevadm trigger --subsystem-match=powercap --action=add")
    if rule is None:
        return Finding(Status.WARN, f"{paths.UDEV_RULE} is missing: energy_uj returns to 0400 root at the next boot",
                       fix=fix, install_step="powercap", data=data)
    if not _rule_grants(rule, group, ctx.options.powercap_world_readable):
        return Finding(Status.WARN, f"{paths.UDEV_RULE} does not chgrp {group} and chmod g+r energy_uj",
                       fix=fix, install_step="powercap", data=data)
    return ok(f"{paths.UDEV_RULE} grants group {group} read on energy_uj at every boot", **data)


def _perf_path(ctx: Context) -> tuple[bool, str]:
    """Can the agent open the power PMU? Measured by the probe when it could, else inferred."""
    probe = ctx.finding("kernel.perf_probe")
    if probe.data.get("rapl") and probe.data.get("judged") == "agent":
        if probe.data.get("cpu_wide_ok"):
            return True, "perf_events (measured with the agent's privileges)"
        return False, f"perf_events refused: {probe.detail}"
    paranoid = ctx.data("kernel.perf_event_paranoid", "live")
    perfmon = bool(ctx.data("agent.capabilities", "has_perfmon", False))
    if paranoid is not None and paranoid <= 0:
        return True, f"perf_events (perf_event_paranoid {paranoid})"
    if paranoid is not None and paranoid <= 2 and perfmon:
        return True, f"perf_events (cap_perfmon, perf_event_paranoid {paranoid})"
    why = "cap_perfmon missing" if not perfmon else f"perf_event_paranoid {paranoid} is above 2"
    return False, f"perf_events refused: {why}"


@check("rapl.access", "RAPL counters readable", needs=(
    "rapl.pmu", "rapl.powercap", "kernel.perf_probe", "kernel.perf_event_paranoid", "agent.capabilities"))
def access(ctx: Context) -> Finding:
    pmu_f, cap_f = ctx.finding("rapl.pmu"), ctx.finding("rapl.powercap")
    has_pmu = pmu_f.status is not Status.NOT_AVAILABLE
    has_powercap = cap_f.status is not Status.NOT_AVAILABLE
    if not has_pmu and not has_powercap:
        return not_available("no RAPL here: neither the power PMU nor powercap zones (VM or container)")
    reasons = []
    data: dict[str, Any] = {"pmu": has_pmu, "powercap": has_powercap, "perf_ok": False, "powercap_ok": False}
    if has_pmu:
        data["perf_ok"], why = _perf_path(ctx)
        if data["perf_ok"]:
            return ok(f"via {why}", **data)
        reasons.append(why)
    if has_powercap:
        data["powercap_ok"] = bool(cap_f.data.get("group_readable") or cap_f.data.get("world_readable"))
        if data["powercap_ok"]:
            return ok(f"via powercap ({cap_f.detail})", **data)
        reasons.append(f"powercap: {cap_f.detail}")
    # Point at the least-privilege remedy: the agent's capabilities first, then powercap permissions.
    fixer = next((f for f in (ctx.finding("kernel.perf_event_paranoid"), ctx.finding("agent.capabilities"))
                  if has_pmu and f.status in (Status.FAIL, Status.WARN) and f.fix), None) or cap_f
    words = agent_refusal(has_pmu, has_powercap, True)
    return Finding(Status.FAIL, f"Alumet would say \"{words}\": {'; '.join(reasons)}",
                   fix=fixer.fix, install_step=fixer.install_step, data=data)
