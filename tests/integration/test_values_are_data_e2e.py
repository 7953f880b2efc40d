"""The issue's reproduction, end to end: `install --check` on this machine with a template in a --set
value runs no code (tests/unit/test_values_are_data.py covers each setting type through the runner).

A check run on this machine as root: it changes nothing (check mode), and the sysctl step is one of the
fastest, so the whole run takes about 20 s.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="install on this machine needs root (no sudo prompt)")


def test_install_check_renders_no_template_from_a_setting(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    value = "/etc/sysctl.d/{{ lookup('pipe', 'touch " + str(marker) + "') }}.conf"  # an absolute path
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    run = subprocess.run([sys.executable, "-m", "alumet_setup", "install", "--check", "--only", "sysctl",
                          "--set", f"perf_paranoid_sysctl_file={value}"],
                         capture_output=True, text=True, timeout=300, env=env, check=False)
    assert not marker.exists(), run.stdout[-2000:]
    # The preflight saw the text itself (not what a template would have made of it) and refused it.
    assert run.returncode == 1 and "is never read at boot" in run.stdout, run.stdout[-2000:] + run.stderr
