"""Exit codes, one policy for doctor and install/uninstall alike; a run stopped by a signal exits 128 + its
number (Interrupted); the one-line error every command prints."""

from __future__ import annotations

import click

from .textsafe import visible

EXIT_OK, EXIT_NOT_READY, EXIT_USAGE = 0, 1, 2


def error(message: str) -> None:
    """One `alumet-setup: error:` line on stderr, whatever the message quotes of the user's input: a
    character that would break the line or the terminal (newline, vertical tab, ESC, U+2028) is escaped."""
    click.echo(f"alumet-setup: error: {visible(message)}", err=True)


def exit_code(unreachable: bool, ok: bool) -> int:
    """2 when a host could not be reached (as for bad input), else 1 when a host is not ready or failed,
    else 0."""
    if unreachable:
        return EXIT_USAGE
    return EXIT_OK if ok else EXIT_NOT_READY


class Interrupted(BaseException):
    """The run was stopped by SIGINT or SIGTERM (after its cleanup: runner.py). A BaseException, as
    KeyboardInterrupt: no `except Exception` may swallow it. cli.main exits 128 + signum (130, 143)."""

    def __init__(self, signum: int):
        import signal

        super().__init__(signal.Signals(signum).name)
        self.signum = signum
