"""galaxy.yml makes the repository the collection alumet.setup: build it, install it (ansible-galaxy, both),
and run its roles the way an Ansible user would, from a playbook of their own (read-only, in check mode, on
this machine). test_plugin_forms.py loads each module and filter of the collection, with an Ansible that
cannot import alumet_setup; the molecule scenario `check` converges a container from it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import collection  # tests/bed, put on sys.path by tests/conftest.py
import pytest

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The collection built from this checkout and installed as an Ansible user would; their environment."""
    collections = collection.install(tmp_path_factory.mktemp("collection"))
    return {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(collections), "ANSIBLE_NOCOLOR": "1"}


def play_role(tmp_path: Path, env: dict[str, str], role: str, tasks_from: str, role_vars: str = "",
              gather_facts: bool = True) -> subprocess.CompletedProcess[str]:
    """`ansible-playbook --check` of a user's play in tmp_path that imports alumet.setup.ROLE's TASKS_FROM on
    this machine; role_vars: `vars:` lines (YAML, indented for the task)."""
    play = tmp_path / "play.yml"
    play.write_text(
        f"- hosts: localhost\n  connection: local\n  gather_facts: {str(gather_facts).lower()}\n  tasks:\n"
        f"    - ansible.builtin.import_role:\n        name: alumet.setup.{role}\n"
        f"        tasks_from: {tasks_from}\n{role_vars}")
    run = subprocess.run([BIN / "ansible-playbook", "--check", play], cwd=tmp_path, capture_output=True, text=True,
                         env=env, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "failed=0" in run.stdout, run.stdout[-3000:]
    return run


def test_built_collection_runs_its_roles(tmp_path: Path, env: dict[str, str]) -> None:
    installed = Path(env["ANSIBLE_COLLECTIONS_PATH"]) / "ansible_collections" / "alumet" / "setup"
    assert not [d for d in ("tests", "molecule", ".venv", ".cache") if (installed / d).exists()]

    run = play_role(tmp_path, env, "alumet_sysctl", "preflight")
    assert "Find which sysctl.d files set the key at boot" in run.stdout
    # The shared tasks come from the collection's own alumet_common, found by its short name.
    assert "alumet_common : Preflight | Assert a supported distribution" in run.stdout, run.stdout[-3000:]
    # ... and the values' rules through the collection's filter, by its full name (alumet_setup/hostside/rules.py).
    assert "alumet_common : Preflight | Assert the settings fit their rules" in run.stdout, run.stdout[-3000:]


def test_collection_role_finds_its_filter(tmp_path: Path, env: dict[str, str]) -> None:
    """The capabilities role calls its filter by the collection's full name there (roles path: short name)."""
    config = tmp_path / "alumet-config.toml"
    config.write_text('[plugins.procfs.processes]\nstrategy = "watcher"\nrefresh_interval = "2s"\n'
                      '[[plugins.procfs.processes.groups]]\nexe_regex = "python"\npoll_interval = "2s"\n'
                      'flush_interval = "4s"\nmemory_mode = "quick"\n')
    run = play_role(tmp_path, env, "capabilities", "need", f"      vars:\n        capabilities_config_file: {config}\n",
                    gather_facts=False)
    assert "granting cap_sys_ptrace: procfs group 1 exe_regex reads other users' /proc/PID/exe" in run.stdout


def test_collection_role_finds_its_templates_from_any_playbook(tmp_path: Path, env: dict[str, str]) -> None:
    """alumet_config's profiles come from the collection's templates/, whatever directory the user's own
    playbook is in (not from beside the playbook that runs it)."""
    run = play_role(tmp_path, env, "alumet_config", "preflight")
    assert "Preflight | Assert the profile's template exists" in run.stdout
