"""The real MCP clients the stack tests drive the examples with: the official SDK's
(1.x or 2.x, whichever is installed) and FastMCP's own, over streamable HTTP."""

from __future__ import annotations

import asyncio
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


def _text(result: Any) -> str:
    return "".join(getattr(part, "text", "") for part in result.content)


def _is_error(result: Any) -> bool:
    value = getattr(result, "is_error", None)  # SDK 2.x and FastMCP 4.x
    return bool(getattr(result, "isError", False) if value is None else value)


async def _sdk(url: str, key: str, tool: str, args: dict[str, Any]) -> Outcome:
    from mcp import ClientSession

    headers = {"Authorization": f"Bearer {key}"}
    if sdk_major() >= 2:
        import httpx2
        from mcp.client.streamable_http import streamable_http_client

        async with httpx2.AsyncClient(headers=headers, timeout=10) as http, \
                streamable_http_client(url, http_client=http) as (read, write), \
                ClientSession(read, write) as session:
            await session.initialize()
            tools = await session.list_tools()
            result = await session.call_tool(tool, args)
    else:
        from importlib import import_module

        # SDK 1.x's client (its name in 1.x; 2.x removed it).
        client = import_module("mcp.client.streamable_http").streamablehttp_client
        async with client(url, headers=headers) as (read, write, _), \
                ClientSession(read, write) as session:
            await session.initialize()
            tools = await session.list_tools()
            result = await session.call_tool(tool, args)
    return Outcome(sorted(t.name for t in tools.tools), _is_error(result), _text(result))


async def _fastmcp(url: str, key: str, tool: str, args: dict[str, Any]) -> Outcome:
    from fastmcp import Client
    from fastmcp.client.auth import BearerAuth

    async with Client(url, auth=BearerAuth(key), timeout=10) as client:
        tools = await client.list_tools()
        result = await client.call_tool(tool, args, raise_on_error=False)
    return Outcome(sorted(t.name for t in tools), _is_error(result), _text(result))


def call(client: str, url: str, key: str, tool: str, args: dict[str, Any]) -> Outcome:
    """List the tools and call one, with ``key`` as the bearer token."""
    run = _fastmcp if client == "fastmcp" else _sdk
    return asyncio.run(run(url, key, tool, args))
