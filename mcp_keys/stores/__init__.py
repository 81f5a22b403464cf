"""Where keys live: a JSON file (the default, nothing to install) or PostgreSQL (many
hosts), chosen by the location string everywhere a store is named."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .jsonfile import DEFAULT_PATH, JsonStore, resolve_location

if TYPE_CHECKING:
    from .base import KeyStore

URL_SCHEMES = ("postgresql://", "postgres://")

__all__ = ["DEFAULT_PATH", "JsonStore", "is_url", "open_store", "resolve_location"]


def is_url(location: str | os.PathLike[str]) -> bool:
    """Whether ``location`` names a PostgreSQL store rather than a file."""
    return os.fspath(location).startswith(URL_SCHEMES)


def open_store(location: str | os.PathLike[str] | None = None, *,
               lock_timeout: float | None = None) -> KeyStore:
    """The store at ``location`` (default: ``MCP_KEYS_STORE``, else the JSON file in
    ``./.mcp-keys/``): a ``postgresql://`` URL or a path."""
    resolved = resolve_location(location)
    if is_url(resolved):
        from .postgres import PostgresStore

        return PostgresStore(resolved)
    return JsonStore(resolved, lock_timeout=lock_timeout)
