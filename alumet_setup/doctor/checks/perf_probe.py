"""kernel.perf_probe: open real perf events on the host, with the privileges the agent would have.

perf_event_paranoid and capabilities only predict what the kernel will allow; seccomp filters,
container capability sets and distribution patches decide. So doctor ships alumet_setup/hostside/perf_event.py
to the host and reads what the kernel answered: as the caller, in the process that reads the host (Host.call:
doctor's own locally, host_answers' over SSH, no python3 of its own); as the agent, under setpriv
(`python3 -c SOURCE`), which needs a process of its own.
"""

from __future__ import annotations

import errno
import functools
import json
import os
from typing import Any

from ...targets.hosts import CommandResult, isolated_python
from ...threads import in_background
from ..findings import Context, Finding, Status, check

NOBODY = 65534
# Numbers rather than names for setpriv: libcap-ng before 0.8 (Ubuntu 22.04) does not know "perfmon".
CAP_NUMBERS = {"sys_ptrace": 19, "sys_admin": 21, "sys_nice": 23, "perfmon": 38}
REFUSED = (errno.EACCES, errno.EPERM)


@functools.cache
def probe_source() -> str:
    """The probe script's own source, read as package data so it works from a wheel too."""
    # Beside the package's modules, in a checkout and in a wheel alike (os.path: cheaper to import).
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "hostside",
                        "perf_event.py")
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def cap_numbers(names: list[str]) -> list[int]:
    """'cap_perfmon', 'perfmon', 'cap_38' or '38' -> 38; names this probe does not need are skipped."""
    numbers = []
    for name in names:
        short = name.lower().removeprefix("cap_")
        number = int(short) if short.isdigit() else CAP_NUMBERS.get(short)
        if number is not None and number not in numbers:
            numbers.append(number)
    return numbers


def setpriv_argv(python: str, caps: list[int]) -> list[str]:
    """Run as nobody with no groups and only `caps` (inheritable + ambient survive the exec of python)."""
    argv = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    if caps:
        spec = ",".join(f"+cap_{n}" for n in caps)
        argv += [f"--inh-caps={spec}", f"--ambient-caps={spec}"]
    return [*argv, *probe_argv(python)]


def probe_argv(python: str) -> list[str]:
    return isolated_python(python, probe_source())


