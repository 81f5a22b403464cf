"""The gateway as an MCP server (official SDK): tools ``list_services``, ``execute`` and
``explain`` over ``Gateway``, on stdio or streamable HTTP.

The caller is a verified mcp-keys key. Over HTTP, the bearer token of each request (the
SDK's verifier, then the tool reads the access token). Over stdio, ``MCP_API_KEY`` in the
gateway's environment, checked at start and again on every tool call, so revoking it
stops a running session within the validator's refresh interval.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ..models import ValidationResult
from ..validator import Validator
from .proxy import Caller, Denied, Gateway, GatewayRequest

KEY_VAR = "MCP_API_KEY"
INSTRUCTIONS = ("Calls upstream APIs for you with credentials you never see. list_services "
                "shows what this key may call; execute makes one request; exec runs a "
                "configured command; explain says which rule would decide a request and why.")


def _tool_error() -> type[Exception]:
    from ..integrations.scopes import _tool_error as framework_error

    found = framework_error("mcp")
    return found if found is not None else RuntimeError


class CallerSource:
    """Where each tool call's caller comes from: a fixed key (stdio) or the request's
    access token (HTTP)."""

    def __init__(self, validator: Validator, key: str | None = None) -> None:
        self.validator = validator
        self.key = key

    def check_start(self) -> ValidationResult:
        return self.validator.validate(self.key)

    def current(self) -> Caller:
        error = _tool_error()
        if self.key is not None:
            result = self.validator.validate(self.key)
            if not result or result.key_id is None:
                raise error(f"the gateway's key ({KEY_VAR}) is no longer valid "
                            f"({result.reason.value}); ask for a new one")
            return Caller(result.key_id, frozenset(result.scopes))
        from mcp.server.auth.middleware.auth_context import get_access_token

        token = get_access_token()
        if token is None:
            raise error("no mcp-keys key on this call: send Authorization: Bearer mcpk_…")
        return Caller(token.client_id, frozenset(token.scopes))


def _server_class() -> Any:
    try:
        from mcp.server.mcpserver import MCPServer
    except ImportError:  # SDK 1.x
        from importlib import import_module

        return import_module("mcp.server.fastmcp").FastMCP
    return MCPServer


def build(gateway: Gateway, callers: CallerSource, **server_kwargs: Any) -> Any:
    """The MCP server with the three tools."""
    server = _server_class()("mcp-keys-gateway", instructions=INSTRUCTIONS, **server_kwargs)
    error = _tool_error()
    tool: Callable[[], Callable[[Callable[..., Any]], Callable[..., Any]]] = server.tool

    def refuse(exc: Denied) -> Exception:
        return error(str(exc))

    @tool()
    def list_services() -> list[dict[str, Any]]:
        """The services this key may call: name, description, host and allowed rules."""
        try:
            return gateway.visible(callers.current())
        except Denied as exc:
            raise refuse(exc) from None

    @tool()
    async def execute(service: str, method: str, path: str,
                      query: dict[str, str] | None = None,
                      headers: dict[str, str] | None = None,
                      body: str | None = None, reason: str | None = None) -> dict[str, Any]:
        """Make one request to a service (the gateway adds the credential). Returns the
        status, headers, body (text or base64) and whether the body was truncated."""
        request = GatewayRequest(service, method, path, query, headers, body, reason)
        try:
            response = await gateway.execute(callers.current(), request)
        except Denied as exc:
            raise refuse(exc) from None
        return response.to_dict()

    @tool()
    async def exec(service: str, args: list[str], reason: str | None = None
                   ) -> dict[str, Any]:
        """Run an exec service's command with these arguments (the gateway puts the
        credential in its environment). Returns the exit code, stdout and stderr."""
        try:
            result = await gateway.run_exec(callers.current(), service, args, reason)
        except Denied as exc:
            raise refuse(exc) from None
        return result.to_dict()

    @tool()
    def explain(service: str, method: str, path: str) -> dict[str, Any]:
        """Which rule would decide this request, and why (nothing is sent)."""
        try:
            return gateway.explain(callers.current(), service, method, path)
        except Denied as exc:
            raise refuse(exc) from None

    return server


def key_from_environment() -> str | None:
    value = os.environ.get(KEY_VAR, "").strip()
    return value or None
