#!/usr/bin/env python3
"""Make the stand-in Alumet source repository (.cache/standin/alumet.git, tag v0.9.5) from standin/.

Served by `git daemon` as git://127.0.0.1:19418/alumet (services.py). Fixed author and dates keep the
commit id stable, so a rebuild with unchanged sources gives the same repository.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SRC = HERE / "standin"
OUT = ROOT / ".cache" / "standin"
REPO = OUT / "alumet.git"
TAG = "v0.9.5"


def recipe() -> str:
    h = hashlib.sha256(Path(__file__).read_bytes())
    for f in sorted(p for p in SRC.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(SRC)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def build() -> Path:
    stamp = OUT / ".recipe"
    key = recipe()
    if stamp.exists() and stamp.read_text() == key and REPO.exists():
        print(f"standin: {REPO} cached")
        return REPO
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "alumet-setup test bed",
        "GIT_AUTHOR_EMAIL": "bed@localhost",
        "GIT_AUTHOR_DATE": "2026-06-01T00:00:00Z",
        "GIT_COMMITTER_DATE": "2026-06-01T00:00:00Z",
        "GIT_COMMITTER_NAME": "alumet-setup test bed",
        "GIT_COMMITTER_EMAIL": "bed@localhost",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "alumet"
        shutil.copytree(SRC, work)

        def git(*args: str, cwd: Path = work) -> None:
            subprocess.run(["git", *args], cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL)

        git("init", "-q", "-b", "main")
        git("add", ".")
        git("commit", "-q", "-m", "alumet-agent 0.9.5 stand-in")
        git("tag", "-a", TAG, "-m", f"stand-in {TAG}")
        git("clone", "-q", "--bare", str(work), str(REPO), cwd=OUT)
    (REPO / "git-daemon-export-ok").touch()
    stamp.write_text(key)
    print(f"standin: built {REPO} ({TAG})")
    return REPO


if __name__ == "__main__":
    build()
