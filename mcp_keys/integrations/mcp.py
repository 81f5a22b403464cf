"""mcp-keys in front of an MCP server: a TokenVerifier for the official SDK, and a pure
ASGI middleware for any Starlette/ASGI server.

The SDK path (``McpKeysTokenVerifier``) lets the SDK answer 401 for a rejected key and
403 for a key lacking ``AuthSettings.required_scopes``. The middleware path does the same
itself, reading ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. Neither ever
echoes a token, and ``AccessToken.token`` carries a redacted form, never the plaintext.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import TYPE_CHECKING, Any

from ..models import Reason, ValidationResult
from ..validator import Validator, get_validator, key_required

if TYPE_CHECKING:
    from mcp.server.auth.provider import AccessToken

log = logging.getLogger("mcp_keys")
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
SCOPE_KEY = "mcp_keys.result"


def _require_sdk() -> None:
    """Fail at start-up, not on the first request, when the MCP SDK is missing."""
    try:
        import mcp.server.auth.provider  # noqa: F401
    except ImportError:
        raise ImportError("this integration needs the MCP SDK: pip install 'mcp-keys[mcp]'"
                          ) from None


def _validator(store: str | os.PathLike[str] | None, validator: Validator | None) -> Validator:
    return validator if validator is not None else get_validator(store)


def redacted(result: ValidationResult) -> str:
    """What stands in for the token wherever the SDK keeps one: the key ID, no secret."""
    return f"mcpk_{result.key_id}_…" if result.key_id else "mcpk_…"


class McpKeysTokenVerifier:
    """The SDK's ``TokenVerifier`` protocol over an mcp-keys store.

    ``required_scopes`` here is a hard gate (a key lacking them is rejected, 401); put the
    scopes in ``AuthSettings.required_scopes`` as well to have the SDK answer 403 instead.
    """

    def __init__(
        self,
        store: str | os.PathLike[str] | None = None,
        required_scopes: Iterable[str] = (),
        *,
        validator: Validator | None = None,
    ) -> None:
        _require_sdk()
        self.validator = _validator(store, validator)
        self.required_scopes = tuple(required_scopes)

    def __repr__(self) -> str:
        return f"McpKeysTokenVerifier({self.validator.location!r})"

    async def verify_token(self, token: str) -> AccessToken | None:
        """An ``AccessToken`` (client_id = key ID) for a valid key, else ``None``."""
        from mcp.server.auth.provider import AccessToken

        result = self.validator.validate(token, self.required_scopes)
        if not result:
            return None
        expires = result.expires_at
        return AccessToken(
            token=redacted(result),
            client_id=result.key_id or "mcp-api-key",
            scopes=list(result.scopes),
            expires_at=None if expires is None else int(expires.timestamp()),
        )


def mcp_auth(
    resource_server_url: str,
    *,
    required_scopes: Iterable[str] = (),
    store: str | os.PathLike[str] | None = None,
    issuer_url: str | None = None,
) -> dict[str, Any]:
    """Keyword arguments for ``MCPServer(...)`` that protect it with mcp-keys.

    With ``API_KEY_REQUIRED=false`` it returns ``{}`` (an open server) and warns once.
    """
    if not key_required():
        log.warning("API_KEY_REQUIRED=false: this MCP server admits calls without a key")
        return {}
    _require_sdk()
    from mcp.server.auth.settings import AuthSettings

    scopes = list(required_scopes)
    return {
        "token_verifier": McpKeysTokenVerifier(store),
        "auth": AuthSettings(
            issuer_url=issuer_url or resource_server_url,  # type: ignore[arg-type]
            resource_server_url=resource_server_url,  # type: ignore[arg-type]
            required_scopes=scopes or None,
            validate_token_resource=False,
        ),
    }


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def extract_token(scope: Scope) -> str | None:
    """The key from ``Authorization: Bearer`` or ``X-API-Key``, or ``None``."""
    authorization = _header(scope, b"authorization")
    if authorization is not None:
        kind, _, value = authorization.strip().partition(" ")
        if kind.lower() == "bearer" and value.strip():
            return value.strip()
    api_key = _header(scope, b"x-api-key")
    if api_key is not None and api_key.strip():
        return api_key.strip()
    return None


class ApiKeyMiddleware:
    """Pure ASGI middleware: 401 without a valid key, 403 without the scopes, 503 when the
    store cannot be read. The ValidationResult is put in ``scope["mcp_keys.result"]``."""

    def __init__(
        self,
        app: ASGIApp,
        store: str | os.PathLike[str] | None = None,
        scopes: Iterable[str] = (),
        *,
        validator: Validator | None = None,
    ) -> None:
        self.app = app
        self.validator = _validator(store, validator)
        self.scopes = tuple(scopes)
        self.required = key_required()
        if not self.required:
            log.warning("API_KEY_REQUIRED=false: requests without a key are admitted")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        token = extract_token(scope)
        if token is None and not self.required:
            await self.app({**scope, SCOPE_KEY: None}, receive, send)
            return
        result = self.validator.validate(token, self.scopes)
        if result:
            await self.app({**scope, SCOPE_KEY: result}, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await _reject(send, result, token_sent=token is not None, scopes=self.scopes)


async def _reject(send: Send, result: ValidationResult, *, token_sent: bool,
                  scopes: tuple[str, ...]) -> None:
    if result.reason is Reason.INSUFFICIENT_SCOPE:
        status, error = 403, "insufficient_scope"
        description = "the API key lacks a required scope"
        challenge = f'Bearer error="{error}", scope="{" ".join(scopes)}"'
    elif result.reason is Reason.STORE_ERROR:
        status, error = 503, "temporarily_unavailable"
        description = "API keys cannot be checked right now"
        challenge = "Bearer"
    else:
        status, error = 401, "invalid_token"
        description = {
            Reason.MISSING: "an API key is required",
            Reason.REVOKED: "the API key was revoked",
            Reason.EXPIRED: "the API key has expired",
        }.get(result.reason, "the API key is not valid")
        challenge = f'Bearer error="{error}"' if token_sent else "Bearer"
        if not token_sent:
            error = "invalid_request"
    body = json.dumps({"error": error, "error_description": description}).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", challenge.encode()),
        ],
    })
    await send({"type": "http.response.body", "body": body})
