"""Hostile things to put where Ansible reads an inventory (test_inventory.py names them case by case,
test_cli_properties.py draws random trees of them), alias bombs for YAML `--set` values, and a bounded
run of the command line."""

from __future__ import annotations

import itertools
import os
import resource
import subprocess
import sys
from pathlib import Path

# A "billion laughs": nine levels of nine aliases, a few hundred bytes that Ansible expands for ever.
BOMB_VARS = "".join(f"{n}: &{n} [{', '.join([f'*{p}'] * 9) if p else ', '.join(['x'] * 9)}]\n"
                    for p, n in zip([None, *"abcdefgh"], "abcdefghi", strict=True)) + "x: *i\n"
GOOD_INI = "[lab]\nh1 ansible_host=127.0.0.1 ansible_port=1\n"

# kind -> what the command line must say about it (the end of its one line).
KINDS = {
    "fifo": "a FIFO, not a regular file",
    "dev-zero": "a character device, not a regular file",
    "dev-urandom": "a character device, not a regular file",
    "big": "too large",
    "bomb": "its YAML aliases expand to more than 500000 values (an alias bomb?): not loaded",
    "binary": "not a text file",
    "dangling": "no such file",
}


def plant(path: Path, kind: str) -> None:
    """Make `path` one of KINDS (devices and dangling targets through a symlink, as a user would)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev-zero":
        path.symlink_to("/dev/zero")
    elif kind == "dev-urandom":
        path.symlink_to("/dev/urandom")
    elif kind == "big":
        path.write_bytes(b"#" * (1 << 20) + b"\n")
    elif kind == "bomb":
        path.write_text(BOMB_VARS)
    elif kind == "binary":
        path.write_bytes(b"\x7fELF\x02\x01\x01\0\0\0")
    elif kind == "dangling":
        path.symlink_to(path.parent / "nowhere")
    else:
        raise ValueError(kind)


MEMORY_LIMIT = 2 << 30  # a regression that reads /dev/zero dies of MemoryError, not the machine
TIMEOUT = 30  # a regression that opens a FIFO fails here instead of hanging


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The real command line in a subprocess, bounded in time and memory."""
    return subprocess.run([sys.executable, "-m", "alumet_setup", *args], capture_output=True, text=True,
                          timeout=TIMEOUT, check=False, stdin=subprocess.DEVNULL, cwd=cwd,
                          preexec_fn=_limit_memory)


def alias_bomb(levels: int) -> list[str]:
    """Flow YAML items `&a [x, ...]`, `&b [*a, ...]`...: together they stand for about 9**levels values."""
    names = "abcdefghij"[:levels]
    return [f"&{names[0]} [{', '.join(['x'] * 9)}]",
            *(f"&{n} [{', '.join([f'*{p}'] * 9)}]" for p, n in itertools.pairwise(names))]


def list_bomb(levels: int = 7) -> str:
    """A flow YAML list (a list --set value) of 9**levels values once expanded."""
    return "[" + ", ".join(alias_bomb(levels)) + "]"


def dict_bomb(levels: int = 7) -> str:
    """A flow YAML mapping (a dict --set value) of 9**levels values once expanded."""
    return "{" + ", ".join(f"k{i}: {item}" for i, item in enumerate(alias_bomb(levels))) + "}"
