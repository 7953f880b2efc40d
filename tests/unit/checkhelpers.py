"""Shared by the doctor check tests: fixture trees as hosts (FixtureHost: canned results by program name;
ScriptedHost: results from a function of argv), and stand-ins for other checks' findings."""

from __future__ import annotations

import base64
import json
import os
import posixpath
import shutil
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from alumet_setup.doctor.checks import load_all
from alumet_setup.doctor.findings import REGISTRY, CheckSpec, Context, Finding, Options, Status
from alumet_setup.targets.hosts import COMMAND_NOT_FOUND, CommandResult, LocalHost

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
FIXTURE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

load_all()  # register the real checks first, so a stand-in replaces (not precedes) one


class FixtureHost(LocalHost):
    """A fixture tree read as if it were /. Commands come from `canned` (by program name) or, for an
    absolute path, run the tree's own file; `ran` records what was asked."""

    def __init__(self, root: str | Path, canned: dict[str, CommandResult] | None = None):
        super().__init__(root=str(root), name=Path(root).name, path_env=FIXTURE_PATH)
        self.canned = canned or {}
        self.ran: list[tuple[str, ...]] = []

    def run(self, argv: Sequence[str], timeout: float = 10.0, env: dict[str, str] | None = None) -> CommandResult:
        self.ran.append(tuple(argv))
        name = posixpath.basename(argv[0])
        if name in self.canned:
            return self.canned[name]
        if argv[0].startswith("/"):
            inside = os.path.join(self.root, self.realpath(argv[0]).lstrip("/"))
            if os.path.isfile(inside):
                return super().run([inside, *argv[1:]], timeout, env)
        return CommandResult(tuple(argv), COMMAND_NOT_FOUND, "", f"{argv[0]}: command not found")


def result(stdout: str = "", rc: int = 0, stderr: str = "") -> CommandResult:
    return CommandResult(("canned",), rc, stdout, stderr)


def copy_fixture(name: str, tmp_path: Path) -> Path:
    """A private copy (tests change modes and owners) with modes that do not depend on the umask."""
    root = tmp_path / "root"
    shutil.copytree(FIXTURES / name, root, symlinks=True)
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        if path.is_dir():
            path.chmod(0o755)
        else:
            path.chmod(0o755 if path.stat().st_mode & 0o100 else 0o644)
    return root


def stub(monkeypatch: pytest.MonkeyPatch, check_id: str, finding: Finding) -> None:
    """Make another check answer `finding`, for this test only."""
    monkeypatch.setitem(REGISTRY, check_id, CheckSpec(check_id, check_id, check_id.split(".")[0],
                                                      lambda _ctx: finding))


def caps_finding(has_perfmon: bool = True, has_ptrace: bool = True) -> Finding:
    status = Status.OK if has_perfmon else Status.FAIL
    fix = None if has_perfmon else "sudo setcap 'cap_perfmon=ep cap_sys_nice=ep cap_sys_ptrace=ep' /opt/alumet/bin/x"
    return Finding(status, "stub", fix=fix, install_step=None if has_perfmon else "capabilities",
                   data={"has_perfmon": has_perfmon, "has_sys_nice": has_perfmon, "has_ptrace": has_ptrace})


def context(host: LocalHost, **options: object) -> Context:
    return Context(host, Options(**options))  # type: ignore[arg-type]


def record_choices(root: Path, choices: dict[str, object] | None = None, text: str | None = None) -> Path:
    """Write the install record (install_record role) into a fixture tree, as install would: root-owned 0644."""
    import json

    from alumet_setup import paths

    target = root / paths.CHOICES_FILE.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text if text is not None else json.dumps({"version": 1, "choices": choices or {}}))
    target.chmod(0o644)
    return target


class ScriptedHost(LocalHost):
    """A fixture tree whose commands are answered by `script(argv)`; None means command not found."""

    def __init__(self, root: str, script: Callable[[Sequence[str]], CommandResult | None] = lambda argv: None,
                 path_env: str = "/usr/bin:/bin"):
        super().__init__(root=root, name="fixture", path_env=path_env)
        self.script = script
        self.calls: list[tuple[tuple[str, ...], dict[str, str] | None]] = []

    def run(self, argv: Sequence[str], timeout: float = 10.0, env: dict[str, str] | None = None) -> CommandResult:
        self.calls.append((tuple(argv), env))
        result = self.script(argv)
        return result or CommandResult(tuple(argv), COMMAND_NOT_FOUND, "", f"{argv[0]}: command not found")


