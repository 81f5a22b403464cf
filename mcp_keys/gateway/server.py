"""The gateway as an MCP server (official SDK): tools ``list_services``, ``execute``,
``exec``, ``explain`` and ``whoami`` over ``Gateway``, on stdio or streamable HTTP.

The caller is a verified mcp-keys key. Over HTTP, the bearer token of each request (the
SDK's verifier, then the tool reads the access token). Over stdio, ``MCP_API_KEY`` in the
gateway's environment, checked at start and again on every tool call, so revoking it
stops a running session within the validator's refresh interval.

Every refusal, arguments that do not fit a tool's schema included, is an error result
holding one JSON object: ``error`` (the sentence), ``reason``, ``rule`` and ``next_step``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

from ..errors import McpKeysError
from ..models import ApiKey, Reason, ValidationResult, to_iso
from ..validator import Validator
from .proxy import Caller, Denied, Gateway, GatewayRequest

KEY_VAR = "MCP_API_KEY"
TOOLS = ("list_services", "execute", "exec", "explain", "whoami")
INSTRUCTIONS = ("Calls upstream APIs for you with credentials you never see. whoami says "
                "which key you hold and what it may call; list_services shows the services; "
                "execute makes one request; exec runs a configured command; explain says "
                "which rule would decide a request and why. A refusal is JSON with reason, "
                "rule and next_step.")


class CallerSource:
    """Where each tool call's caller comes from: a fixed key (stdio) or the request's
    access token (HTTP)."""

    def __init__(self, validator: Validator, key: str | None = None, *,
                 records: Callable[[str], ApiKey] | None = None) -> None:
        self.validator = validator
        self.key = key
        self.records = records  # HTTP: whoami looks up the name the token does not hold

    def check_start(self) -> ValidationResult:
        return self.validator.validate(self.key)

    def identity(self) -> ValidationResult:
        """The caller's key as the validator sees it now; ``Denied`` when it is not valid."""
        if self.key is not None:
            result = self.validator.validate(self.key)
            if not result or result.key_id is None:
                raise Denied("unauthorized", f"the gateway's key ({KEY_VAR}) is no longer "
                             f"valid ({result.reason.value}); ask for a new one",
                             rule=f"key {result.reason.value.lower()}",
                             next_step=f"ask the operator for a new key and restart the "
                                       f"gateway with it in {KEY_VAR}")
            return result
        caller = self.current()
        name, expires = None, None
        if self.records is not None:
            try:
                record = self.records(caller.key_id)
            except McpKeysError:
                raise Denied("unauthorized", "this key's record could not be read",
                             rule="mcp-keys key check",
                             next_step="ask the operator for a valid key") from None
            name, expires = record.name, record.expires_at
        return ValidationResult(Reason.VALID, key_id=caller.key_id, name=name,
                                scopes=tuple(sorted(caller.scopes)), expires_at=expires)

    def current(self) -> Caller:
        if self.key is not None:
            result = self.identity()
            return Caller(str(result.key_id), frozenset(result.scopes))
        from mcp.server.auth.middleware.auth_context import get_access_token

        token = get_access_token()
        if token is None:
            raise Denied("unauthorized", "no mcp-keys key on this call: send "
                         "Authorization: Bearer mcpk_…", rule="mcp-keys key check",
                         next_step="ask the operator for a key with scope gateway:SERVICE")
        return Caller(token.client_id, frozenset(token.scopes))


def _server_class() -> Any:
    try:
        from mcp.server.mcpserver import MCPServer
    except ImportError:  # SDK 1.x
        from importlib import import_module

        server: Any = import_module("mcp.server.fastmcp").FastMCP
    else:
        server = MCPServer
    module = sys.modules[server.__module__]
    if hasattr(module, "configure_logging"):
        setattr(module, "configure_logging", _plain_logging)  # noqa: B010
    return server


def _plain_logging(level: str = "WARNING") -> None:
    """What the gateway's SDK logs, as plain lines on stderr: its own set-up would load
    rich (tens of milliseconds of start-up) to draw boxes around lines that are for an
    operator to read and act on."""
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_not_a_client_leaving)
    logging.basicConfig(level=level, format="%(name)s: %(message)s", handlers=[handler])


def _not_a_client_leaving(record: object) -> bool:
    """Drop the SDK's traceback for a stream whose client went away (SDK 1.x logs "Error
    in standalone SSE writer" with anyio's ClosedResourceError when a session closes):
    nothing for an operator to act on."""
    info = getattr(record, "exc_info", None)
    kind = info[0] if isinstance(info, tuple) and info else None
    return kind is None or kind.__name__ not in ("ClosedResourceError", "BrokenResourceError",
                                                 "EndOfStream")


