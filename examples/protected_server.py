"""A protected MCP server: one tool, streamable HTTP on 127.0.0.1, keys from mcp-keys.

    mcp-keys create demo --scope tools:call > key.txt
    python examples/protected_server.py --port 8000

Clients send ``Authorization: Bearer <key>``; a missing, unknown, revoked or expired key
gets 401, a key without ``tools:call`` gets 403. Revoking a key with ``mcp-keys revoke``
takes effect within a second, with no restart.
"""

from __future__ import annotations

import argparse

import uvicorn
from mcp.server.mcpserver import MCPServer

from mcp_keys.integrations.mcp import mcp_auth


def build_server(port: int, store: str | None = None) -> MCPServer:
    """The example server; ``store`` defaults to MCP_KEYS_STORE or ./.mcp-keys/keys.json."""
    url = f"http://127.0.0.1:{port}/mcp"
    server = MCPServer("protected-example", **mcp_auth(url, required_scopes=["tools:call"],
                                                        store=store))

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--store", default=None, help="mcp-keys store path")
    args = parser.parse_args()
    app = build_server(args.port, args.store).streamable_http_app()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
