"""Roles used on their own, as an Ansible user would (README: "each is an Ansible role in roles/, usable on its
own"), run for real by ansible-playbook on this machine (local connection) inside a temporary directory.

Handlers and the shared alumet_common role resolve at run time only, so --syntax-check proves nothing here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

# Stands in for the Rust toolchain only: it installs a binary where `cargo install --root DIR` would, and
# cargo's install record, so the role's own tasks (build, notify, handlers, link, modes) all run for real.
FAKE_CARGO = """#!/bin/sh
set -eu
root=""; prev=""
for arg in "$@"; do [ "$prev" = "--root" ] && root="$arg"; prev="$arg"; done
mkdir -p "$root/bin"
printf '#!/bin/sh\\necho alumet-agent 0.9.5\\n' > "$root/bin/alumet-agent"
chmod 0755 "$root/bin/alumet-agent"
printf '{"installs": {"alumet-agent 0.9.5 (git+%s?tag=%s#0)": {}}}' "$ALUMET_TEST_URL" "$ALUMET_TEST_TAG" \\
  > "$root/.crates2.json"
"""


def ansible_env(tmp_path: Path) -> dict[str, str]:
    """This checkout's roles, and Ansible's own files kept in tmp_path (nothing left in ~)."""
    return {**os.environ, "ANSIBLE_ROLES_PATH": str(ROOT / "roles"), "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_LOCAL_TEMP": str(tmp_path / "local"), "ANSIBLE_REMOTE_TEMP": str(tmp_path / "remote"),
            "ANSIBLE_ASYNC_DIR": str(tmp_path / "async"), "ANSIBLE_RETRY_FILES_ENABLED": "0"}


def play(tmp_path: Path, body: str, *args: str) -> subprocess.CompletedProcess[str]:
    playbook = tmp_path / "play.yml"
    playbook.write_text("- hosts: localhost\n  connection: local\n  gather_facts: true\n"
                        "  gather_subset: [min]\n" + body)
    return subprocess.run([BIN / "ansible-playbook", "-i", "localhost,", "-e",
                           f"ansible_python_interpreter={sys.executable}", *args, playbook],
                          capture_output=True, text=True, env=ansible_env(tmp_path), timeout=300, check=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="the role installs root-owned files (run the integration tests as root)")
def test_alumet_agent_alone_builds_and_handles_its_own_notification(tmp_path: Path) -> None:
    cargo = tmp_path / "cargo" / "bin" / "cargo"
    cargo.parent.mkdir(parents=True)
    cargo.write_text(FAKE_CARGO)
    cargo.chmod(0o755)
    url, tag = "file:///nowhere/alumet", "v0.9.5"
    body = (
        "  environment:\n"
        f"    ALUMET_TEST_URL: {url}\n    ALUMET_TEST_TAG: {tag}\n"
        "  roles:\n    - role: alumet_agent\n      vars:\n"
        f"        alumet_agent_prefix: {tmp_path}/opt/alumet\n"
        f"        alumet_agent_link: {tmp_path}/bin/alumet-agent\n"
        f"        alumet_agent_cargo_home: {tmp_path}/cargo\n"
        f"        alumet_agent_rustup_home: {tmp_path}/rustup\n"
        f"        alumet_agent_git_url: {url}\n        alumet_agent_version: {tag}\n"
        "        alumet_agent_poll_interval: 1\n"
        "        alumet_agent_environment:\n"
        f"          ALUMET_TEST_URL: {url}\n          ALUMET_TEST_TAG: {tag}\n"
    )
    (tmp_path / "bin").mkdir()
    # The record of what the role created goes to tmp_path too (extra vars outrank the role's vars).
    record = tmp_path / "state" / "created.json"
    run = play(tmp_path, body, "-e", f"alumet_common_created_file={record}")
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    assert "was not found" not in out
    # What it created is recorded (uninstall removes only that); tmp_path/bin was there before.
    created = json.loads(record.read_text())["path"]
    assert str(tmp_path / "opt" / "alumet" / "bin" / "alumet-agent") in created, created
    assert str(tmp_path / "bin" / "alumet-agent") in created and str(tmp_path / "bin") not in created
    # The build notified 'alumet agent changed', and this role's own listener answered it.
    assert "RUNNING HANDLER [alumet_agent : Say the rewritten binary has no file capabilities" in out, out[-4000:]
    assert (tmp_path / "bin" / "alumet-agent").resolve() == tmp_path / "opt" / "alumet" / "bin" / "alumet-agent"
    # A rerun builds nothing and notifies nothing.
    again = play(tmp_path, body, "-e", f"alumet_common_created_file={record}")
    assert again.returncode == 0 and "RUNNING HANDLER" not in again.stdout, again.stdout[-3000:]


def test_common_rmdir_keeps_package_owned_and_non_empty_directories(tmp_path: Path) -> None:
    """The uninstall's directory removal (roles/alumet_common/tasks/rmdir.yml): children first, only empty ones,
    only those the record of what alumet-setup created lists, never one dpkg says a package owns
    (/usr/share/doc here: checked with dpkg-query first)."""
    owned = "/usr/share/doc"
    if subprocess.run(["dpkg-query", "--search", owned], capture_output=True, check=False).returncode != 0:
        pytest.skip(f"no package owns {owned} on this machine")
    empty_child, parent, kept = tmp_path / "a" / "b", tmp_path / "a", tmp_path / "full"
    not_ours = tmp_path / "not-ours"  # empty, but not in the record: there before alumet-setup
    empty_child.mkdir(parents=True)
    kept.mkdir()
    not_ours.mkdir()
    (kept / "file").write_text("x")
    record = [str(p) for p in (empty_child, parent, kept, tmp_path / "gone", Path(owned))]
    body = ("  tasks:\n    - name: Remove what is empty\n      ansible.builtin.import_role:\n"
            "        name: alumet_common\n        tasks_from: rmdir\n      vars:\n"
            f"        alumet_common_rmdir_dirs: [{empty_child}, {parent}, {kept}, {tmp_path}/gone, {owned},"
            f" {not_ours}]\n"
            f"        alumet_common_created: {{path: {record}, user: [], group: [], member: []}}\n")
    check = play(tmp_path, body, "--check")
    assert check.returncode == 0, check.stdout[-3000:]
    assert empty_child.is_dir()  # check mode lists, changes nothing
    run = play(tmp_path, body)
    assert run.returncode == 0, run.stdout[-3000:]
    assert not parent.exists() and kept.is_dir() and Path(owned).is_dir() and not_ours.is_dir()
