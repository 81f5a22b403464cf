"""Text that reaches a terminal: control characters (ESC, CSI, OSC, BEL) and bidi
overrides shown as escapes, so nothing in a store, log or path can act on the screen."""

from __future__ import annotations


def safe(text: object) -> str:
    """``text`` with every non-printable character shown as a Python escape."""
    value = str(text)
    if value.isprintable():
        return value
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in value)


def error_line(message: str) -> str:
    """The one stderr line of a failed command."""
    return f"Error: {safe(' '.join(message.split()))}"


def warning_line(message: str) -> str:
    """The stderr line of a problem that does not stop the command."""
    return f"warning: {safe(' '.join(message.split()))}"
