"""sysctl_precedence.py doubles as the alumet_sysctl role's Ansible module: the role and doctor
must judge overrides with the very same code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from alumet_setup.hostside.sysctl_precedence import Setter, overriding

ROOT = Path(__file__).parents[2]
MODULE = ROOT / "roles" / "alumet_sysctl" / "library" / "alumet_sysctl_precedence.py"


def test_the_role_module_is_the_doctor_code():
    assert MODULE.is_symlink()
    assert MODULE.resolve() == (ROOT / "alumet_setup" / "hostside" / "sysctl_precedence.py").resolve()


@pytest.mark.processes
def test_module_mode_answers_with_json_on_this_machine(tmp_path):
    args = tmp_path / "args.json"
    args.write_text(json.dumps({"key": "kernel.perf_event_paranoid", "file": "/etc/sysctl.d/local.conf",
                                "value": 2}))
    result = subprocess.run([sys.executable, str(MODULE), str(args)], capture_output=True, text=True, check=True)
    answer = json.loads(result.stdout)
    assert answer["changed"] is False
    assert set(answer) >= {"value", "file", "setters", "overriding_files"}


def test_a_later_file_with_the_wanted_value_does_not_override():
    setters = [Setter("/etc/sysctl.d/local.conf", "1"), Setter("/etc/sysctl.d/perf.conf", "2")]
    # The role asks before writing: what counts is the value it is about to write.
    assert overriding(setters, "/etc/sysctl.d/local.conf", "2") == []
    assert overriding(setters, "/etc/sysctl.d/local.conf", "1") == [Setter("/etc/sysctl.d/perf.conf", "2")]
