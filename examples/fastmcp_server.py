"""An MCP server on the standalone FastMCP package (3.x or 4.x), protected by mcp-keys.

    pip install fastmcp 'mcp-keys[fastmcp]'
    mcp-keys create reader --scope tools:call > reader.txt
    python examples/fastmcp_server.py --port 8000

401 without a valid key, 403 without ``tools:call``. ``write_note`` needs
``notes:write``, checked two ways: FastMCP's own ``auth=require_scopes(...)`` on the tool
(a key without it does not even see the tool), and mcp-keys' ``require_scopes`` inside
``append_note``, which fails the call with a message naming the scope.

A browser page from another site is refused first: a foreign ``Origin`` gets 403 and a
foreign ``Host`` 421; MCP_KEYS_ALLOWED_HOSTS / MCP_KEYS_ALLOWED_ORIGINS allow more.
"""

from __future__ import annotations

import argparse

from fastmcp import FastMCP
from fastmcp.server.auth import require_scopes as fastmcp_scopes

from mcp_keys.integrations import require_scopes
from mcp_keys.integrations.fastmcp import McpKeysVerifier


def build_server(port: int, store: str | None = None) -> FastMCP:
    """The server; ``store`` defaults to MCP_KEYS_STORE or ./.mcp-keys."""
    server = FastMCP("fastmcp-example", auth=McpKeysVerifier(
        store, required_scopes=["tools:call"],
        resource_server_url=f"http://127.0.0.1:{port}/mcp"))
    notes: dict[str, str] = {}

    @server.tool
    def read_note(name: str) -> str:
        """Read a note (any key with tools:call)."""
        return notes.get(name, "")

    @server.tool(auth=fastmcp_scopes("notes:write"))
    def write_note(name: str, text: str) -> str:
        """Write a note (FastMCP hides it from keys without notes:write)."""
        notes[name] = text
        return "saved"

    @server.tool
    def append_note(name: str, text: str) -> str:
        """Append to a note (needs notes:write, checked inside the tool)."""
        require_scopes("notes:write")
        notes[name] = notes.get(name, "") + text
        return "appended"

    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--store", default=None, help="mcp-keys store path or URL")
    args = parser.parse_args()
    build_server(args.port, args.store).run(transport="http", host="127.0.0.1",
                                            port=args.port, log_level="warning",
                                            show_banner=False)


if __name__ == "__main__":
    main()
