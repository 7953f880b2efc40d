"""A remote user who cannot become root (no sudo, or sudo refusing them): one line naming the host and what
to do, instead of Ansible's "The following modules failed to execute: ansible.legacy.setup."."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from alumet_setup.playbook import runner

# What ansible-core 2.19 reports when sudo is absent on an ssh host: gather_facts wraps the setup module's
# failure, whose stderr is the remote shell's.
SSH_NO_SUDO = {
    "msg": "The following modules failed to execute: ansible.legacy.setup.\n",
    "failed_modules": {"ansible.legacy.setup": {
        "failed": True, "module_stderr": "sh: 1: sudo: not found\n", "module_stdout": "",
        "msg": "MODULE FAILURE: No start of json char found\nSee stdout/stderr for the exact error", "rc": 127}},
    "_ansible_verbose_override": True,
}
# With pipelining (the CLI's default) the become wrapper itself reports it.
PIPELINED_NO_SUDO = {"msg": "Task failed: Premature end of stream waiting for become success.\n>>> Standard Error\n"
                            "/bin/sh: 1: sudo: not found", "changed": False}
SUDO_REFUSES = {"msg": "Task failed: Premature end of stream waiting for become success.\n>>> Standard Error\n"
                       "lab is not in the sudoers file.", "changed": False}


def _event(res: dict[str, Any], host: str = "lab01", ignore: bool = False) -> dict[str, Any]:
    return {"event": "runner_on_failed", "event_data": {
        "host": host, "remote_addr": host, "task": "Gathering Facts", "task_action": "gather_facts",
        "res": res, "ignore_errors": ignore}}


@pytest.mark.parametrize(("res", "why"), [(SSH_NO_SUDO, "sudo is not installed there"),
                                         (PIPELINED_NO_SUDO, "sudo is not installed there"),
                                         (SUDO_REFUSES, "sudo refuses the login user")])
def test_one_line_says_escalation_is_impossible_and_what_to_do(res: dict[str, Any], why: str) -> None:
    lines: list[str] = []
    # An ad-hoc --host lab@10.0.0.7:2222: the advice names the same address as root.
    logins = runner.root_logins({"all": {"hosts": {"lab01": {"ansible_host": "10.0.0.7", "ansible_port": 2222,
                                                             "ansible_user": "lab"}}}})
    progress = runner.Progress(lines.append, root_logins=logins)
    progress(_event(res))
    expected = (f"escalation to root is impossible on lab01: {why}; log in as root (--host root@10.0.0.7:2222) "
                "or install sudo and allow the login user to use it")
    assert lines == [f"[lab01] FAILED: Gathering Facts: {expected}"]
    assert progress.escalation == {"lab01": expected}
    assert "modules failed to execute" not in "\n".join(lines)


def test_other_failures_and_ignored_ones_are_not_escalation() -> None:
    progress = runner.Progress(lambda _line: None)
    progress(_event({"msg": "E: Unable to locate package gcc"}))
    progress(_event(PIPELINED_NO_SUDO, host="other", ignore=True))
    assert progress.escalation == {}


def test_real_run_without_the_become_program(tmp_path: Path) -> None:
    # A real ansible-playbook run on this machine whose become program does not exist: the same words a
    # host without sudo gives. Nothing can run, so nothing changes.
    playbook = tmp_path / "p.yml"
    playbook.write_text("- hosts: all\n  become: true\n  gather_subset: [min]\n  tasks:\n"
                        "    - ansible.builtin.ping:\n")
    inventory = tmp_path / "hosts.json"
    inventory.write_text(json.dumps({"all": {"hosts": {"lab01": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
        "ansible_become_user": "nobody", "ansible_become_exe": "/nonexistent/sudo"}}}}))
    lines: list[str] = []
    result = runner.run_playbook(runner.PlaybookRun(playbook, inventory=[inventory], hosts=["lab01"]),
                                 echo=lines.append, runs_dir=tmp_path / "runs")
    assert not result.ok
    # An inventory host: the advice is the inventory's login user.
    assert result.escalation["lab01"] == ("escalation to root is impossible on lab01: sudo is not installed there; "
                                          "log in as root (ansible_user=root in the inventory) or install sudo and "
                                          "allow the login user to use it"), lines
    assert not any("modules failed to execute" in line for line in lines), lines
