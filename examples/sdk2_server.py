"""An MCP server on the official SDK 2.x (``MCPServer``), protected by mcp-keys.

    mcp-keys create reader --scope tools:call > reader.txt
    mcp-keys create writer --scope tools:call --scope notes:write > writer.txt
    python examples/sdk2_server.py --port 8000

Clients send ``Authorization: Bearer <key>`` to http://127.0.0.1:8000/mcp. No key, or an
unknown, revoked or expired one: 401; a key without ``tools:call``: 403. Any key may call
``read_note``; ``write_note`` also needs ``notes:write``. A revoke reaches the running
server within a second.

A browser page from another site is refused first: a foreign ``Origin`` gets 403 and a
foreign ``Host`` 421; MCP_KEYS_ALLOWED_HOSTS / MCP_KEYS_ALLOWED_ORIGINS allow more.
"""

from __future__ import annotations

import argparse

import uvicorn
from mcp.server.mcpserver import MCPServer

from mcp_keys.integrations import require_scopes
from mcp_keys.integrations.mcp import http_app, mcp_auth


def build_app(port: int, store: str | None = None) -> object:
    """The server's ASGI app; ``store`` defaults to MCP_KEYS_STORE or ./.mcp-keys."""
    url = f"http://127.0.0.1:{port}/mcp"
    server = MCPServer("sdk2-example", **mcp_auth(url, required_scopes=["tools:call"],
                                                   store=store))
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

    return http_app(server)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--store", default=None, help="mcp-keys store path or URL")
    args = parser.parse_args()
    uvicorn.run(build_app(args.port, args.store), host="127.0.0.1", port=args.port,  # type: ignore[arg-type]
                log_level="warning")


if __name__ == "__main__":
    main()
