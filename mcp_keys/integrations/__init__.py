"""mcp-keys in front of MCP servers: ``mcp`` (official SDK 1.x/2.x and any ASGI app),
``fastmcp`` (the standalone FastMCP package), ``fastapi`` (a dependency), and
``require_scopes`` for per-tool scopes on any of them."""

from .scopes import ScopeError, require_scopes

__all__ = ["ScopeError", "require_scopes"]
