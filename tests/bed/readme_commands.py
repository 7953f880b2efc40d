"""Commands of README.md sections, as argv: tests follow the README as written, so they fail when it drifts."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def lines(section: str) -> list[str]:
    """The lines of the ```sh blocks under README.md's `## section`, as written."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    if found is None:
        raise LookupError(f"README.md has no '## {section}' section")
    blocks = re.findall(r"^```sh\n(.*?)^```", found[1], re.MULTILINE | re.DOTALL)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


def commands(section: str, program: str = "alumet-setup") -> list[list[str]]:
    """The `program ...` lines of the ```sh blocks under README.md's `## section`, as argv."""
    return [shlex.split(line) for line in lines(section) if line.startswith(program + " ")]


def substitute(argv: list[str], settings: dict[str, str], host: str | None = None) -> list[str]:
    """`argv` with the values of the given --set keys (and of --host) replaced: the README's placeholders."""
    out = list(argv)
    for i, arg in enumerate(out[:-1]):
        if arg == "--set":
            key = out[i + 1].partition("=")[0]
            if key in settings:
                out[i + 1] = f"{key}={settings[key]}"
        elif arg == "--host" and host is not None:
            out[i + 1] = host
    return out
