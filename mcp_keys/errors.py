"""One exception family: every expected failure carries a message a person can act on.

The CLI prints ``str(error)`` as a single stderr line and exits 1, so messages are one
line, name the file or ID involved, and never contain a key or digest.
"""

from __future__ import annotations


def warn(message: str, *args: object) -> None:
    """A problem that does not stop the operation, on the ``mcp_keys`` logger (the CLI
    prints it as a ``warning:`` line). logging is imported only when there is one."""
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
