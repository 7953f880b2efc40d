"""kernel.perf_event_paranoid: the live value, the value the next boot will set, and whether the
agent can measure with it.

The boot value follows systemd-sysctl(8) and sysctl.d(5), not procps' `sysctl --system` (which reads
/etc/sysctl.conf last): see docs/alumet-upstream.md. The probe (kernel.perf_probe) lives in perf_probe.py.
"""

from __future__ import annotations

import posixpath
import shlex
from dataclasses import dataclass

from ...hostside import sysctl_precedence as precedence
from ...hostside.sysctl_precedence import Setter, overriding, parse_sysctl
from ...targets.hosts import Host
from ..findings import Context, Finding, Status, check

KEY = "kernel.perf_event_paranoid"
LIVE_PATH = "/proc/sys/kernel/perf_event_paranoid"
RECOMMENDED = 2  # least privilege with cap_perfmon (docs/alumet-upstream.md)
# systemd-analyze cat-config sysctl.d could cross-check the order, but it is not used: it cost 13-31 ms
# here (as much as the rest of this check's file reads), it reads the same files this code reads, and
# on a fixture host it would report the real machine. The fixtures test the order instead.


def key_matches(pattern: str, key: str = KEY) -> bool:
    return precedence.key_matches(pattern, key)


def boot_setters(host: Host) -> list[Setter]:
    """Every place that sets perf_event_paranoid at boot, in application order."""
    # Every candidate file read first, so a remote host is asked its content with its realpath and stat (which
    # decide whether it counts): one round instead of two. host.read_text reads a FIFO or device as absent.
    for _, path in precedence.candidates(host):
        host.read_text(path)
    return precedence.boot_setters(host, KEY)


def kernel_default(host: Host) -> int:
    """The value a kernel starts with when nothing sets it: distribution patches change it."""
    if host.exists("/proc/version_signature"):  # only Ubuntu kernels have it
        return 4
    if "debian-kernel@lists.debian.org" in (host.read_text("/proc/version") or ""):
        return 3
    return 2


# Severity order for combining several judgements into one status.
_RANK = {Status.OK: 0, Status.WARN: 1, Status.FAIL: 2}


@dataclass(frozen=True)
class ParanoidJudgement:
    """What one perf_event_paranoid level means for the agent (judge)."""

    status: Status
    reason: str
    step: str | None = None  # "sysctl" (change the value) or "capabilities" (grant cap_perfmon)


def judge(value: int, has_perfmon: bool, probe: Finding | None) -> ParanoidJudgement:
    """Can the agent open CPU-wide perf events (RAPL PMU, perf plugin) at this level?"""
    if value <= 0:
        # perf_paranoid_cpu() is `paranoid > 0`: CPU-wide events need no capability here.
        return ParanoidJudgement(Status.OK, f"{value}: CPU-wide events allowed without capabilities")
    if value <= 2:
        if has_perfmon:
            return ParanoidJudgement(Status.OK, f"{value} with cap_perfmon")
        limit = "own processes only" if value == 2 else "no CPU-wide events"
        return ParanoidJudgement(Status.FAIL, f"{value} without cap_perfmon: {limit} (RAPL needs CPU-wide events)",
                       "capabilities")
    if value == 3:
        if not has_perfmon:
            return ParanoidJudgement(Status.FAIL, "3 (Debian patch) without cap_perfmon: perf_event_open refused",
                                     "sysctl")
        if probe is not None and probe.status is Status.OK:
            return ParanoidJudgement(Status.OK, "3 (Debian patch): perf_event_open works here (probed)")
        if probe is not None and probe.status is Status.FAIL:
            return ParanoidJudgement(Status.FAIL, f"3 (Debian patch): the probe failed: {probe.detail}", "sysctl")
        return ParanoidJudgement(Status.WARN, "Debian-patched level 3: must be probed", "sysctl")
    return ParanoidJudgement(Status.FAIL, f"{value} (Ubuntu patch): not supported even with capabilities", "sysctl")


_SED_KEY = r"^[[:space:]]*-?[[:space:]]*kernel[./]perf_event_paranoid[[:space:]]*="


def _persist_fix(host: Host, sysctl_file: str, value: int = RECOMMENDED) -> list[str]:
    """Write `value` into alumet-setup's file without losing the file's other settings."""
    line = shlex.quote(f"{KEY} = {value}")
    target = shlex.quote(sysctl_file)
    others = [k for k, _ in parse_sysctl(host.read_text(sysctl_file) or "") if not key_matches(k)]
    if not others:
        return [f"echo {line} | sudo tee {target}"]
    return [f"sudo sed -i -E '/{_SED_KEY}/d' {target}", f"echo {line} | sudo tee -a {target}"]


