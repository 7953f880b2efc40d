"""The alumet-agent binary: where it is, which version, whether it is safe to carry capabilities, and
the capabilities it carries."""

from __future__ import annotations

import posixpath
import re
import shlex

from ... import paths
from ...hostside.capabilities import (
    CapabilityError,
    FileCaps,
    beyond_bounding_set,
    bounding_set_refusal,
    decode_xattr,
    parse_getcap_line,
    required_caps,
    setcap_command,
)
from ...hostside.ptrace_need import all_reasons
from ...targets.hosts import Host
from ..findings import Context, Finding, Status, check
from ..mounts import Mount, mount_at, mount_of, parse_mountinfo

AGENT = "alumet-agent"
# Beyond PATH: where the agent role, a plain `cargo install` and our rustup layout put it.
SEARCH_DIRS = (
    posixpath.dirname(paths.AGENT_LINK),
    posixpath.dirname(paths.AGENT_BIN),
    f"{paths.CARGO_HOME}/bin",
    "/root/.cargo/bin",
)
INSTALL_FIX = "alumet-setup install"

_VERSION = re.compile(r"(?<![\w.])v?(\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.+-]+)?)")


def parse_version(output: str) -> str | None:
    """'alumet-agent 0.9.5' (possibly with a build suffix or more lines) -> '0.9.5'."""
    for line in output.splitlines():
        if AGENT in line or "alumet" in line.lower():
            match = _VERSION.search(line)
            if match:
                return match[1]
    match = _VERSION.search(output)
    return match[1] if match else None


def locate(host: Host, agent_path: str | None) -> str | None:
    """The agent as the user would run it: --agent-path, else PATH, else the usual install places."""
    if agent_path:
        st = host.stat(agent_path)
        return agent_path if st and st.is_file else None
    return host.which(AGENT, extra_dirs=SEARCH_DIRS)


def _chain(path: str) -> list[str]:
    """`path` and every directory above it, up to /."""
    chain = [path]
    while path != "/":
        path = posixpath.dirname(path)
        chain.append(path)
    return chain


def unsafe_paths(host: Host, found: str, real: str) -> tuple[list[str], list[str], list[str]]:
    """Problems with a binary that carries capabilities: whoever can rewrite the file, or rename
    anything in a directory on its path, can run their own code with those capabilities.

    Returns (problems, paths to chown to root, paths to chmod go-w).
    """
    candidates = _chain(real)
    if found != real:
        # The link itself is harmless, but whoever can replace it decides what users run.
        candidates += _chain(host.realpath(posixpath.dirname(found)))
    problems: list[str] = []
    chown: list[str] = []
    chmod: list[str] = []
    for path in dict.fromkeys(candidates):
        st = host.stat(path)
        if st is None:
            continue
        if st.uid != 0:
            problems.append(f"{path} is owned by uid {st.uid}, not root")
            chown.append(path)
        if st.mode & 0o022:
            who = " and ".join(w for w, bit in (("group", 0o020), ("others", 0o002)) if st.mode & bit)
            problems.append(f"{path} is writable by {who} (mode {st.mode:04o})")
            chmod.append(path)
    return problems, chown, chmod


def _permission_fix(chown: list[str], chmod: list[str]) -> list[str]:
    parts = []
    if chown:
        parts.append("sudo chown root:root " + " ".join(shlex.quote(p) for p in chown))
    if chmod:
        parts.append("sudo chmod go-w " + " ".join(shlex.quote(p) for p in chmod))
    return parts


