"""A stdio MCP server for the tests, on the official SDK: it reports what its environment
holds (lengths, never values), as a vendor server that reads its key from env would."""

from __future__ import annotations

import os
from importlib import import_module
from typing import Any

try:
    from mcp.server.mcpserver import MCPServer  # SDK 2.x
except ImportError:  # SDK 1.x
    MCPServer: Any = import_module("mcp.server.fastmcp").FastMCP  # type: ignore[no-redef]

server = MCPServer("env-reporter")


@server.tool()
def secret_length(name: str) -> int:
    """The length of environment variable ``name`` (-1 if unset)."""
    return len(os.environ.get(name, "")) if name in os.environ else -1


@server.tool()
def has_value(name: str, fingerprint: str) -> bool:
    """Whether ``name`` holds the value whose SHA-256 is ``fingerprint``."""
    import hashlib

    return hashlib.sha256(os.environ.get(name, "").encode()).hexdigest() == fingerprint


if __name__ == "__main__":
    server.run("stdio")
