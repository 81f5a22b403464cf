"""An MCP server mounted inside a FastAPI app: ``Depends(require_key(...))`` guards the
app's own routes and ``ApiKeyMiddleware`` the mounted MCP endpoint, with one store.

    pip install fastapi uvicorn 'mcp-keys[mcp]'
    mcp-keys create reader --scope tools:call > reader.txt
    python examples/fastapi_server.py --port 8000

``GET /api/whoami`` answers the caller's key ID; ``/mcp`` is the MCP server. Both refuse
alike: 401 without a valid key, 403 without ``tools:call``.

A browser page from another site is refused first: a foreign ``Origin`` gets 403 and a
foreign ``Host`` 421; MCP_KEYS_ALLOWED_HOSTS / MCP_KEYS_ALLOWED_ORIGINS allow more.
"""

import argparse
import contextlib
from collections.abc import AsyncIterator
from typing import Annotated

import uvicorn
from fastapi import Depends, FastAPI
from mcp.server.mcpserver import MCPServer

from mcp_keys import ValidationResult
from mcp_keys.integrations import require_scopes
from mcp_keys.integrations.fastapi import install, require_key
from mcp_keys.integrations.mcp import ApiKeyMiddleware, http_app


def build_app(port: int, store: str | None = None) -> FastAPI:
    """The FastAPI app; ``store`` defaults to MCP_KEYS_STORE or ./.mcp-keys."""
    server = MCPServer("fastapi-example")
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
    mcp_app = http_app(server)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with server.session_manager.run():  # a mounted app's lifespan is not run
            yield

    app = FastAPI(lifespan=lifespan)
    install(app)  # refusals carry the same JSON body as the middleware's

    caller = require_key(["tools:call"], store=store)

    @app.get("/api/whoami")
    def whoami(key: Annotated[ValidationResult, Depends(caller)]) -> dict[str, object]:
        return {"key_id": key.key_id, "name": key.name, "scopes": list(key.scopes)}

    app.mount("/", ApiKeyMiddleware(mcp_app, store, scopes=["tools:call"],
                                    resource_server_url=f"http://127.0.0.1:{port}/mcp"))
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--store", default=None, help="mcp-keys store path or URL")
    args = parser.parse_args()
    uvicorn.run(build_app(args.port, args.store), host="127.0.0.1", port=args.port,
                log_level="warning")


if __name__ == "__main__":
    main()