@check("agent.binary", AGENT)
def binary(ctx: Context) -> Finding:
    host = ctx.host
    found = locate(host, ctx.options.agent_path)
    data: dict[str, object] = {"path": found, "real_path": None, "version": None, "problems": []}
    if found is None:
        where = ctx.options.agent_path or f"PATH or {', '.join(SEARCH_DIRS)}"
        return Finding(Status.FAIL, f"no {AGENT} in {where}", fix=INSTALL_FIX, install_step="agent", data=data)
    real = host.realpath(found)  # capabilities sit on the real file, not on a link to it
    data["real_path"] = real
    shown = found if found == real else f"{found} -> {real}"

    problems, chown, chmod = unsafe_paths(host, found, real)
    data["problems"] = problems
    if problems:
        # Not run: doctor may run as root, and anyone could have replaced this file.
        return Finding(Status.FAIL, f"unsafe to carry capabilities: {problems[0]}" + _more(problems),
                       fix=_permission_fix(chown, chmod), install_step="agent", data=data)

    result = host.run([found, "--version"], timeout=5)
    version = parse_version(result.stdout) if result.ok else None
    data["version"] = version
    if not result.ok:
        why = (result.stderr.strip().splitlines() or [f"exit code {result.rc}"])[-1]
        refusal = _refusal(host, real) if "Operation not permitted" in why else None
        if refusal:  # reinstalling would not help: the environment refuses the capabilities
            problems.append(f"`{AGENT} --version` failed: {why}: {refusal[0]}")
            return Finding(Status.FAIL, f"{shown}: {problems[0]}", fix=refusal[1], data=data)
        if "Operation not permitted" in why:
            why += " (execve refused: see File capabilities)"
        problems.append(f"`{AGENT} --version` failed: {why}")
        return Finding(Status.FAIL, f"{shown}: {problems[0]}", install_step="agent", data=data)
    if version is None:
        return Finding(Status.WARN, f"{shown}: version not understood in {result.stdout.strip()[:60]!r}",
                       data=data)
    return Finding(Status.OK, f"{AGENT} {version} at {shown}", data=data)


def _refusal(host: Host, real: str) -> tuple[str, str] | None:
    """Why the kernel refuses to execute the agent here, when its capabilities exceed the bounding set."""
    try:
        caps = decode_xattr(host.getxattr(real, "security.capability") or b"")
    except CapabilityError:
        return None
    return bounding_set_refusal(caps, host.read_text("/proc/self/status") or "", AGENT)


def _more(items: list[str]) -> str:
    return f" (and {len(items) - 1} more)" if len(items) > 1 else ""


def _getcap(host: Host, path: str) -> FileCaps | None:
    """getcap's view, for a cross-check; None when getcap is not installed or failed."""
    getcap = host.which("getcap", extra_dirs=("/usr/sbin", "/sbin"))
    if getcap is None:
        return None
    result = host.run([getcap, path], timeout=5)
    if not result.ok:
        return None
    try:
        return parse_getcap_line(result.stdout, path) or FileCaps()
    except CapabilityError:
        return None


def _ignoring_mount(mounts: list[Mount], path: str) -> str | None:
    """Why the kernel would ignore file capabilities on `path`'s filesystem, if it would."""
    mount = mount_of(mounts, path)
    if mount is None:
        return None
    if "nosuid" in mount.mount_options:
        return f"{mount.mount_point} is mounted nosuid"
    if mount.fstype.startswith("nfs"):
        return f"{mount.mount_point} is on {mount.fstype}"
    return None


def ptrace_reasons(ctx: Context, mounts: list[Mount]) -> list[str] | None:
    """Why this host needs cap_sys_ptrace on the agent (ptrace_need.py, shared with the capabilities role):
    its Alumet configuration and a hidepid that does not exempt the group. None: the configuration could
    not be read or parsed (config.file says why)."""
    host = ctx.host
    try:
        text = host.read_text(ctx.options.config_path)
    except PermissionError:
        return None
    doc = None
    if text is not None:
        import tomllib  # only with a file to judge: doctor's start-up time counts

        from ...hostside.alumet_schema import parse_toml

        try:
            doc = parse_toml(text)
        except tomllib.TOMLDecodeError:
            return None
    proc = mount_at(mounts, "/proc")
    from .hidepid import group_gid  # at run time: importing hidepid here would reorder the report

    return all_reasons(doc, proc.super_options if proc else {}, group_gid(host, ctx.options.proc_group))


def _ptrace_choice(value: object) -> str:
    return "auto" if value == "auto" else "true" if value is True else "false"


