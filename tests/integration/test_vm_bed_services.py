"""The VM tier's private test services stop entirely (the tier itself runs only with ALUMET_VM_TIER=1).

`git daemon` is git running git-daemon as its child: the tier killed git alone with SIGKILL, and git-daemon
kept listening on 127.0.0.1 after a whole VM run (found by hand after one). Cheap enough for every run: no VM
is booted, only the two listeners are started and stopped.
"""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "bed"))

import vm as vmbed  # noqa: E402


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _processes_naming(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_private_services_leave_no_listener_and_no_child_behind(bed: dict[str, str], tmp_path: Path) -> None:
    with vmbed.private_services(tmp_path) as ports:
        assert ports and all(_listening(port) for port in ports.values()), ports
        daemons = _processes_naming(f"--port={ports[vmbed.services.GIT_PORT]}")
        assert any("git-daemon" in Path(f"/proc/{pid}/exe").resolve().name for pid in daemons), daemons
    assert not [port for port in ports.values() if _listening(port)], ports
    deadline = time.monotonic() + 5  # killed, then reaped by whoever inherited it
    while (alive := [pid for pid in daemons if _alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive, f"still running after the services stopped: {alive}"


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False
