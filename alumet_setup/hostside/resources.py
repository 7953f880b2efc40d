"""Find the Ansible side (roles/, playbooks/, templates/) that ships with alumet-setup.

A wheel carries them as alumet_setup/_bundled/<name> (pyproject.toml force-includes them); an
editable install or a plain checkout has them at the top of the repository, next to the package.
Ansible needs real directories, so a zipped install is not supported: the paths returned exist.
"""

from __future__ import annotations

from pathlib import Path

NAMES = ("roles", "playbooks", "templates")
_PACKAGE_DIR = Path(__file__).resolve().parents[1]  # alumet_setup/, this file being in alumet_setup/hostside/


class ResourceMissing(FileNotFoundError):
    """The installation lacks a bundled directory or playbook (a broken or partial install)."""


def bundled(name: str) -> Path:
    """Directory `name` (roles, playbooks or templates): the wheel's copy first, else the checkout's."""
    if name not in NAMES:
        raise ValueError(f"unknown bundled directory {name!r} (known: {', '.join(NAMES)})")
    for candidate in (_PACKAGE_DIR / "_bundled" / name, _PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise ResourceMissing(f"alumet-setup is installed without its {name}/ directory (reinstall it)")


def playbook(name: str) -> Path:
    """Path of playbooks/<name>.yml; ResourceMissing when this version does not ship it."""
    path = bundled("playbooks") / f"{name}.yml"
    if not path.is_file():
        raise ResourceMissing(f"playbook {name}.yml is not part of this alumet-setup version")
    return path
