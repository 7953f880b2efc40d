"""Text that reaches a terminal from outside the tool, made harmless to show.

A host (its /etc/os-release, file names, mount options, program output, agent logs) or a user can hand us
strings with terminal control sequences in them: ESC [2J clears the screen, OSC 0;...BEL sets the window
title, C1 controls (CSI 0x9b, OSC 0x9d) do the same in one character, CR and backspace overwrite what was
printed, a newline forges a line of the report, U+202E reorders it. Text output shows every character that
is not printable in its Python escape form (\\x1b, \\x9b, \\u202e), so the reader sees what the host sent
and the terminal obeys none of it. The tool's own colours are added after this, around escaped text.
JSON needs none of this: json.dumps escapes every control character (and, ensure_ascii, everything else).
"""

from __future__ import annotations


def visible(text: object, newlines: bool = False) -> str:
    """`text` with every non-printable character (C0 and C1 controls, DEL, format characters such as
    bidi overrides, line and paragraph separators, lone surrogates) written as its escape, `\\x1b`.
    `newlines`: keep "\\n" as is, for text that is several lines by design."""
    value = str(text)
    if value.isprintable():  # the common case, and the fast one
        return value
    return "".join(c if c.isprintable() or (newlines and c == "\n") else ascii(c)[1:-1] for c in value)
