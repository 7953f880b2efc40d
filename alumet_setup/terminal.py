"""The terminal conventions a user expects of a command-line tool: whether output gets colours, and the
status line of a long install task (Activity)."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Mapping
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


def _clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 60}m {whole % 60:02d}s" if whole >= 60 else f"{whole}s"


class Activity:
    """What is running while nothing else is printed: install's progress lines go through echo(), and a task
    that runs long (a cargo build, apt) shows its name and how long it has run.

    On a terminal (`tty`) that is one status line under the output, rewritten every `refresh` seconds once
    `quiet_after` seconds passed without a line, and erased before every line printed and at the end, so it
    never mixes with them. Elsewhere (a pipe, a log file) it is a plain line, at most one every `plain_every`
    seconds of silence. start()/stop() run the ticker thread; stop() is safe to call twice and after Ctrl-C."""

    def __init__(self, echo: Callable[[str], None], stream: TextIO | None = None, *, tty: bool | None = None,
                 refresh: float = 1.0, quiet_after: float = 3.0, plain_every: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        self._echo = echo
        self._stream = stream
        self.tty = bool(stream is not None and stream.isatty()) if tty is None else tty
        self.refresh, self.quiet_after, self.plain_every = refresh, quiet_after, plain_every
        self._clock = clock
        self._lock = threading.RLock()
        self._text: str | None = None  # what runs now
        self._since = self._last_line = clock()
        self._shown = False  # a status line is on the screen
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def echo(self, line: str) -> None:
        """Print a line of output (the status line, if any, is erased first and comes back later)."""
        with self._lock:
            self._erase()
            self._echo(line)
            self._last_line = self._clock()

    def working(self, text: str | None) -> None:
        """`text` runs from now on (None: nothing runs); its clock restarts when the text changes."""
        with self._lock:
            if text != self._text:
                self._text, self._since = text, self._clock()
                if text is None:
                    self._erase()

    def still(self, line: str) -> None:
        """A sign of life (a poll, a retry): the status line on a terminal, else a line when none was printed
        for `plain_every` seconds."""
        with self._lock:
            if self.tty:
                self._draw(line)
            elif self._clock() - self._last_line >= self.plain_every:
                self.echo(line)

    def tick(self) -> None:
        """One beat of the ticker: redraw or print what runs, with its time, if it has been quiet long enough."""
        with self._lock:
            if self._text is None:
                return
            now = self._clock()
            line = f"… {self._text} ({_clock(now - self._since)})"
            if self.tty:
                if now - self._last_line >= self.quiet_after:
                    self._draw(line)
            elif now - self._last_line >= self.plain_every and now - self._since >= self.plain_every:
                self.echo(line)

    def _draw(self, line: str) -> None:
        if self._stream is None:
            return
        width = shutil.get_terminal_size((80, 24)).columns
        text = line if len(line) < width else line[: max(width - 2, 1)] + "…"  # one row, or \r cannot erase it
        self._stream.write("\r\x1b[K" + text)
        self._stream.flush()
        self._shown = True

    def _erase(self) -> None:
        if self._shown and self._stream is not None:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
        self._shown = False

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="alumet-setup-activity", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.refresh if self.tty else min(self.refresh * 5, self.plain_every)):
            self.tick()

    def stop(self) -> None:
        """Stop the ticker and erase the status line (idempotent)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        with self._lock:
            self._text = None
            self._erase()
