"""The issue's reproduction, end to end: `install --check` on this machine with a template in a --set
value runs no code (tests/unit/test_values_are_data.py covers each setting type through the runner).

A check run on this machine as root: it changes nothing (check mode), and the sysctl step is one of the
fastest, so the whole run takes about 20 s.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from installed_tool import InstalledTool  # tests/bed, put on sys.path by tests/conftest.py

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="install on this machine needs root (no sudo prompt)")


def test_install_check_renders_no_template_from_a_setting(tool: InstalledTool, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    value = "/etc/sysctl.d/{{ lookup('pipe', 'touch " + str(marker) + "') }}.conf"  # an absolute path
    run = tool.cli("install", "--check", "--only", "sysctl", "--set", f"perf_paranoid_sysctl_file={value}",
                   state=tmp_path / "state", timeout=300)
    assert not marker.exists(), run.stdout[-2000:]
    # The preflight saw the text itself (not what a template would have made of it) and refused it.
    assert run.returncode == 1 and "is never read at boot" in run.stdout, run.stdout[-2000:] + run.stderr