def probe_question(argv: Sequence[str]) -> tuple[str, list] | None:
    """doctor --probe's one command (host_answers.run_in_tmpdir through python3 -c): (key, its question)."""
    from alumet_setup.targets.batched_host import BOOTSTRAP

    if tuple(argv[1:5]) != ("-I", "-S", "-c", BOOTSTRAP):
        return None
    [[key, op, question]] = json.loads(zlib.decompress(base64.b64decode(argv[5])))
    return (key, question) if op == "run_in_tmpdir" else None


def probe_ran(argv: Sequence[str], key: str, rc: int, log: str, csv_text: str | None,
              directory: str = "/tmp/alumet-probe.abc123") -> CommandResult:
    """The answer to the probe's command: the agent exited `rc`, logged `log` and wrote `csv_text`."""
    ran = {"rc": rc, "stdout": "", "stderr": log, "files": {"probe.csv": csv_text}, "dir": directory}
    return CommandResult(tuple(argv), 0, json.dumps({key: {"tmprun": ran}}), "")


def done(argv: Sequence[str], stdout: str = "", rc: int = 0, stderr: str = "") -> CommandResult:
    return CommandResult(tuple(argv), rc, stdout, stderr)


def stand_in(monkeypatch: pytest.MonkeyPatch, check_id: str, status: Status, detail: str = "stand-in",
             fix: str | None = None, **data: object) -> None:
    """Replace another engineer's check by a fixed finding, through the registry (undone after the test)."""
    finding = Finding(status, detail, fix=fix, data=data)
    spec = REGISTRY.get(check_id)
    monkeypatch.setitem(REGISTRY, check_id, CheckSpec(check_id, spec.title if spec else check_id,
                                                      check_id.split(".")[0], lambda ctx: finding))


def evaluate(host: LocalHost, check_id: str, options: Options | None = None) -> Finding:
    return Context(host, options).finding(check_id)




# ---- a fresh host: Debian 12 in a container, the build toolchain present, no alumet-agent, no RAPL, no GPU, no
# configuration (what `alumet-setup doctor` meets before the first install)

def fresh_tree(root: Path) -> Path:
    """Write the fresh host's tree at `root` (the sysctl and hidepid fixtures of Debian 12)."""
    shutil.copytree(FIXTURES / "sysctl" / "debian12", root, symlinks=True)
    for name in ("etc/fstab", "etc/group", "proc/self/mountinfo"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(FIXTURES / "hidepid" / "none" / name, root / name)
    (root / "etc/os-release").write_text('ID=debian\nVERSION_ID=12\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n')
    (root / "proc/sys/kernel/osrelease").write_text("6.1.0-28-amd64\n")
    for tool in ("cc", "pkg-config", "git", "rustup", "rustc", "cargo", "python3", "setpriv"):
        path = root / "usr/bin" / tool
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    return root


def _probe_output(uid: int, cpu_wide_errno: int | None) -> str:
    import json

    from alumet_setup.hostside import perf_event

    def event(name: str, err: int | None) -> dict[str, object]:
        return perf_event._result(err is None, err, 1 if err is None else None,
                                  extra={"event": name, "pid": -1, "cpu": 0})

    return json.dumps({"own": event("task-clock", None), "cpu_wide": event("cpu-clock", cpu_wide_errno),
                       "rapl": False, "uid": uid}) + "\n"


def fresh_host(root: Path) -> ScriptedHost:
    """The fresh host over the tree fresh_tree wrote: its commands answer as such a container's do (root may
    open CPU-wide perf events, nobody without capabilities may not)."""
    import errno

    def script(argv: Sequence[str]) -> CommandResult | None:
        name = posixpath.basename(argv[0])
        answers = {"systemd-detect-virt": "docker\n", "pkg-config": "3.0.19\n",
                   "rustc": "rustc 1.95.0 (0eb0d8f2e 2026-01-01)\n",
                   "setpriv": _probe_output(65534, errno.EACCES), "python3": _probe_output(0, None)}
        return done(argv, answers[name]) if name in answers else None

    return ScriptedHost(str(root), script)
