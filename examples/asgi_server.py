"""Any ASGI app behind ``ApiKeyMiddleware``: here an official SDK 2.x server built with no
auth of its own, so the middleware is the only door.

    mcp-keys create reader --scope tools:call > reader.txt
    python examples/asgi_server.py --port 8000

``Authorization: Bearer <key>`` or ``X-API-Key: <key>``; 401 without a valid key, 403
without ``tools:call``; ``write_note`` also needs ``notes:write`` (the middleware hands
the caller's token to the SDK, so ``require_scopes`` works behind it).

A browser page from another site is refused first: a foreign ``Origin`` gets 403 and a
foreign ``Host`` 421; MCP_KEYS_ALLOWED_HOSTS / MCP_KEYS_ALLOWED_ORIGINS allow more.
"""

from __future__ import annotations

import argparse

import uvicorn
from mcp.server.mcpserver import MCPServer

from mcp_keys.integrations import require_scopes
from mcp_keys.integrations.mcp import ApiKeyMiddleware, http_app


def build_app(port: int, store: str | None = None) -> object:
    """The server's ASGI app; ``store`` defaults to MCP_KEYS_STORE or ./.mcp-keys."""
    server = MCPServer("asgi-example")
    notes: dict[str, str] = {}

    @server.tool()
    def read_note(name: str) -> str:
        """Read a note (any key with tools:call)."""
        return notes.get(name, "")

    @server.tool()
    def write_note(name: str, text: str) -> str:
        """Write a note (needs notes:write)."""
        require_scopes("notes:write")
        notes[name] = text
        return "saved"

    # http_app: the SDK's app with its fixed-list Host/Origin check replaced by mcp-keys'
    # (MCP_KEYS_ALLOWED_HOSTS / MCP_KEYS_ALLOWED_ORIGINS), which the middleware runs too.
    return ApiKeyMiddleware(http_app(server), store, scopes=["tools:call"],
                            resource_server_url=f"http://127.0.0.1:{port}/mcp")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--store", default=None, help="mcp-keys store path or URL")
    args = parser.parse_args()
    uvicorn.run(build_app(args.port, args.store), host="127.0.0.1", port=args.port,  # type: ignore[arg-type]
                log_level="warning")


if __name__ == "__main__":
    main()
