"""Files users name: `config render -o` writes only over what it should, reads are bounded and text-only.

The CLI runs as a subprocess with a timeout, so a read that never ends fails the test instead of hanging it.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from alumet_setup.hostside import safe_io

RENDER = ("config", "render", "--profile", "rapl")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "alumet_setup", *args], capture_output=True, text=True,
                          timeout=30, check=False, stdin=subprocess.DEVNULL)


def one_line(run: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert run.returncode == code, (run.returncode, run.stdout[-500:], run.stderr[-2000:])
    assert run.stdout == "" and run.stderr.count("\n") == 1 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.startswith("alumet-setup: error: ")
    return run.stderr


@pytest.mark.processes
def test_a_symlink_is_kept_unless_followed(tmp_path: Path) -> None:
    target = tmp_path / "real.toml"
    target.write_text("mine\n")
    link = tmp_path / "link.toml"
    link.symlink_to(target)
    assert "a symbolic link: not replaced" in one_line(cli(*RENDER, "-o", str(link)))
    assert link.is_symlink() and target.read_text() == "mine\n"
    assert "already exists (--force replaces it)" in one_line(cli(*RENDER, "-o", str(link), "--follow-symlink"))
    run = cli(*RENDER, "-o", str(link), "--follow-symlink", "--force")
    assert run.returncode == 0, run.stderr
    assert link.is_symlink() and "[plugins.rapl]" in target.read_text()


@pytest.mark.processes
def test_a_fifo_is_not_replaced(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert "a FIFO: only a regular file or a new path is written" in one_line(cli(*RENDER, "-o", str(fifo), "--force"))
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


@pytest.mark.processes
def test_a_link_to_a_device_is_not_followed_onto_it(tmp_path: Path) -> None:
    link = tmp_path / "null"
    link.symlink_to("/dev/null")
    assert "a character device" in one_line(cli(*RENDER, "-o", str(link), "--follow-symlink", "--force"))
    assert link.is_symlink() and stat.S_ISCHR(os.stat("/dev/null").st_mode)


@pytest.mark.processes
def test_an_existing_file_needs_force_and_keeps_its_mode(tmp_path: Path) -> None:
    out = tmp_path / "alumet-config.toml"
    out.write_text("old\n")
    out.chmod(0o600)
    assert "already exists (--force replaces it)" in one_line(cli(*RENDER, "-o", str(out)))
    assert out.read_text() == "old\n"
    assert cli(*RENDER, "-o", str(out), "--force").returncode == 0
    assert "[plugins.rapl]" in out.read_text() and stat.S_IMODE(out.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alumet-config.toml"]  # no temporary file left
    new = tmp_path / "new.toml"
    assert cli(*RENDER, "-o", str(new)).returncode == 0 and stat.S_IMODE(new.stat().st_mode) == 0o644


@pytest.mark.parametrize("command", [("config", "validate"), ("doctor", "--config")])
@pytest.mark.parametrize(("make", "expected"), [
    (lambda d: "/dev/zero", "a character device, not a regular file"),
    (lambda d: _fifo(d), "a FIFO, not a regular file"),
    (lambda d: _write(d, b"\xff\xfe[agent]\n"), "not UTF-8 text (byte 0xff at offset 0)"),
    (lambda d: _write(d, b"[agent]\0\n"), "not a text file (NUL byte at offset 7)"),
    (lambda d: _write(d, b"#" * (safe_io.MAX_READ + 1)), "too large (1048577 bytes; at most 1048576)"),
    (lambda d: str(d / "missing.toml"), "no such file"),
])
@pytest.mark.processes
def test_reads_are_bounded_and_text_only(tmp_path: Path, command: tuple[str, str], make: object,
                                         expected: str) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    assert expected in one_line(cli(*command, path))


def _fifo(directory: Path) -> str:
    os.mkfifo(directory / "fifo")
    return str(directory / "fifo")


def _write(directory: Path, data: bytes) -> str:
    (directory / "file.toml").write_bytes(data)
    return str(directory / "file.toml")


def test_read_stops_at_the_bound_even_when_the_size_lies(tmp_path: Path) -> None:
    # /proc files report size 0 and may be longer: the bound is on what is read, not on st_size.
    assert len(safe_io.read_bytes("/proc/self/maps", limit=1 << 20)) > 0
    with pytest.raises(safe_io.UnsafeFile, match="too large"):
        safe_io.read_bytes("/proc/self/maps", limit=10)
