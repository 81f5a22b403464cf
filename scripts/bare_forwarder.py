#!/usr/bin/env python3
"""The gateway benchmark's baseline (b): an MCP tool on the same SDK and transport as the
gateway that forwards with a pooled HTTP client and does nothing else (no key check,
policy, scrubbing or audit). It imports nothing from mcp-keys.

    python scripts/bare_forwarder.py UPSTREAM_URL stdio
    python scripts/bare_forwarder.py UPSTREAM_URL http PORT
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import httpx2
import uvicorn
from mcp.server.mcpserver import MCPServer


def main() -> None:
    upstream, transport = sys.argv[1], sys.argv[2]
    server = MCPServer("bare-forwarder")
    client: dict[str, httpx2.AsyncClient] = {}

    @server.tool()
    async def forward(path: str) -> dict[str, Any]:
        """Forward one GET."""
        if "c" not in client:
            client["c"] = httpx2.AsyncClient(follow_redirects=False, trust_env=False)
        reply = await client["c"].get(upstream + path, timeout=30)
        return {"status": reply.status_code, "headers": dict(reply.headers),
                "body": reply.text, "body_encoding": "text", "truncated": False}

    for name in ("httpx", "httpx2", "httpcore", "httpcore2"):  # as the gateway does
        logging.getLogger(name).setLevel(logging.WARNING)
    if transport == "stdio":
        server.run("stdio")
    else:
        port = int(sys.argv[3])
        uvicorn.run(server.streamable_http_app(host="127.0.0.1"), host="127.0.0.1", port=port,
                    log_level="warning")


if __name__ == "__main__":
    main()
