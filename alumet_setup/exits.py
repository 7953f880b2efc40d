"""Exit codes, one policy for doctor and install/uninstall alike."""

from __future__ import annotations

EXIT_OK, EXIT_NOT_READY, EXIT_USAGE = 0, 1, 2


def exit_code(unreachable: bool, ok: bool) -> int:
    """2 when a host could not be reached (as for bad input), else 1 when a host is not ready or failed,
    else 0."""
    if unreachable:
        return EXIT_USAGE
    return EXIT_OK if ok else EXIT_NOT_READY
