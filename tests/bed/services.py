#!/usr/bin/env python3
"""Test services on 127.0.0.1 only: the Rust dist mirror (HTTP) and the stand-in source (git daemon).

Used by the session fixture in tests/conftest.py; run it by hand (`python3 tests/bed/services.py`) to
keep them up while running molecule directly. Ctrl-C stops them.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
HOST = "127.0.0.1"
MIRROR_PORT = 18473
GIT_PORT = 19418
# What inventories use: RUSTUP_DIST_SERVER / RUSTUP_UPDATE_ROOT and the agent's git URL.
MIRROR_URL = f"http://{HOST}:{MIRROR_PORT}"
RUSTUP_UPDATE_ROOT = f"{MIRROR_URL}/rustup"
GIT_URL = f"git://{HOST}:{GIT_PORT}/alumet"


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


def commands() -> dict[int, list[str]]:
    mirror, standin = ROOT / ".cache" / "rust-mirror", ROOT / ".cache" / "standin"
    return {
        MIRROR_PORT: [
            sys.executable,
            "-m",
            "http.server",
            "--bind",
            HOST,
            "--directory",
            str(mirror),
            str(MIRROR_PORT),
        ],
        GIT_PORT: [
            "git",
            "daemon",
            f"--listen={HOST}",
            f"--port={GIT_PORT}",
            "--reuseaddr",
            "--export-all",
            "--informative-errors",
            f"--base-path={standin}",
            str(standin),
        ],
    }


@contextlib.contextmanager
def running(log_dir: Path | None = None) -> Iterator[None]:
    """Start whatever is not already listening; stop only what this call started."""
    log_dir = log_dir or ROOT / ".cache" / "services"
    log_dir.mkdir(parents=True, exist_ok=True)
    started: list[subprocess.Popen] = []
    try:
        for port, cmd in commands().items():
            if listening(port):
                print(f"services: 127.0.0.1:{port} already listening, reusing it", file=sys.stderr)
                continue
            log = (log_dir / f"{port}.log").open("wb")
            started.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
            deadline = time.monotonic() + 10
            while not listening(port):
                if started[-1].poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"services: {cmd[0]} on port {port} did not start, see {log.name}")
                time.sleep(0.1)
        yield
    finally:
        for proc in started:
            proc.terminate()
            proc.wait(timeout=10)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # so `finally` stops the services
    with running():
        print(f"mirror {MIRROR_URL}  rustup root {RUSTUP_UPDATE_ROOT}  source {GIT_URL}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
