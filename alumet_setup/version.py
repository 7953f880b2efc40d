"""What `alumet-setup --version` says: the release, and the commit when this copy runs from a git checkout.

Run from a checkout (the package sits next to the repository's .git: a clone or `pip install -e`), the
version names the commit as a PEP 440 local version, `0.1.0+g5cac423`, and `.dirty` when tracked files
differ from it; two checkouts at one release are told apart. An installed wheel says its release alone.
__version__ stays the release: doctor's JSON and the fast path's digest (uptodate.py) read that.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from . import __version__

_CHECKOUT = Path(__file__).resolve().parent.parent


def describe(root: Path = _CHECKOUT) -> str:
    """The release, with `+g<commit>[.dirty]` when `root` is a git checkout whose commit git can name."""
    if not (root / ".git").exists():  # a wheel: the package's parent is site-packages
        return __version__
    # The checkout's own git, not the caller's: no GIT_DIR or GIT_WORK_TREE of the environment applies.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    git = ["git", "-C", str(root), "--no-optional-locks", "-c", "core.fsmonitor=false"]
    try:
        commit = subprocess.run([*git, "rev-parse", "--short=7", "HEAD"], capture_output=True, text=True,
                                env=env, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, env=env, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return f"{__version__}+unknown"  # a checkout, but no git here to name its commit
    return f"{__version__}+g{commit}{'.dirty' if dirty else ''}"