@check("agent.capabilities", "File capabilities", needs=("agent.binary", "system.kernel"))
def file_capabilities(ctx: Context) -> Finding:
    host = ctx.host
    data: dict[str, object] = {"effective": [], "has_perfmon": False, "has_sys_nice": False,
                               "has_ptrace": False, "source": None}
    real = ctx.data("agent.binary", "real_path")
    if not real:
        return Finding(Status.FAIL, f"no {AGENT} binary", fix=INSTALL_FIX, install_step="agent", data=data)
    # cap_perfmon exists from Linux 5.8; unknown kernel versions are assumed recent.
    perfmon_capability = bool(ctx.data("system.kernel", "perfmon_capability", True))
    mounts = parse_mountinfo(host.read_text("/proc/self/mountinfo") or "")
    # cap_sys_ptrace as install was asked (capabilities_ptrace, recorded) and as this host needs it.
    choice = _ptrace_choice(ctx.options.capabilities_ptrace)
    needed_by = ptrace_reasons(ctx, mounts)
    data["ptrace_choice"], data["ptrace_needed_by"] = choice, needed_by
    want_ptrace = choice == "true" or (choice == "auto" and bool(needed_by))
    fix = setcap_command(real, perfmon_capability, ptrace=want_ptrace)

    def finding(status: Status, detail: str) -> Finding:
        return Finding(status, detail, fix=None if status is Status.OK else fix,
                       install_step=None if status is Status.OK else "capabilities", data=data)

    blob = host.getxattr(real, "security.capability")
    try:
        caps = decode_xattr(blob) if blob is not None else None
    except CapabilityError as exc:
        return finding(Status.FAIL, f"{real}: {exc}")
    listed = _getcap(host, real)
    if caps is None and listed is not None and listed.permitted:
        caps, data["source"] = listed, "getcap"  # a host where the xattr could not be read
    elif caps is not None:
        data["source"] = "xattr"
    caps = caps or FileCaps()
    data["permitted"] = sorted(caps.permitted)
    effective = caps.effective_names
    data["effective"] = caps.sorted_effective()

    ignored = _ignoring_mount(mounts, real) if caps.permitted else None
    data["ignored_by"] = ignored
    held = frozenset() if ignored else effective  # what the agent really gets at exec
    # The kernel's perfmon_capable(): cap_sys_admin still grants what cap_perfmon does.
    perfmon_caps = {"cap_perfmon", "cap_sys_admin"} if perfmon_capability else {"cap_sys_admin"}
    data["has_perfmon"] = bool(held & perfmon_caps)
    data["has_sys_nice"] = "cap_sys_nice" in held
    data["has_ptrace"] = "cap_sys_ptrace" in held

    if not caps.permitted:
        return finding(Status.FAIL, f"no file capabilities on {real}")
    if not caps.effective:
        return finding(Status.FAIL, f"{', '.join(sorted(caps.permitted))} permitted but not effective (no +e)")
    perfmon_name, nice = required_caps(perfmon_capability)
    missing = [name for name, has in ((perfmon_name, bool(effective & perfmon_caps)),
                                      (nice, nice in effective)) if not has]
    if missing:
        return finding(Status.FAIL, f"missing {', '.join(missing)} on {real}")
    # A file whose permitted set exceeds the bounding set is not executed at all (EPERM): seen in
    # containers started without these capabilities.
    status = host.read_text("/proc/self/status") or ""
    data["beyond_bounding_set"] = beyond_bounding_set(caps, status)
    refusal = bounding_set_refusal(caps, status, AGENT)
    if refusal:
        return Finding(Status.FAIL, refusal[0], fix=refusal[1], data=data)
    if ignored:
        return finding(Status.WARN, f"capabilities are set but ignored: {ignored}")
    if listed is not None and (listed.effective_names != effective or listed.permitted != caps.permitted):
        return finding(Status.WARN, f"getcap disagrees with the xattr: {', '.join(listed.sorted_effective())}")
    shown = ", ".join(caps.sorted_effective()) + " (effective)"
    has_ptrace = "cap_sys_ptrace" in effective
    if not has_ptrace and needed_by:
        if choice == "false":  # as asked: say what it costs, and how to grant it after all
            return Finding(Status.WARN, f"no cap_sys_ptrace (capabilities_ptrace=false, as install was asked), "
                           f"but {needed_by[0]}", fix=setcap_command(real, perfmon_capability, ptrace=True),
                           data=data)
        return finding(Status.WARN, f"cap_sys_ptrace missing: {needed_by[0]}")
    if has_ptrace and choice == "false":
        return finding(Status.WARN, "cap_sys_ptrace granted, although install was asked capabilities_ptrace=false")
    if not has_ptrace and choice == "true":
        return finding(Status.WARN, "cap_sys_ptrace missing, although install was asked capabilities_ptrace=true")
    if has_ptrace and needed_by == []:
        why = "as install was asked (capabilities_ptrace=true)" if choice == "true" else "not needed here"
        return finding(Status.OK, f"{shown}; cap_sys_ptrace {why}")
    return finding(Status.OK, shown)
