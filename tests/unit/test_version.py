"""`alumet-setup --version` (alumet_setup/version.py): the commit from a git checkout, the release alone
from a wheel (tests/unit/test_resources.py installs one)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from alumet_setup import __version__
from alumet_setup.version import describe

# A commit with fixed content, author, committer and dates has a fixed id.
COMMIT_ENV = {"GIT_AUTHOR_NAME": "a", "GIT_AUTHOR_EMAIL": "a@example.invalid", "GIT_COMMITTER_NAME": "a",
              "GIT_COMMITTER_EMAIL": "a@example.invalid", "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
              "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z", "GIT_CONFIG_GLOBAL": os.devnull,
              "GIT_CONFIG_NOSYSTEM": "1"}


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], env={**os.environ, **COMMIT_ENV}, check=True,
                   capture_output=True, timeout=30)


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    repo = tmp_path / "checkout"
    repo.mkdir()
    git(repo, "init", "-q", "--object-format=sha1", "-b", "main")
    (repo / "README.md").write_text("alumet-setup\n")
    git(repo, "add", "README.md")
    git(repo, "commit", "-q", "-m", "first")
    return repo


@pytest.mark.processes
def test_a_checkout_names_its_commit_and_says_when_tracked_files_differ(checkout: Path) -> None:
    assert describe(checkout) == f"{__version__}+g0d3213a"
    (checkout / "notes.txt").write_text("untracked: not the commit's, not a change to it\n")
    assert describe(checkout) == f"{__version__}+g0d3213a"
    (checkout / "README.md").write_text("changed\n")
    assert describe(checkout) == f"{__version__}+g0d3213a.dirty"


@pytest.mark.processes
def test_the_callers_git_environment_does_not_redirect_it(checkout: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "other"
    other.mkdir()
    git(other, "init", "-q")
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    assert describe(checkout) == f"{__version__}+g0d3213a"


def test_no_git_directory_is_the_release_alone(tmp_path: Path) -> None:
    assert describe(tmp_path) == __version__


@pytest.mark.processes
def test_a_checkout_without_git_to_ask_says_so(checkout: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    assert describe(checkout) == f"{__version__}+unknown"


@pytest.mark.processes
def test_this_checkout_names_its_commit() -> None:
    result = subprocess.run([sys.executable, "-m", "alumet_setup", "--version"], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert re.fullmatch(r"alumet-setup, version 0\.1\.0\+g[0-9a-f]{7}(\.dirty)?\n", result.stdout), result.stdout
