"""Whether output to a stream gets colours: the terminal conventions a user expects of a command-line tool."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TextIO

COLOR_CHOICES = ("auto", "always", "never")


def use_color(choice: str, stream: TextIO, env: Mapping[str, str] | None = None) -> bool:
    """--color=always|never decide; auto colours a terminal unless NO_COLOR is set (no-color.org: any non-empty
    value) or TERM is dumb."""
    if choice != "auto":
        return choice == "always"
    env = os.environ if env is None else env
    if env.get("NO_COLOR") or env.get("TERM") == "dumb":
        return False
    return stream.isatty()