def as_text(value: object) -> str | None:
    """A free-text argument (``reason``) as text: the SDK hands a tool the parsed value of
    a JSON-looking string (``"true"``, ``"{...}"``), which is turned back into its text."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def refusal(exc: Denied) -> Any:
    """The error result of a refused call: one JSON text block (both SDKs' clients read
    it as is; ``structuredContent`` would be checked against the tool's output schema)."""
    from mcp.types import CallToolResult

    text = json.dumps(exc.to_dict(), ensure_ascii=False)
    return CallToolResult.model_validate({"content": [{"type": "text", "text": text}],
                                          "isError": True})


def _schema_problem(error: Exception) -> str:
    """Which fields failed and how, from a pydantic ``ValidationError``: its locations and
    messages only, never the rejected values (the caller's data)."""
    errors: list[dict[str, Any]] = getattr(error, "errors", lambda: [])()
    parts = [f"{'.'.join(str(p) for p in e.get('loc', ())) or 'arguments'}: "
             f"{e.get('msg', 'invalid')}" for e in errors[:5]]
    return "; ".join(parts) or "invalid arguments"


def _refuse_in_form(server: Any, gateway: Gateway, callers: CallerSource) -> None:
    """Every refusal leaves the server as ``refusal()``: a tool's ``Denied``, and the
    arguments the SDK refuses before a tool runs (a missing field, a wrong type), which
    are audited like any other refusal. Handled here, under the SDK's own error path, so
    a refused call is not logged on stderr (its record is the audit line), and an error
    result skips the SDK 1.x check of structured output against the tool's schema."""
    from pydantic import ValidationError

    manager = server._tool_manager  # both SDKs route every call through it
    original = manager.call_tool

    async def call_tool(name: str, arguments: dict[str, Any], *args: Any, **kwargs: Any
                        ) -> Any:
        try:
            return await original(name, arguments, *args, **kwargs)
        except Exception as exc:
            cause = exc.__cause__
            if isinstance(cause, Denied):
                return refusal(cause)
            tool = manager.get_tool(name) if name in TOOLS else None
            if tool is None or not isinstance(cause, ValidationError) or \
                    cause.title != tool.fn_metadata.arg_model.__name__:
                raise
            problem = _schema_problem(cause)
        try:
            caller = callers.current()
        except Denied as denied:
            return refusal(denied)
        return refusal(gateway.refuse_arguments(caller, name, dict(arguments or {}), problem))

    manager.call_tool = call_tool


def build(gateway: Gateway, callers: CallerSource, **server_kwargs: Any) -> Any:
    """The MCP server with the gateway's tools."""
    server_kwargs.setdefault("log_level", "WARNING")  # a refusal's record is the audit line
    server = _server_class()("mcp-keys-gateway", instructions=INSTRUCTIONS, **server_kwargs)
    tool: Callable[[], Callable[[Callable[..., Any]], Callable[..., Any]]] = server.tool

    @tool()
    def list_services() -> list[dict[str, Any]]:
        """The services this key may call: name, description, host and allowed rules."""
        return gateway.visible(callers.current())

    @tool()
    async def execute(service: str, method: str, path: str,
                      query: dict[str, str] | None = None,
                      headers: dict[str, str] | None = None,
                      body: Any = None, reason: Any = None) -> dict[str, Any]:
        """Make one request to a service (the gateway adds the credential). body is text
        or any JSON value; an object or array is sent as JSON (Content-Type
        application/json unless you set one). Returns the status, headers, body (text or
        base64) and whether the body was truncated."""
        request = GatewayRequest(service, method, path, query, headers, body, as_text(reason))
        return (await gateway.execute(callers.current(), request)).to_dict()

    @tool()
    async def exec(service: str, args: list[str], reason: Any = None) -> dict[str, Any]:
        """Run an exec service's command with these arguments (the gateway puts the
        credential in its environment). Returns the exit code, stdout and stderr."""
        return (await gateway.run_exec(callers.current(), service, args,
                                       as_text(reason))).to_dict()

    @tool()
    def explain(service: str, method: str, path: str) -> dict[str, Any]:
        """Which rule would decide this request, and why (nothing is sent); when it would
        be refused, the rule and the next step that would allow it."""
        return gateway.explain(callers.current(), service, method, path)

    @tool()
    def whoami() -> dict[str, Any]:
        """The key this session uses: its ID, name, scopes, expiry, and the services it
        may call (with their allowed rules)."""
        result = callers.identity()
        caller = Caller(str(result.key_id), frozenset(result.scopes))
        return {"key_id": result.key_id, "name": result.name,
                "scopes": sorted(result.scopes), "expires_at": to_iso(result.expires_at),
                "services": gateway.visible(caller)}

    _refuse_in_form(server, gateway, callers)
    return server


def key_from_environment() -> str | None:
    value = os.environ.get(KEY_VAR, "").strip()
    return value or None