def _unoverride_fix(host: Host, setter: Setter) -> str:
    """Comment the key out of a file that overrides ours. A vendor file is not edited (an upgrade
    would restore it): a same-named copy in /etc/sysctl.d masks it and keeps its other settings."""
    comment = shlex.quote(f"s/({_SED_KEY})/# \\1/")
    if setter.file.startswith(("/etc/", "/run/")):
        return f"sudo sed -i -E {comment} {shlex.quote(host.realpath(setter.file))}"
    copy = shlex.quote(f"/etc/sysctl.d/{posixpath.basename(setter.file)}")
    return f"sed -E {comment} {shlex.quote(setter.file)} | sudo tee {copy} >/dev/null"


@check("kernel.perf_event_paranoid", "perf_event_paranoid", needs=("agent.capabilities", "kernel.perf_probe"))
def perf_event_paranoid(ctx: Context) -> Finding:
    host = ctx.host
    # The boot setters first: a remote host is asked for them in the round that reads the live value.
    setters = boot_setters(host)
    text = host.read_text(LIVE_PATH)
    if text is None:
        return Finding(Status.NOT_AVAILABLE, f"no {LIVE_PATH}: kernel built without perf events")
    try:
        live = int(text.strip())
    except ValueError:
        return Finding(Status.ERROR, f"{LIVE_PATH}: unexpected value {text.strip()!r}")

    valid = [s for s in setters if s.int_value is not None]  # the kernel refuses the others
    last = valid[-1].int_value if valid else None
    boot = last if last is not None else kernel_default(host)
    boot_file = valid[-1].file if valid else None
    sysctl_file = ctx.options.sysctl_file  # install's choice (perf_paranoid_sysctl_file), recorded
    over = overriding(setters, sysctl_file)
    data = {"live": live, "boot": boot, "boot_file": boot_file,
            "setters": [{"file": s.file, "value": s.value} for s in setters],
            "overriding_files": [s.file for s in over]}

    caps = ctx.finding("agent.capabilities")
    has_perfmon = bool(caps.data.get("has_perfmon"))
    probe = ctx.finding("kernel.perf_probe") if 3 in (live, boot) else None  # only level 3 needs probing
    now = judge(live, has_perfmon, probe)
    later = judge(boot, has_perfmon, probe) if boot != live else now

    # (status, text, step) for each problem; the worst one leads the detail.
    problems: list[tuple[Status, str, str | None]] = []
    notes: list[str] = []
    if now.status is not Status.OK:
        problems.append((now.status, f"live {now.reason}", now.step))
    if boot != live:
        change = f"a reboot will set {boot} ({boot_file or 'the kernel default'})"
        if later.status is Status.OK:
            notes.append(change)
        else:  # not broken yet: a warning
            problems.append((Status.WARN, f"{change}: {later.reason}", later.step))
    if over:
        names = ", ".join(f"{s.file} ({s.value})" for s in over)
        problems.append((Status.WARN, f"{names} overrides {sysctl_file} at boot", "sysctl"))
    if not problems:
        return Finding(Status.OK, "; ".join([f"live {now.reason}", *notes]), data=data)

    problems.sort(key=lambda p: _RANK[p[0]], reverse=True)  # stable: the live problem first among equals
    status, _, step = problems[0]
    if step == "capabilities":
        step = caps.install_step or step  # no agent yet: installing it comes first
    steps = {p[2] for p in problems}
    # The value install was asked for (perf_paranoid_value), when it works here; else the least privilege one.
    chosen = ctx.options.perf_paranoid_value
    target = chosen if judge(chosen, has_perfmon, probe).status is Status.OK else RECOMMENDED
    fixes = [_unoverride_fix(host, s) for s in over]
    if "capabilities" in steps and caps.fix:
        fixes += caps.fix
    own = [s.int_value for s in setters if s.file == sysctl_file and s.int_value is not None]
    own_ok = bool(own) and judge(own[-1], has_perfmon, probe).status is Status.OK
    if later.status is not Status.OK and later.step == "sysctl" and not own_ok:
        fixes += _persist_fix(host, sysctl_file, target)
    if now.status is not Status.OK and now.step == "sysctl":
        fixes.append(f"sudo sysctl -w {KEY}={target}")
    return Finding(status, "; ".join([p[1] for p in problems] + notes), fix=fixes,
                   install_step=step, data=data)
