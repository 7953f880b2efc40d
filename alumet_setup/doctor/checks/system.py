"""Distribution, kernel and virtualization of the host."""

from __future__ import annotations

import shlex

from packaging.version import InvalidVersion, Version

from ...targets.hosts import Host
from ..findings import Context, Finding, Status, check, ok

# Releases the roles are tested on (molecule) and documented for.
SUPPORTED = {"debian": {"12", "13"}, "ubuntu": {"22.04", "24.04"}}


def parse_os_release(text: str) -> dict[str, str]:
    """os-release(5): KEY=value lines with shell quoting."""
    fields = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        try:
            parts = shlex.split(value)
        except ValueError:
            parts = [value.strip("\"'")]
        fields[key] = parts[0] if parts else ""
    return fields


def os_release(host: Host) -> dict[str, str]:
    text = host.read_text("/etc/os-release") or host.read_text("/usr/lib/os-release") or ""
    return parse_os_release(text)


def kernel_version(release: str) -> Version | None:
    """'6.18.44-fc-v595' -> Version('6.18.44'); None when unparsable."""
    head = release.split("-", 1)[0].split("+", 1)[0]
    try:
        return Version(head)
    except InvalidVersion:
        return None


def kernel_release(host: Host) -> str:
    text = host.read_text("/proc/sys/kernel/osrelease")
    if text:
        return text.strip()
    result = host.run(["uname", "-r"])
    return result.stdout.strip()


@check("system.os", "Distribution")
def distribution(ctx: Context) -> Finding:
    fields = os_release(ctx.host)
    if not fields:
        return Finding(Status.WARN, "no /etc/os-release: distribution unknown")
    dist_id, version = fields.get("ID", "").lower(), fields.get("VERSION_ID", "")
    name = fields.get("PRETTY_NAME") or f"{dist_id} {version}"
    data = {"id": dist_id, "version": version, "codename": fields.get("VERSION_CODENAME", ""),
            "like": fields.get("ID_LIKE", "")}
    if version in SUPPORTED.get(dist_id, ()):
        return ok(f"{name} (supported)", **data)
    supported = ", ".join(f"{d.capitalize()} {v}" for d, vs in SUPPORTED.items() for v in sorted(vs))
    return Finding(Status.WARN, f"{name} is not a supported release ({supported})", data=data)


@check("system.kernel", "Kernel")
def kernel(ctx: Context) -> Finding:
    release = kernel_release(ctx.host)
    version = kernel_version(release)
    if version is None:
        return Finding(Status.WARN, f"kernel release {release!r} not understood", data={"release": release})
    data = {"release": release, "version": str(version), "perfmon_capability": version >= Version("5.8")}
    if version < Version("5.8"):
        return Finding(Status.WARN, f"Linux {release}: older than 5.8, cap_sys_admin stands in for cap_perfmon",
                       data=data)
    return ok(f"Linux {release}", **data)


def _container_kind(host: Host) -> str | None:
    if host.exists("/run/.containerenv"):
        return "podman"
    if host.exists("/.dockerenv"):
        return "docker"
    environ = host.read_text("/run/systemd/container")
    return environ.strip() if environ else None


# What systemd-detect-virt prints inside containers (as opposed to virtual machines).
CONTAINER_KINDS = {"docker", "podman", "lxc", "lxc-libvirt", "systemd-nspawn", "rkt", "wsl", "proot", "pouch",
                   "openvz", "container-other"}


@check("system.virtualization", "Virtualization")
def virtualization(ctx: Context) -> Finding:
    result = ctx.host.run(["systemd-detect-virt"])
    kind = result.stdout.strip() if result.found else ""
    if not kind or kind == "none":
        kind = _container_kind(ctx.host) or ("none" if result.found else "unknown")
    is_container = kind in CONTAINER_KINDS
    data = {"kind": kind, "container": is_container}
    if kind == "none":
        return ok("bare metal", **data)
    if kind == "unknown":
        return Finding(Status.OK, "could not tell (systemd-detect-virt missing)", data=data)
    where = "container" if is_container else "virtual machine"
    return Finding(Status.WARN, f"{where} ({kind}): RAPL and perf counters are usually absent here", data=data)


@check("system.choices", "Install choices")
def install_choices(ctx: Context) -> Finding:
    """Which choices of `alumet-setup install` the other checks judge this host against (choices.py)."""
    record = ctx.options.record
    data: dict[str, object] = {"path": record.path, "status": record.status, "choices": dict(record.values)}
    if record.status == "absent":
        return ok(f"no install record ({record.path}): judged against the install defaults", **data)
    if record.status != "ok":
        data["problem"] = record.problem
        # Removing it is safe: the next install writes it again.
        return Finding(Status.WARN, f"{record.path} ignored, {record.problem}: judged against the install defaults",
                       fix=f"sudo rm -- {shlex.quote(record.path)}", data=data)
    if record.ignored:
        data["ignored"] = list(record.ignored)
    from ..choices import describe

    return ok(f"judged against {describe(record) or 'the install defaults'} ({record.path})", **data)
