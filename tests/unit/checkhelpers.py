"""Shared by the doctor check tests: fixture trees as hosts (FixtureHost: canned results by program name;
ScriptedHost: results from a function of argv), and stand-ins for other checks' findings."""

from __future__ import annotations

import os
import posixpath
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from alumet_setup.checks import load_all
from alumet_setup.findings import REGISTRY, CheckSpec, Context, Finding, Options, Status
from alumet_setup.hosts import COMMAND_NOT_FOUND, CommandResult, LocalHost

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


