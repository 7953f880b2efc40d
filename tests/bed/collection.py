"""The collection alumet.setup as an Ansible user gets it: `ansible-galaxy collection build` of the checkout,
then `ansible-galaxy collection install` of that tarball into a private collections path.

Used by tests/integration (test_collection.py, test_plugin_forms.py) and by the molecule scenario `check`
(its prepare runs this file), so every test of the collection runs what the tarball ships, links included.

    python tests/bed/collection.py DEST   # prints DEST's collections path (for ANSIBLE_COLLECTIONS_PATH)
"""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def install(dest: Path, galaxy: Path | None = None) -> Path:
    """Build the collection into dest/build and install it under dest/collections (replacing an earlier
    install); the collections path. `galaxy`: the ansible-galaxy to use (default: this Python's)."""
    galaxy = galaxy or Path(sys.executable).parent / "ansible-galaxy"
    build, collections = dest / "build", dest / "collections"
    build.mkdir(parents=True, exist_ok=True)
    for old in build.glob("alumet-setup-*.tar.gz"):
        old.unlink()
    _galaxy(galaxy, "build", "--output-path", str(build), str(ROOT))
    (archive,) = build.glob("alumet-setup-*.tar.gz")
    _galaxy(galaxy, "install", "--force", "--collections-path", str(collections), str(archive))
    return collections


def ansible_user(dest: Path, env: dict[str, str]) -> Path:
    """A venv at dest with ansible-core alone (this environment's version), as an Ansible user has it: no
    alumet_setup to import, so a plugin of the collection finds what it loads inside the collection or fails.
    Its bin directory."""
    if not (dest / "bin" / "ansible").is_file():
        subprocess.run([sys.executable, "-m", "venv", str(dest)], check=True, env=env)
        proc = subprocess.run([str(dest / "bin" / "pip"), "install", "-q", f"ansible-core=={version('ansible-core')}"],
                              capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"pip install ansible-core into {dest}: exit {proc.returncode}\n{proc.stderr}")
    return dest / "bin"


def _galaxy(galaxy: Path, *args: str) -> None:
    proc = subprocess.run([str(galaxy), "collection", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"ansible-galaxy collection {' '.join(args)}: exit {proc.returncode}\n"
                           f"{proc.stdout}{proc.stderr}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: collection.py DEST")
    print(install(Path(sys.argv[1])))
