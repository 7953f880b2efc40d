"""The tool's own Ansible reads no configuration but its own (alumet_setup/playbook/ansible_config.py).

Each case plants Python that Ansible would import (an inventory or vars plugin) where a configuration
file or an ANSIBLE_* variable points, then runs the real command line in a subprocess. The plugin appends
the name of the program that imported it to a marker file: doctor and install's own reading of the
inventory (alumet-setup, or testinfra's ansible and ansible-inventory for doctor's ansible:// hosts) must
never appear there. The play's ansible-playbook may, where the user chose it (ANSIBLE_* variables,
ANSIBLE_CONFIG, ~/.ansible.cfg: docs/SECURITY.md), but never for an ansible.cfg in the current directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PLUGIN = """import os, sys
with open({marker!r}, "a") as out:
    out.write(os.path.basename(sys.argv[0]) + "\\n")
from ansible.plugins.{kind} import {base}
class {cls}({base}):
    NAME = "evil"
{body}
"""
INVENTORY_BODY = "    def verify_file(self, path):\n        return False\n"
VARS_BODY = "    def get_vars(self, loader, path, entities, cache=True):\n        return {}\n"


def _plant(root: Path, marker: Path) -> None:
    (root / "inv_plugins").mkdir()
    (root / "inv_plugins" / "evil.py").write_text(PLUGIN.format(
        marker=str(marker), kind="inventory", base="BaseInventoryPlugin", cls="InventoryModule", body=INVENTORY_BODY))
    (root / "vars_plugins").mkdir()
    (root / "vars_plugins" / "evil.py").write_text(PLUGIN.format(
        marker=str(marker), kind="vars", base="BaseVarsPlugin", cls="VarsModule", body=VARS_BODY))


INVENTORY_CFG = "[defaults]\ninventory_plugins = {root}/inv_plugins\n[inventory]\nenable_plugins = evil, ini\n"
VARS_CFG = "[defaults]\nvars_plugins = {root}/vars_plugins\n"

# name -> (file written, its content, environment); {root} is the planted directory.
CASES = {
    "./ansible.cfg inventory plugin": ("cwd/ansible.cfg", INVENTORY_CFG, {}),
    "./ansible.cfg vars plugin": ("cwd/ansible.cfg", VARS_CFG, {}),
    "~/.ansible.cfg inventory plugin": ("home/.ansible.cfg", INVENTORY_CFG, {}),
    "ANSIBLE_CONFIG": ("elsewhere/evil.cfg", VARS_CFG, {"ANSIBLE_CONFIG": "{root}/elsewhere/evil.cfg"}),
    "ANSIBLE_INVENTORY_PLUGINS": (None, None, {"ANSIBLE_INVENTORY_PLUGINS": "{root}/inv_plugins",
                                               "ANSIBLE_INVENTORY_ENABLED": "evil,ini"}),
    "ANSIBLE_VARS_PLUGINS": (None, None, {"ANSIBLE_VARS_PLUGINS": "{root}/vars_plugins"}),
}
USERS_CHOICE = {"~/.ansible.cfg inventory plugin", "ANSIBLE_CONFIG", "ANSIBLE_INVENTORY_PLUGINS",
                "ANSIBLE_VARS_PLUGINS"}


def _setup(tmp_path: Path, case: str, inventory_line: str) -> tuple[Path, dict[str, str], Path]:
    marker = tmp_path / "marker"
    _plant(tmp_path, marker)
    for name in ("cwd", "home", "elsewhere", "state"):
        (tmp_path / name).mkdir()
    written, content, env = CASES[case]
    if written:
        (tmp_path / written).write_text(content.format(root=tmp_path))  # type: ignore[union-attr]
    (tmp_path / "cwd" / "hosts.ini").write_text(inventory_line)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    full_env.update({k: v.format(root=tmp_path) for k, v in env.items()})
    full_env.update(HOME=str(tmp_path / "home"), XDG_STATE_HOME=str(tmp_path / "state"),
                    PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", os.defpath)]))
    return tmp_path / "cwd", full_env, marker


def _run(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "alumet_setup", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=180, check=False, stdin=subprocess.DEVNULL)


def _importers(marker: Path) -> set[str]:
    return set(marker.read_text().split()) if marker.exists() else set()


@pytest.mark.processes
@pytest.mark.parametrize("case", sorted(CASES))
def test_doctor_reads_no_ansible_configuration_of_the_user(tmp_path: Path, case: str) -> None:
    # ansible_connection=docker: doctor reaches it through testinfra's ansible:// backend, whose
    # ansible-inventory and ansible children must not read it either.
    for line in ("h1 ansible_host=127.0.0.1 ansible_port=1\n", "h1 ansible_connection=docker\n"):
        root = tmp_path / line.split()[1].replace("=", "-")
        root.mkdir()
        cwd, env, marker = _setup(root, case, line)
        run = _run(cwd, env, "doctor", "-i", "hosts.ini")
        assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-2000:]
        assert _importers(marker) == set(), (line, run.stderr[-500:])


@pytest.mark.processes
@pytest.mark.parametrize("case", sorted(CASES))
def test_install_reads_no_ansible_configuration_of_the_user_itself(tmp_path: Path, case: str) -> None:
    cwd, env, marker = _setup(tmp_path, case, "h1 ansible_host=127.0.0.1 ansible_port=1\n")
    run = _run(cwd, env, "install", "--check", "--only", "sysctl", "-i", "hosts.ini")
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert "h1: unreachable" in run.stderr  # the play ran: its ansible-playbook had its chance too
    importers = _importers(marker)
    assert "alumet_setup" not in importers and "__main__.py" not in importers, importers
    # The play's ansible-playbook honours what the user chose, never the current directory's file.
    assert importers <= ({"ansible-playbook"} if case in USERS_CHOICE else set()), importers


def test_isolation_hides_the_users_variables_and_gives_them_back(monkeypatch: pytest.MonkeyPatch) -> None:
    from alumet_setup.playbook import ansible_config

    monkeypatch.setenv("ANSIBLE_CONFIG", "/mine.cfg")
    monkeypatch.setenv("ANSIBLE_LIBRARY", "/mine")
    with ansible_config.isolated():
        assert os.environ["ANSIBLE_CONFIG"] == str(ansible_config.OWN_CONFIG)
        assert "ANSIBLE_LIBRARY" not in os.environ
        with ansible_config.isolated():  # re-entrant
            assert "ANSIBLE_LIBRARY" not in os.environ
        with ansible_config.users_environment():  # for the play's ansible-playbook
            assert os.environ["ANSIBLE_CONFIG"] == "/mine.cfg" and os.environ["ANSIBLE_LIBRARY"] == "/mine"
        assert os.environ["ANSIBLE_CONFIG"] == str(ansible_config.OWN_CONFIG)
        assert "ANSIBLE_LIBRARY" not in os.environ
    assert os.environ["ANSIBLE_CONFIG"] == "/mine.cfg" and os.environ["ANSIBLE_LIBRARY"] == "/mine"
