"""resources.bundled(): the checkout's directories in place, the wheel's _bundled copy once installed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from alumet_setup.hostside import resources

ROOT = Path(__file__).resolve().parents[2]


def test_checkout_directories_are_found() -> None:
    assert resources.bundled("roles") == ROOT / "roles"
    assert resources.bundled("playbooks") == ROOT / "playbooks"


def test_unknown_name_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown bundled directory"):
        resources.bundled("../etc")


def test_missing_playbook_says_so() -> None:
    with pytest.raises(resources.ResourceMissing, match=r"no-such-playbook\.yml"):
        resources.playbook("no-such-playbook")


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the wheel with hatchling (pip fetches it) and install it into a plain target directory."""
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(ROOT), "-w", str(out)],
                           capture_output=True, text=True, timeout=300, check=False)
    if build.returncode != 0:
        pytest.skip(f"cannot build the wheel here: {build.stderr.strip().splitlines()[-1:]}")
    wheel = next(out.glob("alumet_setup-*.whl"))
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    return target


@pytest.mark.processes
@pytest.mark.parametrize("name", resources.NAMES)
def test_installed_wheel_finds_its_bundled_copy(installed_wheel: Path, name: str, tmp_path: Path) -> None:
    source = ROOT / name
    if not any(p.is_file() for p in source.rglob("*")):
        pytest.skip(f"{name}/ is still empty in this checkout (a wheel holds no empty directories)")
    # Run from an unrelated directory with only the target dir on the path: the checkout is not importable.
    probe = "import alumet_setup.hostside.resources as r, sys; print(r.bundled(sys.argv[1]))"
    result = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(installed_wheel)!r}); "
                             + probe, name], capture_output=True, text=True, cwd=tmp_path, check=True)
    found = Path(result.stdout.strip())
    assert found == installed_wheel / "alumet_setup" / "_bundled" / name
    def files(base: Path) -> set[Path]:
        return {p.relative_to(base) for p in base.rglob("*") if p.is_file() and "__pycache__" not in p.parts}

    assert files(source) <= files(found)


@pytest.mark.processes
def test_installed_wheel_says_its_release_alone(installed_wheel: Path, tmp_path: Path) -> None:
    """No checkout next to the package: `--version` is the release (alumet_setup/version.py)."""
    run = ("import sys; sys.path.insert(0, sys.argv[1]); sys.argv[1:] = ['--version']; "
           "from alumet_setup.cli import cli; cli(prog_name='alumet-setup')")
    result = subprocess.run([sys.executable, "-I", "-c", run, str(installed_wheel)], capture_output=True, text=True,
                            cwd=tmp_path, timeout=60, check=False)
    assert (result.returncode, result.stdout, result.stderr) == (0, "alumet-setup, version 0.1.0\n", "")
