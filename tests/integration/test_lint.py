"""The tree stays ruff, mypy, yamllint and ansible-lint clean (production profile): CI enforces what the guide
asks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_ruff_is_clean() -> None:
    result = subprocess.run([BIN / "ruff", "check", "."], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout[-4000:]


def test_ansible_lint_is_clean_at_the_production_profile() -> None:
    result = subprocess.run([BIN / "ansible-lint", "--profile", "production", "roles", "playbooks"], cwd=ROOT,
                            capture_output=True, text=True, check=False, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]


def test_yamllint_is_clean() -> None:
    """Every YAML file git does not ignore, by .yamllint's rules; --strict: a warning fails too."""
    result = subprocess.run([BIN / "yamllint", "--strict", "-f", "parsable", "."], cwd=ROOT, capture_output=True,
                            text=True, check=False, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]


def test_mypy_is_clean() -> None:
    """alumet_setup/ type-checks ([tool.mypy] in pyproject.toml; `type: ignore` comments that no longer
    silence anything fail too)."""
    result = subprocess.run([BIN / "mypy"], cwd=ROOT, capture_output=True, text=True, check=False, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
