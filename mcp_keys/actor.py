"""Who is acting: the OS user, and the name automation gives itself in ``MCP_KEYS_ACTOR``.

Both reach terminals through ``audit``, so a name with control characters is refused.
"""

from __future__ import annotations

import os

from .errors import UsageError


def check_actor(value: str) -> str:
    """``MCP_KEYS_ACTOR`` must be printable: it reaches terminals through ``audit``."""
    if not value.isprintable() or len(value) > 128:
        raise UsageError("MCP_KEYS_ACTOR must be at most 128 printable characters "
                         "(no control characters)")
    return value


def current_actor() -> str:
    """The OS user, with ``MCP_KEYS_ACTOR`` in front when automation sets it."""
    import getpass

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid:{os.getuid()}"
    automation = os.environ.get("MCP_KEYS_ACTOR", "").strip()
    if automation and not automation.isprintable():
        automation = automation.encode("unicode_escape").decode("ascii")  # never raise here
    return f"{automation} ({user})" if automation else user
