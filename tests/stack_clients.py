"""The real MCP clients the stack tests drive the examples with: the official SDK's
(1.x or 2.x, whichever is installed) and FastMCP's own, over streamable HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any


def sdk_major() -> int:
    return int(version("mcp").split(".")[0])


@dataclass
class Outcome:
    tools: list[str]
    is_error: bool
    text: str


def text_of(result: Any) -> str:
    """The text of a tool result."""
    return "".join(getattr(part, "text", "") for part in result.content)


def is_error(result: Any) -> bool:
    """Whether a tool result is an error (``is_error`` in SDK 2.x and FastMCP 4.x)."""
    value = getattr(result, "is_error", None)
    return bool(getattr(result, "isError", False) if value is None else value)


@asynccontextmanager
async def http_session(url: str, key: str, timeout: float = 10) -> AsyncIterator[Any]:
    """The official SDK's client session over streamable HTTP, 1.x or 2.x."""
    from mcp import ClientSession

    headers = {"Authorization": f"Bearer {key}"}
    if sdk_major() >= 2:
        import httpx2
        from mcp.client.streamable_http import streamable_http_client

        async with httpx2.AsyncClient(headers=headers, timeout=timeout) as http, \
                streamable_http_client(url, http_client=http) as (read, write), \
                ClientSession(read, write) as session:
            await session.initialize()
            yield session
    else:
        from importlib import import_module

        # SDK 1.x's client (its name in 1.x; 2.x removed it).
        client = import_module("mcp.client.streamable_http").streamablehttp_client
        async with client(url, headers=headers) as (read, write, _), \
                ClientSession(read, write) as session:
            await session.initialize()
            yield session


async def _sdk(url: str, key: str, tool: str, args: dict[str, Any]) -> Outcome:
    async with http_session(url, key) as session:
        tools = await session.list_tools()
        result = await session.call_tool(tool, args)
    return Outcome(sorted(t.name for t in tools.tools), is_error(result), text_of(result))


async def _fastmcp(url: str, key: str, tool: str, args: dict[str, Any]) -> Outcome:
    from fastmcp import Client
    from fastmcp.client.auth import BearerAuth

    async with Client(url, auth=BearerAuth(key), timeout=10) as client:
        tools = await client.list_tools()
        result = await client.call_tool(tool, args, raise_on_error=False)
    return Outcome(sorted(t.name for t in tools), is_error(result), text_of(result))


def call(client: str, url: str, key: str, tool: str, args: dict[str, Any]) -> Outcome:
    """List the tools and call one, with ``key`` as the bearer token."""
    run = _fastmcp if client == "fastmcp" else _sdk
    return asyncio.run(run(url, key, tool, args))