def parse(result: CommandResult) -> dict[str, Any] | None:
    """The probe's JSON line, or None when it did not run (python missing, setpriv refused, ...)."""
    for line in reversed(result.stdout.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None


def _failure(result: CommandResult) -> str:
    lines = (result.stderr or result.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit code {result.rc}"


def _agent_caps(ctx: Context) -> tuple[list[int], str]:
    """The capabilities the installed agent holds, and how to say so."""
    if ctx.finding("agent.binary").status is not Status.OK:
        return [], "no capabilities (alumet-agent is not installed)"
    caps_f = ctx.finding("agent.capabilities")
    # What the agent really holds at exec: nothing when a nosuid/NFS mount makes the kernel ignore them.
    names = [] if caps_f.data.get("ignored_by") else list(caps_f.data.get("effective", caps_f.data.get("names", [])))
    caps = cap_numbers(names)
    return caps, f"the agent's capabilities ({', '.join(names)})" if names else "no capabilities (the agent has none)"


def _blocked_for_everyone(raw: dict[str, Any]) -> str | None:
    """Why perf_event_open cannot work for anyone here, judged from a probe run as root; None if it can."""
    for which in ("own", "cpu_wide"):
        event = raw[which]
        if event["errno"] == errno.ENOSYS:
            return "perf_event_open does not exist here (ENOSYS): kernel without perf events, or filtered"
        if event["errno"] in REFUSED:
            return (f"perf_event_open refused even to root ({event['error']}) for the {event['event']} event: "
                    "a seccomp filter or a container without CAP_PERFMON/CAP_SYS_ADMIN blocks it")
    return None


@check("kernel.perf_probe", "perf_event_open probe", needs=("agent.binary", "agent.capabilities"))
def perf_probe(ctx: Context) -> Finding:
    # /usr/bin/python3 first: nobody cannot run interpreters under root's home (pyenv shims, ...).
    python = "/usr/bin/python3" if ctx.host.exists("/usr/bin/python3") else "python3"
    # The unprivileged probe starts at once, beside the one as the caller: doctor must answer fast.
    as_agent = in_background(lambda: _probe_as_agent(ctx, python))
    try:
        raw, failure = ctx.host.call("perf_event", probe_source(), "probe"), ""
    except OSError as exc:
        raw, failure = None, str(exc)
    if not (isinstance(raw, dict) and {"own", "cpu_wide", "rapl", "uid"} <= raw.keys()):
        raw, failure = None, failure or f"unexpected answer {str(raw)[:80]!r}"
    # Not root: the unprivileged run says nothing more (setpriv needs root); it is not waited for.
    second, caps, caps_text = as_agent.result() if raw is not None and raw["uid"] == 0 else (None, [], "")
    return _judge(ctx, python, failure, raw, second, caps, caps_text)


def _probe_as_agent(ctx: Context, python: str) -> tuple[CommandResult | None, list[int], str]:
    """The probe as nobody holding only the agent's capabilities (root only; None without setpriv)."""
    caps, caps_text = _agent_caps(ctx)
    if ctx.host.which("setpriv") is None:
        return None, caps, caps_text
    return ctx.host.run(setpriv_argv(python, caps), timeout=10), caps, caps_text


def _judge(ctx: Context, python: str, failure: str, raw: dict[str, Any] | None,
           second: CommandResult | None, caps: list[int], caps_text: str) -> Finding:
    if raw is None:
        return Finding(Status.ERROR, f"the probe did not run: {failure}", data={"python": python})
    data: dict[str, Any] = {"python": python, "rapl": raw["rapl"], "probes": {}}
    if raw["uid"] != 0:
        data["probes"]["self"] = raw
        judged, who = raw, f"as uid {raw['uid']} (not root, so not with the agent's capabilities)"
        data["judged"] = "self"
    else:
        data["probes"]["root"] = raw
        blocked = _blocked_for_everyone(raw)
        if blocked:
            return Finding(Status.NOT_AVAILABLE, blocked, data={**data, "judged": "root", "cpu_wide_ok": False})
        if second is None:
            return Finding(Status.WARN, "setpriv is missing: probed as root only, not with the agent's privileges",
                           fix="sudo apt-get install -y util-linux", data={**data, "judged": "root",
                                                                             "cpu_wide_ok": raw["cpu_wide"]["ok"]})
        as_agent = parse(second)
        if as_agent is None:
            return Finding(Status.ERROR, f"the probe as uid {NOBODY} did not run: {_failure(second)}",
                           data={**data, "caps": caps})
        judged = as_agent
        data["probes"]["agent"] = judged
        data["judged"], data["caps"] = "agent", caps
        who = f"as uid {NOBODY} with {caps_text}"
    event = judged["cpu_wide"]
    data["cpu_wide_ok"] = event["ok"]
    target = f"CPU-wide {event['event']} event on CPU {event['cpu']}"
    if event["ok"]:
        return Finding(Status.OK, f"{who}: opened and read a {target}", data=data)
    if data["judged"] == "self":
        return Finding(Status.WARN, f"{who}: {target} refused ({event['error']}); run doctor as root to probe "
                       "with the agent's capabilities", data=data)
    return _refused(ctx, who, target, event, data)


def _refused(ctx: Context, who: str, target: str, event: dict[str, Any], data: dict[str, Any]) -> Finding:
    detail = f"{who}: {target} refused ({event['error']})"
    if event["errno"] not in REFUSED:
        return Finding(Status.FAIL, detail, data=data)
    # Read directly: kernel.perf_event_paranoid needs this check, so this one cannot need it.
    text = (ctx.host.read_text("/proc/sys/kernel/perf_event_paranoid") or "").strip()
    paranoid = int(text) if text.lstrip("-").isdigit() else None
    binary = ctx.finding("agent.binary")
    if binary.status is not Status.OK:
        # agent.binary's own remedy: `--only agent` alone grants no capability, and stops where Rust is missing.
        return Finding(Status.FAIL, f"{detail}: no usable alumet-agent to hold cap_perfmon ({binary.detail})",
                       fix=binary.fix, install_step=binary.install_step, data=data)
    if isinstance(paranoid, int) and paranoid > 2:
        return Finding(Status.FAIL, f"{detail}: perf_event_paranoid {paranoid} is too strict even with cap_perfmon",
                       fix="sudo sysctl -w kernel.perf_event_paranoid=2", install_step="sysctl", data=data)
    caps = ctx.finding("agent.capabilities")
    return Finding(Status.FAIL, f"{detail}: perf_event_paranoid {paranoid} needs cap_perfmon on the agent",
                   fix=caps.fix, install_step="capabilities", data=data)
