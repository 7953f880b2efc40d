"""File capabilities: decode the security.capability xattr and parse getcap's output.

Pure functions, no host access: the agent.capabilities check and the capabilities role's tests share them.
"""

# No `from __future__ import annotations`: loaded as an Ansible filter plugin (not in sys.modules), string
# annotations would break @dataclass.
import re
import shlex
import struct
from dataclasses import dataclass

# capability(7) numbers, linux/capability.h. Older libcap prints numbers it has no name for.
CAP_NAMES: tuple[str, ...] = (
    "cap_chown", "cap_dac_override", "cap_dac_read_search", "cap_fowner", "cap_fsetid", "cap_kill",
    "cap_setgid", "cap_setuid", "cap_setpcap", "cap_linux_immutable", "cap_net_bind_service",
    "cap_net_broadcast", "cap_net_admin", "cap_net_raw", "cap_ipc_lock", "cap_ipc_owner", "cap_sys_module",
    "cap_sys_rawio", "cap_sys_chroot", "cap_sys_ptrace", "cap_sys_pacct", "cap_sys_admin", "cap_sys_boot",
    "cap_sys_nice", "cap_sys_resource", "cap_sys_time", "cap_sys_tty_config", "cap_mknod", "cap_lease",
    "cap_audit_write", "cap_audit_control", "cap_setfcap", "cap_mac_override", "cap_mac_admin", "cap_syslog",
    "cap_wake_alarm", "cap_block_suspend", "cap_audit_read", "cap_perfmon", "cap_bpf", "cap_checkpoint_restore",
)
CAP_NUMBERS: dict[str, int] = {name: number for number, name in enumerate(CAP_NAMES)}

VFS_CAP_REVISION_MASK = 0xFF000000
VFS_CAP_FLAGS_EFFECTIVE = 0x000001
VFS_CAP_REVISION_1 = 0x01000000  # 32-bit sets, pre-2.6.25; still accepted by the kernel
VFS_CAP_REVISION_2 = 0x02000000
VFS_CAP_REVISION_3 = 0x03000000  # adds the namespace root uid (setcap inside a user namespace)
_SIZES = {VFS_CAP_REVISION_1: 12, VFS_CAP_REVISION_2: 20, VFS_CAP_REVISION_3: 24}


class CapabilityError(ValueError):
    """A security.capability value or a getcap line that cannot be understood."""


def cap_name(number: int) -> str:
    return CAP_NAMES[number] if 0 <= number < len(CAP_NAMES) else f"cap_{number}"


def cap_number(name: str) -> int:
    """'cap_perfmon' or 'CAP_PERFMON' -> 38; '38' or 'cap_38' (unknown to an old libcap) -> 38."""
    name = name.strip().lower()
    if name in CAP_NUMBERS:
        return CAP_NUMBERS[name]
    digits = name.removeprefix("cap_")
    if digits.isdigit():
        return int(digits)
    raise CapabilityError(f"unknown capability {name!r}")


def _names(mask: int) -> frozenset[str]:
    return frozenset(cap_name(bit) for bit in range(64) if mask >> bit & 1)


@dataclass(frozen=True)
class FileCaps:
    """The capability sets of one file, as the kernel will apply them at execve."""

    permitted: frozenset[str] = frozenset()
    inheritable: frozenset[str] = frozenset()
    effective: bool = False  # one flag for the whole file: raise every permitted capability at exec
    revision: int = 2
    rootid: int | None = None

    @property
    def effective_names(self) -> frozenset[str]:
        return self.permitted if self.effective else frozenset()

    def sorted_effective(self) -> list[str]:
        return sorted(self.effective_names, key=cap_number)


def parse_bounding_set(status: str) -> frozenset[str] | None:
    """CapBnd of a /proc/PID/status text: the capabilities any execve in this environment may gain."""
    for line in status.splitlines():
        if line.startswith("CapBnd:"):
            return _names(int(line.split(":", 1)[1].strip(), 16))
    return None


def decode_xattr(blob: bytes) -> FileCaps:
    """Decode struct vfs_cap_data / vfs_ns_cap_data (little endian, linux/capability.h)."""
    if len(blob) < 4:
        raise CapabilityError(f"security.capability too short ({len(blob)} bytes)")
    (magic,) = struct.unpack_from("<I", blob)
    revision = magic & VFS_CAP_REVISION_MASK
    size = _SIZES.get(revision)
    if size is None:
        raise CapabilityError(f"unknown security.capability revision {revision >> 24:#x}")
    if len(blob) != size:
        raise CapabilityError(f"security.capability revision {revision >> 24} should be {size} bytes, not {len(blob)}")
    words = struct.unpack_from(f"<{(size - 4) // 4}I", blob, 4)
    permitted, inheritable = words[0], words[1]
    if revision != VFS_CAP_REVISION_1:
        permitted |= words[2] << 32
        inheritable |= words[3] << 32
    return FileCaps(
        permitted=_names(permitted),
        inheritable=_names(inheritable),
        effective=bool(magic & VFS_CAP_FLAGS_EFFECTIVE),
        revision=revision >> 24,
        rootid=words[4] if revision == VFS_CAP_REVISION_3 else None,
    )


