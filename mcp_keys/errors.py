"""One exception family: every expected failure carries a message a person can act on.

The CLI prints ``str(error)`` as a single stderr line and exits 1, so messages are one
line, name the file or ID involved, and never contain a key or digest.
"""

from __future__ import annotations

from collections.abc import Callable

_warning_sink: Callable[[str], None] | None = None


def set_warning_sink(sink: Callable[[str], None] | None) -> None:
    """Send ``warn`` messages to ``sink`` instead of logging (the CLI prints them)."""
    global _warning_sink
    _warning_sink = sink


def warn(message: str, *args: object) -> None:
    """A problem that does not stop the operation: to the sink the CLI installed, else the
    ``mcp_keys`` logger (imported only when there is something to say)."""
    if _warning_sink is not None:
        _warning_sink(message % args if args else message)
        return
    import logging

    logging.getLogger("mcp_keys").warning(message, *args)


class McpKeysError(Exception):
    """Base of every expected failure; ``str()`` is the user-facing message."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class UsageError(McpKeysError, ValueError):
    """A bad argument: a malformed duration, name or scope."""

    exit_code = 2


class KeyNotFound(McpKeysError, LookupError):
    """No key with this ID or prefix."""


class AmbiguousKey(McpKeysError, LookupError):
    """A prefix matches more than one key."""


class InvalidState(McpKeysError):
    """The operation does not apply to the key as it is (e.g. rotating a revoked key)."""


class StoreError(McpKeysError):
    """The store could not be read or written."""


class StoreCorrupt(StoreError):
    """The store file exists but is not a store this version understands."""


class StoreLocked(StoreError):
    """Another process held the store lock past the timeout."""


class EnvFileError(McpKeysError):
    """The .env file could not be read or written."""


class UnsafeFile(McpKeysError):
    """A file mcp-keys would trust is not safe to trust: writable or owned by someone else,
    a symlink where none may be, or not a regular file."""


class SecretError(McpKeysError):
    """A secret reference could not be resolved; names the reference and the source,
    never a value."""
