"""Install and uninstall on this machine as a normal user: the play escalates with sudo itself (the
generated inventory sets become for a non-root local run), so nobody has to type `sudo alumet-setup`, whose
secure_path would not find a tool installed in a virtual environment anyway.

Before the play starts, `sudo -n true` tells which of three cases this is: sudo works without a password
(nothing to do), sudo wants one (ask for it, as --ask-become-pass would), or sudo cannot be used (not
installed, as on Debian minimal, or this user may not use it): one line saying so, nothing run.
"""

from __future__ import annotations

import os
import shutil
import subprocess


class NoEscalation(Exception):
    """This machine offers no way to become root to this user. The text is one line."""


def needs_password(is_root: bool | None = None) -> bool:
    """Whether sudo will want a password for this user here; NoEscalation when sudo cannot be used."""
    if is_root if is_root is not None else os.geteuid() == 0:
        return False
    advice = "run alumet-setup as root (no sudo needed), or install sudo and allow this user to use it"
    sudo = shutil.which("sudo")
    if sudo is None:
        raise NoEscalation(f"escalation to root is impossible on this machine: sudo is not installed; {advice}")
    try:
        probe = subprocess.run([sudo, "-n", "true"], capture_output=True, text=True, timeout=20, check=False,
                               stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as exc:
        raise NoEscalation(f"escalation to root is impossible on this machine: sudo failed ({exc}); {advice}") from None
    if probe.returncode == 0:
        return False
    if "password is required" in probe.stderr or "a terminal is required" in probe.stderr:
        return True
    why = " ".join(probe.stderr.split())[:200] or f"sudo -n true exited {probe.returncode}"
    raise NoEscalation(f"escalation to root is impossible on this machine: {why}; {advice}")
