"""A host that fails says so on stderr, in one line per host, with exit 1 (the real CLI and runner)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from alumet_setup.cli import cli
from alumet_setup.hostside import resources

FAILING = """
- hosts: all
  gather_facts: false
  tasks:
    - name: Break on purpose
      ansible.builtin.fail: {msg: "boom"}
      tags: [sysctl]
"""


@pytest.mark.processes
def test_a_failed_host_is_named_on_stderr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    playbook = tmp_path / "install.yml"
    playbook.write_text(FAILING)
    monkeypatch.setattr(resources, "playbook", lambda _name: playbook)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    result = CliRunner().invoke(cli, ["install", "--only", "sysctl", "--check"])
    assert result.exit_code == 1, result.output
    assert result.stderr == "alumet-setup: error: localhost: failed (see its FAILED line above)\n"
    assert re.search(r"\[localhost\] FAILED: Break on purpose \([0-9.]+ s\): boom", result.stdout)