# One clause of cap_text_formats(7): an optional capability list, then operator/flags pairs.
_CLAUSE = re.compile(r"^(?P<caps>[^=+\-]*)(?P<actions>(?:[=+\-][eip]*)+)$")
_ACTION = re.compile(r"([=+\-])([eip]*)")


def parse_cap_text(text: str) -> FileCaps:
    """Parse the textual form of getcap/cap_to_text: new 'cap_a,cap_b=ep' and old '= cap_a,cap_b+ep'.

    Clauses apply left to right; an empty list or 'all' before '=' means every capability.
    """
    sets: dict[str, set[str]] = {"e": set(), "i": set(), "p": set()}
    text = re.sub(r"\[rootid=\d+\]", "", text)  # getcap -n style suffix, not a clause
    for clause in text.split():
        match = _CLAUSE.match(clause)
        if not match:
            raise CapabilityError(f"cannot parse capability clause {clause!r}")
        caps_text = match["caps"].strip(",")
        if caps_text in ("", "all"):
            caps = set(CAP_NAMES)
        else:
            caps = {cap_name(cap_number(c)) for c in caps_text.split(",") if c}
        for op, flags in _ACTION.findall(match["actions"]):
            if op == "=":
                for flag_set in sets.values():
                    flag_set -= caps
            for flag in flags:
                if op == "-":
                    sets[flag] -= caps
                else:
                    sets[flag] |= caps
    permitted = frozenset(sets["p"])
    # The file has one effective bit; getcap prints 'e' on exactly the permitted (or inherited) ones.
    return FileCaps(permitted=permitted, inheritable=frozenset(sets["i"]), effective=bool(sets["e"]))


def parse_getcap_line(output: str, path: str) -> FileCaps | None:
    """getcap's answer for `path`: None when it printed nothing (no capabilities)."""
    for line in output.splitlines():
        line = line.strip()
        if not line.startswith(path):
            continue
        rest = line[len(path):]
        if rest and not rest[0].isspace():
            continue  # another file whose name merely starts with `path`
        rest = rest.strip()
        # libcap < 2.41 wrote 'PATH = cap_a,cap_b+ep': the leading '=' is its own clause, not a separator.
        return parse_cap_text(rest)
    return None


# Other users' /proc/PID/smaps_rollup and /proc/PID/exe; bypasses hidepid. Granted only where the host needs
# it (ptrace_need.py; upstream's packages grant it everywhere since 2026-02, see docs/SECURITY.md).
PTRACE = "cap_sys_ptrace"


def required_caps(perfmon_capability: bool = True) -> tuple[str, ...]:
    """cap_perfmon exists from Linux 5.8; before it, cap_sys_admin grants perf_event_open's privileges."""
    return ("cap_perfmon" if perfmon_capability else "cap_sys_admin", "cap_sys_nice")


def setcap_command(path: str, perfmon_capability: bool = True, ptrace: bool = False) -> str:
    """One setcap call: each call replaces the whole set, so everything goes in at once."""
    caps = " ".join(f"{c}=ep" for c in (*required_caps(perfmon_capability), *([PTRACE] if ptrace else [])))
    return f"sudo setcap {shlex.quote(caps)} {shlex.quote(path)}"


def beyond_bounding_set(caps: FileCaps, status: str) -> list[str]:
    """The permitted capabilities of an effective-bit file outside the bounding set of /proc/PID/status."""
    bounding = parse_bounding_set(status)
    return sorted(caps.permitted - bounding, key=cap_number) if caps.effective and bounding is not None else []


def bounding_set_refusal(caps: FileCaps, status: str, program: str = "alumet-agent") -> tuple[str, str] | None:
    """(what is wrong, what fixes it) when the kernel refuses to execute a file carrying `caps` in the
    environment whose /proc/PID/status is `status`: permitted capabilities outside the bounding set of an
    effective-bit file make execve fail with EPERM, for every user (a container started without them).
    None when they fit or the bounding set is unknown."""
    beyond = beyond_bounding_set(caps, status)
    if not beyond:
        return None
    adds = ",".join(name.removeprefix("cap_").upper() for name in beyond)
    return (f"{', '.join(beyond)} outside this environment's capability bounding set: the kernel refuses to "
            f"execute {program} (EPERM)",
            f"start the container with --cap-add={adds} (podman or docker run), or run the agent on the host")


def _refusal_filter(status: str, cap_text: str, program: str = "alumet-agent") -> str:
    """Ansible filter: the refusal and its fix as two lines ('' when none), for the capabilities role."""
    found = bounding_set_refusal(parse_cap_text(cap_text), status, program)
    return f"{found[0]}\nfix: {found[1]}" if found else ""


class FilterModule:
    """Ansible filter plugin entry point (roles/capabilities/filter_plugins/alumet_capabilities.py links
    here; it runs on the controller): the role explains a refused agent with doctor's own words."""

    def filters(self) -> dict[str, object]:
        return {"alumet_bounding_set_refusal": _refusal_filter}
