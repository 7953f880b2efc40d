"""Run logs (runner.runs_directory, claim_run, rotate_runs): the ten newest runs are kept, nothing else is
ever removed, a bad state directory is one line (exit 2) before anything runs, and runs at once never
fail each other."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from alumet_setup.playbook import runner

# Reaches the play (ansible-playbook runs, the host is unreachable: exit 2) without touching this machine.
INSTALL = ("install", "--check", "--only", "sysctl", "--host", "root@127.0.0.1:1")


def _cli(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "alumet_setup", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=180, check=False, stdin=subprocess.DEVNULL)


def _env(tmp_path: Path, state: str | None) -> dict[str, str]:
    env = {**os.environ, "HOME": str(tmp_path / "home")}
    env.pop("XDG_STATE_HOME", None)
    if state is not None:
        env["XDG_STATE_HOME"] = state
    (tmp_path / "home").mkdir(exist_ok=True)
    return env


def _runs_like(directory: Path, count: int, start: int = 0) -> list[str]:
    names = [f"2020010{1 + (start + i) // 60 % 9}-0000{(start + i) % 60:02d}-abcdef" for i in range(count)]
    for i, name in enumerate(names):
        (directory / name).mkdir(parents=True)
        (directory / name / "stdout").write_text("old run\n")
        os.utime(directory / name, (1_000_000 + i, 1_000_000 + i))
    return names


@pytest.mark.processes
def test_a_symlinked_runs_directory_is_refused_and_its_target_kept(tmp_path: Path) -> None:
    """Before: rotation followed the link and removed the oldest entries of whatever it pointed to."""
    precious = tmp_path / "precious"
    names = _runs_like(precious, 12)
    (precious / "thesis.tex").write_text("years of work\n")
    os.utime(precious / "thesis.tex", (1, 1))
    runs = tmp_path / "state" / "alumet-setup" / "runs"
    runs.parent.mkdir(parents=True)
    runs.symlink_to(precious)
    run = _cli(_env(tmp_path, str(tmp_path / "state")), *INSTALL)
    assert run.returncode == 2 and run.stdout == "", (run.stdout[-1000:], run.stderr[-2000:])
    assert run.stderr == (f"alumet-setup: error: the run log directory {runs} is a symbolic link: not used (old "
                          "runs are removed from it; make it a real directory)\n")
    assert sorted(p.name for p in precious.iterdir()) == sorted([*names, "thesis.tex"])


@pytest.mark.processes
def test_only_runs_are_rotated_and_a_stray_file_breaks_nothing(tmp_path: Path) -> None:
    """Before: a stray file among the oldest entries made every later run fail with a NotADirectoryError
    traceback (exit 1); a symlink there would have been followed."""
    runs = tmp_path / "state" / "alumet-setup" / "runs"
    names = _runs_like(runs, 11)
    (runs / "notes.txt").write_text("mine\n")
    os.utime(runs / "notes.txt", (1, 1))
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "keep").write_text("x")
    (runs / "20000101-000000-000000").symlink_to(tmp_path / "elsewhere")  # named like a run, yet a link
    (runs / "not-a-run").mkdir()
    run = _cli(_env(tmp_path, str(tmp_path / "state")), *INSTALL)
    assert "Traceback" not in run.stderr and run.returncode == 2, run.stderr[-2000:]
    assert f"{tmp_path}/state/alumet-setup/runs/2" in run.stdout  # "Run log: <the new run>"
    left = sorted(p.name for p in runs.iterdir())
    new = [n for n in left if n not in names and runner.RUN_NAME.fullmatch(n) and n != "20000101-000000-000000"]
    assert len(new) == 1
    assert left == sorted([*names[2:], *new, "notes.txt", "not-a-run", "20000101-000000-000000"])  # ten runs
    assert (tmp_path / "elsewhere" / "keep").exists()


@pytest.mark.processes
@pytest.mark.parametrize("state", ["a-file", "/proc/self", "/proc/self/status"])
def test_a_state_directory_that_cannot_be_made_is_one_line(tmp_path: Path, state: str) -> None:
    """Before: a FileExistsError or NotADirectoryError traceback, exit 1."""
    if state == "a-file":
        state = str(tmp_path / "a-file")
        Path(state).write_text("")
    run = _cli(_env(tmp_path, state), *INSTALL)
    assert run.returncode == 2 and run.stdout == "", (run.stdout[-1000:], run.stderr[-2000:])
    assert run.stderr.startswith(f"alumet-setup: error: cannot make the run log directory {state}/alumet-setup/"
                                 f"runs (XDG_STATE_HOME={state}): ") and run.stderr.count("\n") == 1, run.stderr


@pytest.mark.processes
def test_a_relative_xdg_state_home_is_ignored(tmp_path: Path) -> None:
    """The XDG base directory specification: relative paths are invalid and must be ignored."""
    (tmp_path / "cwd").mkdir()
    run = _cli(_env(tmp_path, "relative/state"), *INSTALL, cwd=tmp_path / "cwd")
    assert "Traceback" not in run.stderr and run.returncode == 2, run.stderr[-2000:]
    assert not (tmp_path / "cwd" / "relative").exists()
    assert len(list((tmp_path / "home" / ".local" / "state" / "alumet-setup" / "runs").iterdir())) == 1


@pytest.mark.processes
def test_runs_at_once_never_fail_each_other_nor_lose_a_run_in_progress(tmp_path: Path) -> None:
    """Before: ansible-runner's rotation listed the directory, then stat-ed and removed entries that another
    run had just removed (FileNotFoundError), and removed a run still in progress once ten newer existed."""
    runs = runner.runs_directory(tmp_path / "runs")
    _runs_like(runs, 30)
    errors: list[BaseException] = []
    rounds, workers = 40, 6

    def work() -> None:
        try:
            for _ in range(rounds):
                with runner.claim_run(runs, keep=3) as mine:
                    (mine / "stdout").write_text("running\n")
                    time.sleep(0.001)
                    assert (mine / "stdout").read_text() == "running\n"  # not removed under our feet
        except BaseException as exc:  # reported below, whatever it is
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(workers)]
    # And other processes at the same time: a lock held in one process is seen by all.
    code = ("import sys, time; from pathlib import Path; from alumet_setup.playbook import runner\n"
            "for _ in range(40):\n"
            "    with runner.claim_run(Path(sys.argv[1]), keep=3) as mine:\n"
            "        (mine / 'stdout').write_text('x'); time.sleep(0.001); assert (mine / 'stdout').exists()\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(runs)], stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for proc in procs:
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
    assert errors == []
    left = [p.name for p in runs.iterdir()]
    assert all(runner.RUN_NAME.fullmatch(n) for n in left) and 1 <= len(left) <= 3 + workers + 2, left


def test_a_run_in_progress_is_never_rotated_away(tmp_path: Path) -> None:
    runs = runner.runs_directory(tmp_path / "runs")
    with runner.claim_run(runs, keep=1) as long_run:
        for _ in range(5):
            with runner.claim_run(runs, keep=1):
                pass
        assert long_run.is_dir()
    with runner.claim_run(runs, keep=1) as last:
        pass
    assert [p.name for p in runs.iterdir()] == [last.name]
