"""toolchain.*: what a source build of alumet-agent needs, judged on small fake trees."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from checkhelpers import ScriptedHost, done, evaluate, stand_in

from alumet_setup.doctor.checks import toolchain
from alumet_setup.doctor.findings import Status
from alumet_setup.targets.hosts import CommandResult, LocalHost

SYSTEM = toolchain.SYSTEM_BIN.lstrip("/")


def tree(tmp_path: Path, tools: dict[str, str], rustc: str = "rustc 1.89.0 (29483883e 2025-08-04)",
         openssl: bool = True) -> ScriptedHost:
    """`tools`: name -> directory (relative to the root) holding an executable of that name."""
    for name, directory in tools.items():
        exe = tmp_path / directory / name
        exe.parent.mkdir(parents=True, exist_ok=True)
        exe.write_text("#!/bin/sh\n")
        exe.chmod(0o755)

    def script(argv: Sequence[str]) -> CommandResult | None:
        if argv[0].endswith("/rustc"):
            return done(argv, rustc + "\n")
        if argv[0].endswith("/pkg-config"):
            return done(argv, "3.0.15\n") if openssl else done(argv, "", 1)
        return None

    return ScriptedHost(str(tmp_path), script, path_env="/usr/bin:/bin")


FULL = {"rustup": SYSTEM, "rustc": SYSTEM, "cargo": SYSTEM, "cc": "usr/bin", "pkg-config": "usr/bin", "git": "usr/bin"}
CHECKS = ("toolchain.rustup", "toolchain.rust", "toolchain.cc", "toolchain.pkg_config", "toolchain.openssl",
          "toolchain.git")


@pytest.fixture
def no_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    stand_in(monkeypatch, "agent.binary", Status.FAIL)


def test_complete_system_wide_toolchain(tmp_path: Path, no_agent: None) -> None:
    host = tree(tmp_path, FULL)
    found = {c: evaluate(host, c) for c in CHECKS}
    assert {c: f.status for c, f in found.items()} == dict.fromkeys(CHECKS, Status.OK)
    assert found["toolchain.rustup"].data["system_wide"] and found["toolchain.rust"].data["version"] == "1.89.0"
    # rustup's proxies under /opt/rust only work with their homes in the environment.
    assert (("/opt/rust/cargo/bin/rustc", "--version"), toolchain.RUSTUP_ENV) in host.calls


def test_old_rust(tmp_path: Path, no_agent: None) -> None:
    f = evaluate(tree(tmp_path, FULL, rustc="rustc 1.85.0 (4d91de4e4 2025-02-17)"), "toolchain.rust")
    assert f.status is Status.FAIL and "1.85.0" in f.detail and f.install_step == "rustup"
    assert f.fix == ("sudo env RUSTUP_HOME=/opt/rust/rustup CARGO_HOME=/opt/rust/cargo "
                     "/opt/rust/cargo/bin/rustup default 1.89",)


def test_missing_tools_fail_without_agent(tmp_path: Path, no_agent: None) -> None:
    host = tree(tmp_path, {"git": "usr/bin"})
    for check_id in CHECKS[:-1]:
        f = evaluate(host, check_id)
        assert f.status is Status.FAIL, check_id
        assert f.install_step in ("rustup", "prereqs") and f.fix
    (fix,) = evaluate(host, "toolchain.rustup").fix  # one command: its checksum test gates the install
    assert "sha256sum -c" in fix and "| sh " not in fix and not fix.endswith("| sh")  # verified, never curl | sh
    assert "libssl-dev" in evaluate(host, "toolchain.openssl").fix[0]


def test_missing_tools_only_warn_with_an_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stand_in(monkeypatch, "agent.binary", Status.OK, path="/usr/local/bin/alumet-agent")
    f = evaluate(tree(tmp_path, {}), "toolchain.cc")
    assert f.status is Status.WARN and "only needed to rebuild" in f.detail


def test_openssl_headers_missing(tmp_path: Path, no_agent: None) -> None:
    f = evaluate(tree(tmp_path, FULL, openssl=False), "toolchain.openssl")
    assert f.status is Status.FAIL and "libssl-dev" in f.detail


def test_git_is_optional(tmp_path: Path, no_agent: None) -> None:
    f = evaluate(tree(tmp_path, {k: v for k, v in FULL.items() if k != "git"}), "toolchain.git")
    assert f.status is Status.WARN and "alpha-unknown" in f.detail and "rebuild" not in f.detail


def test_git_only_matters_for_a_rebuild_once_the_agent_is_installed(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # A host that got a copy of another host's build has no git: doctor says why it does not matter.
    stand_in(monkeypatch, "agent.binary", Status.OK, path="/usr/local/bin/alumet-agent")
    f = evaluate(tree(tmp_path, {k: v for k, v in FULL.items() if k != "git"}), "toolchain.git")
    assert f.status is Status.WARN and "only needed to rebuild" in f.detail and f.data["agent_installed"]


@pytest.mark.processes
def test_this_machine() -> None:
    host = LocalHost()
    for check_id in CHECKS:
        f = evaluate(host, check_id)
        assert f.status in (Status.OK, Status.WARN, Status.FAIL), (check_id, f.detail)
        if check_id == "toolchain.rust" and f.status is Status.OK:
            assert toolchain.rustc_version("rustc " + f.data["version"]) >= toolchain.MIN_RUST
