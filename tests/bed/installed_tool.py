"""alumet-setup as a user gets it: the README's first command, run as written, in a HOME of its own.

That command builds a wheel from the checkout and installs it into a venv (`pip install .`, not `-e`), then
runs doctor on this machine. The end-to-end tiers drive the `alumet-setup` it installed, from a directory
outside the checkout and with the checkout not importable, so they test the package that ships.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import readme_commands

ROOT = readme_commands.ROOT
SECTION = "Install and run doctor on this machine"
VENV = Path(".local/share/alumet-setup")  # under HOME, as the README writes it


class InstallFailed(RuntimeError):
    """The README's command did not install a working alumet-setup."""


@dataclass(frozen=True)
class InstalledTool:
    home: Path      # the HOME the README's command ran in
    workdir: Path   # a directory outside the checkout, where the tool is run from
    program: Path   # <home>/.local/share/alumet-setup/bin/alumet-setup
    first_run: subprocess.CompletedProcess[str]  # the README command's own output (ends with doctor here)

    def env(self, **extra: str) -> dict[str, str]:
        """This environment without anything that would make the checkout importable."""
        return {**user_env(), **extra}

    def run(self, *args: str, timeout: float = 900, **kwargs: object) -> subprocess.CompletedProcess[str]:
        """`alumet-setup ARGS` from `workdir`; output captured as text. kwargs go to subprocess.run (env...)."""
        kwargs.setdefault("env", self.env())
        if "input" not in kwargs:  # never the test session's own stdin (ssh would leave it non-blocking)
            kwargs.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.run([str(self.program), *args], cwd=kwargs.pop("cwd", self.workdir), capture_output=True,
                              text=True, timeout=timeout, check=False, **kwargs)  # type: ignore[call-overload]

    def cli(self, *args: str, state: Path, timeout: float = 900, **env: str) -> subprocess.CompletedProcess[str]:
        """`alumet-setup ARGS` as the end-to-end tests run it against hosts: XDG_STATE_HOME=state, `env` added,
        and an ssh ControlPath directory of this run's own. Ansible keys its master connections by user, host
        and port only, so a live master of an earlier run would let a wrong key or host key in unchecked."""
        with tempfile.TemporaryDirectory(prefix="as-cp-") as control:
            return self.run(*args, timeout=timeout, env=self.env(XDG_STATE_HOME=str(state),
                                                                 ANSIBLE_SSH_CONTROL_PATH_DIR=control, **env))


def user_env() -> dict[str, str]:
    """os.environ as a user's shell has it: no PYTHONPATH, no virtual environment of the checkout on PATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    checkout_bins = {str(ROOT / ".venv" / "bin")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", os.defpath).split(os.pathsep) if p not in checkout_bins)
    return env


def readme_line(section: str, containing: str) -> str:
    """The line of README.md's `section` (its ```sh blocks) that contains `containing`, as written."""
    found = [line for line in readme_commands.lines(section) if containing in line]
    if len(found) != 1:
        raise LookupError(f"README.md's '{section}' has {len(found)} lines with '{containing}', not one")
    return found[0]


def readme_install_line() -> str:
    """The README's first command, as written (one line of its first ```sh block)."""
    lines = readme_commands.lines(SECTION)
    if not lines:
        raise LookupError(f"README.md's '{SECTION}' has no command")
    return lines[0]


def without_sudo(line: str) -> str:
    """A command line as root types it on a host without sudo (the README: leave out the leading `sudo`)."""
    return line.replace("sudo ", "")


def as_user(line: str, home: Path, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """A README line run by bash as a user would, with HOME=home, from `cwd`.

    As root on a machine without sudo, `sudo ` is left out, as the README says to do there.
    """
    if os.geteuid() == 0 and shutil.which("sudo") is None:
        line = without_sudo(line)
    return subprocess.run(["bash", "-c", line], cwd=cwd, env={**user_env(), "HOME": str(home)},
                          capture_output=True, text=True, timeout=timeout, check=False)


def package_dir(python: Path, cwd: Path) -> Path:
    """Where `python` imports alumet_setup from (run from cwd, the checkout not importable); InstallFailed if not."""
    where = subprocess.run([str(python), "-c", "import alumet_setup; print(alumet_setup.__file__)"],
                           cwd=cwd, env=user_env(), capture_output=True, text=True, check=False)
    if where.returncode != 0:
        raise InstallFailed(f"{python} cannot import alumet_setup: {where.stderr}")
    return Path(where.stdout.strip()).parent


def install(home: Path, workdir: Path, source: Path = ROOT) -> InstalledTool:
    """Run the README's first command from `source` (a tree of alumet-setup) with HOME=home; InstallFailed when
    no tool came of it."""
    line = readme_install_line()
    home.mkdir(parents=True, exist_ok=True)
    workdir.mkdir(parents=True, exist_ok=True)
    proc = as_user(line, home, source)
    program = home / VENV / "bin" / "alumet-setup"
    # The line ends with doctor on this machine: 0 ready, 1 a plugin blocked here; 2 or more is a failure.
    if proc.returncode not in (0, 1) or not program.is_file():
        raise InstallFailed(f"README command failed (exit {proc.returncode}): {line}\n{proc.stdout}\n{proc.stderr}")
    package = package_dir(program.parent / "python", workdir)
    if ROOT in package.parents or source in package.parents or (home / VENV) not in package.parents:
        raise InstallFailed(f"the installed alumet_setup is not the venv's own copy: {package}")
    return InstalledTool(home=home, workdir=workdir, program=program, first_run=proc)
