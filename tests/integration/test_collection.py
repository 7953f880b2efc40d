"""galaxy.yml makes the repository the collection alumet.setup: build it, install it (ansible-galaxy, both),
and run a role of it with its module the way an Ansible user would (read-only, in check mode, on this
machine). test_plugin_forms.py loads each plugin of the collection with an Ansible that lacks alumet_setup."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import collection  # tests/bed, put on sys.path by tests/conftest.py
import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The collection built from this checkout and installed as an Ansible user would; their environment."""
    collections = collection.install(tmp_path_factory.mktemp("collection"))
    return {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(collections), "ANSIBLE_NOCOLOR": "1"}


def test_built_collection_runs_its_roles_and_modules(tmp_path: Path, env: dict[str, str]) -> None:
    installed = Path(env["ANSIBLE_COLLECTIONS_PATH"]) / "ansible_collections" / "alumet" / "setup"
    assert not [d for d in ("tests", "molecule", ".venv", ".cache") if (installed / d).exists()]

    module = subprocess.run(
        [BIN / "ansible", "localhost", "-m", "alumet.setup.alumet_sysctl_precedence",
         "-a", "key=kernel.perf_event_paranoid file=/etc/sysctl.d/local.conf", "-o"],
        capture_output=True, text=True, env=env, check=False)
    assert module.returncode == 0, module.stdout + module.stderr
    answer = json.loads(module.stdout.split("=>", 1)[1])
    assert "overriding_files" in answer
    fstab = tmp_path / "fstab"
    fstab.write_text("proc /proc proc defaults 0 0\n")
    module = subprocess.run(
        [BIN / "ansible", "localhost", "-m", "alumet.setup.alumet_proc_fstab", "-a", f"policy=keep fstab={fstab}",
         "-o"],
        capture_output=True, text=True, env=env, check=False)
    assert module.returncode == 0, module.stdout + module.stderr
    assert json.loads(module.stdout.split("=>", 1)[1])["fstab_line"] == "proc /proc proc defaults 0 0"

    play = tmp_path / "play.yml"
    play.write_text(
        "- hosts: localhost\n  connection: local\n  gather_facts: true\n  tasks:\n"
        "    - ansible.builtin.import_role:\n        name: alumet.setup.alumet_sysctl\n"
        "        tasks_from: preflight\n")
    run = subprocess.run([BIN / "ansible-playbook", "--check", play], capture_output=True, text=True, env=env,
                         check=False)
    assert run.returncode == 0, run.stdout[-3000:]
    assert "failed=0" in run.stdout and "Find which sysctl.d files set the key at boot" in run.stdout
    # The shared tasks come from the collection's own alumet_common, found by its short name.
    assert "alumet_common : Preflight | Assert a supported distribution" in run.stdout, run.stdout[-3000:]


def test_collection_role_finds_its_filter(tmp_path: Path, env: dict[str, str]) -> None:
    """The capabilities role calls its filter by the collection's full name there (roles path: short name)."""
    config = tmp_path / "alumet-config.toml"
    config.write_text('[plugins.procfs.processes]\nstrategy = "watcher"\nrefresh_interval = "2s"\n'
                      '[[plugins.procfs.processes.groups]]\nexe_regex = "python"\npoll_interval = "2s"\n'
                      'flush_interval = "4s"\nmemory_mode = "quick"\n')
    play = tmp_path / "play.yml"
    play.write_text(
        "- hosts: localhost\n  connection: local\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.import_role:\n        name: alumet.setup.capabilities\n        tasks_from: need\n"
        f"      vars:\n        capabilities_config_file: {config}\n")
    run = subprocess.run([BIN / "ansible-playbook", "--check", play], capture_output=True, text=True, env=env,
                         check=False)
    assert run.returncode == 0, run.stdout[-3000:]
    assert "granting cap_sys_ptrace: procfs group 1 exe_regex reads other users' /proc/PID/exe" in run.stdout


def test_collection_explains_a_refused_agent_with_doctors_words(tmp_path: Path, env: dict[str, str]) -> None:
    """The capabilities role's final run explains a refusal through alumet_setup/capabilities.py, which the
    collection must ship (galaxy.yml) for its filter link to load."""
    play = tmp_path / "play.yml"
    play.write_text(
        "- hosts: localhost\n  connection: local\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.debug:\n        msg: \"{{ 'CapBnd:\\t00000000800405fb' | "
        "alumet.setup.alumet_bounding_set_refusal('cap_perfmon,cap_sys_nice=ep') }}\"\n")
    run = subprocess.run([BIN / "ansible-playbook", play], capture_output=True, text=True, env=env, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "start the container with --cap-add=SYS_NICE,PERFMON" in run.stdout, run.stdout[-3000:]


def test_collection_role_finds_its_templates_from_any_playbook(tmp_path: Path, env: dict[str, str]) -> None:
    """alumet_config's profiles come from the collection's templates/, whatever directory the user's own
    playbook is in (not from beside the playbook that runs it)."""
    play = tmp_path / "play.yml"
    play.write_text(
        "- hosts: localhost\n  connection: local\n  gather_facts: true\n  tasks:\n"
        "    - ansible.builtin.import_role:\n        name: alumet.setup.alumet_config\n"
        "        tasks_from: preflight\n")
    run = subprocess.run([BIN / "ansible-playbook", "--check", play], cwd=tmp_path, capture_output=True, text=True,
                         env=env, check=False)
    assert run.returncode == 0, run.stdout[-3000:]
    assert "Preflight | Assert the profile's template exists" in run.stdout and "failed=0" in run.stdout
