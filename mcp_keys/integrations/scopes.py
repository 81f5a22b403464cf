"""Per-tool scopes: ``require_scopes("files:write")`` inside a tool refuses that one call
when the caller's key lacks a scope, so one server can serve keys of different reach.

It reads the access token the framework set for the current request (FastMCP's
``get_access_token()``, or the official SDK's auth context) and fails closed: a call
with no mcp-keys key on it is refused too.
"""

from __future__ import annotations

import sys
from typing import Any

from ..errors import McpKeysError


class ScopeError(McpKeysError, PermissionError):
    """The caller's key lacks a scope this tool needs (the message says which)."""


def _current_token() -> tuple[Any, str]:
    """The current request's access token and the framework that set it: FastMCP's when
    FastMCP serves the call, else the official SDK's; ``None`` when neither knows one."""
    if "fastmcp" in sys.modules:
        try:
            from fastmcp.server.dependencies import get_access_token as fastmcp_token

            token = fastmcp_token()
        except Exception:  # not inside a FastMCP request
            token = None
        if token is not None:
            return token, "fastmcp"
    try:
        from mcp.server.auth.middleware.auth_context import get_access_token
    except ImportError:
        return None, ""
    return get_access_token(), "mcp"


def _tool_error(framework: str) -> type[Exception] | None:
    """The exception whose message the framework shows the caller (others are masked)."""
    candidates = {"fastmcp": ("fastmcp.exceptions",),
                  "mcp": ("mcp.server.mcpserver.exceptions", "mcp.server.fastmcp.exceptions")}
    import importlib

    for module in candidates.get(framework, ()):
        try:
            found: type[Exception] = importlib.import_module(module).ToolError
            return found
        except (ImportError, AttributeError):
            continue
    return None


_kinds: dict[type[Exception], type[ScopeError]] = {}


def _raise(message: str, framework: str) -> None:
    """Raise a ``ScopeError`` that is also the framework's ``ToolError``, so the caller
    reads the message and ``except ScopeError`` still works."""
    base = _tool_error(framework)
    if base is None:
        raise ScopeError(message)
    kind = _kinds.get(base)
    if kind is None:
        kind = _kinds[base] = type("ScopeError", (base, ScopeError), {})
    raise kind(message)


def require_scopes(*scopes: str) -> Any:
    """Return the caller's access token if its key holds every scope in ``scopes``;
    otherwise fail this tool call with an error naming what is missing."""
    token, framework = _current_token()
    needed = " ".join(scopes)
    if token is None:
        _raise(f"this tool needs an mcp-keys key with scope {needed}; the call carried none",
               framework or "mcp")
    held = set(token.scopes)
    missing = [scope for scope in scopes if scope not in held]
    if missing:
        _raise(f"this tool needs scope {' '.join(missing)}; key {token.client_id} has "
               f"{' '.join(sorted(held)) or 'no scopes'}: ask for a key created with "
               + " ".join(f"--scope {scope}" for scope in missing), framework)
    return token
