"""mcp-keys in front of an MCP server: a TokenVerifier for the official SDK (1.x
``FastMCP`` and 2.x ``MCPServer``), and a pure ASGI middleware for any ASGI server.

The SDK path lets the SDK answer 401/403; ``http_app(server)`` (or
``verifier.protect(app)``) makes those answers the same as every other mcp-keys front
door: RFC 6750 challenges that name the scopes, no error code when no token was sent,
and a body that says how to send a key. Neither path ever echoes a token, and
``AccessToken.token`` carries a redacted form, never the plaintext. Both check ``Host``
and ``Origin`` first (``origin.py``), whether or not a key was sent.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..models import ValidationResult
from ..validator import Validator, get_validator, key_required
from .origin import OriginGuard, OriginPolicy, refuse
from .refusal import (
    ASGIApp,
    Challenges,
    Receive,
    Scope,
    Send,
    bearer_token,
    header,
    refusal,
)

if TYPE_CHECKING:
    from mcp.server.auth.provider import AccessToken
    from mcp.server.auth.settings import AuthSettings

log = logging.getLogger("mcp_keys")
SCOPE_KEY = "mcp_keys.result"


def _require_sdk() -> None:
    """Fail at start-up, not on the first request, when the MCP SDK is missing."""
    try:
        import mcp.server.auth.provider  # noqa: F401
    except ImportError:
        from ..extras import install_hint

        raise ImportError(f"this integration needs the MCP SDK: {install_hint('mcp')}"
                          ) from None


def _validator(store: str | os.PathLike[str] | None, validator: Validator | None) -> Validator:
    return validator if validator is not None else get_validator(store)


def _own_resource(url: str | None) -> str | None:
    """The server's own URL in canonical form (a bad URL is a start-up error)."""
    if url is None:
        return None
    from ..resources import canonical

    return canonical(str(url))


def redacted(result: ValidationResult) -> str:
    """What stands in for the token wherever the SDK keeps one: the key ID, no secret."""
    return f"mcpk_{result.key_id}_…" if result.key_id else "mcpk_…"


def resource_of(result: ValidationResult, own: str | None) -> str | None:
    """``AccessToken.resource`` (RFC 8707): this server's URL for a key valid here, or
    the one server a bound key names when the verifier was not told its own URL."""
    if own is not None:
        return own
    return result.resources[0] if len(result.resources) == 1 else None


def token_fields(result: ValidationResult, own: str | None) -> dict[str, Any]:
    """What every ``AccessToken`` built from a valid key holds (the SDK's, FastMCP's and
    the one the middleware hands the SDK): the key ID as client, its scopes and expiry,
    the resource, and a redacted token, never the plaintext."""
    expires = result.expires_at
    return {"token": redacted(result), "client_id": result.key_id or "mcp-api-key",
            "scopes": list(result.scopes),
            "expires_at": None if expires is None else int(expires.timestamp()),
            "resource": resource_of(result, own)}


class McpKeysTokenVerifier:
    """The SDK's ``TokenVerifier`` protocol over an mcp-keys store.

    ``required_scopes`` is a hard gate (a key lacking them is refused); put them in
    ``AuthSettings.required_scopes`` too, or use ``auth_settings()``, so the SDK answers
    403 rather than 401. ``resource_server_url`` is this server's URL: a key bound to
    other servers is refused (``WRONG_RESOURCE``) and ``AccessToken.resource`` is filled,
    so the SDK's ``validate_token_resource=True`` works with mcp-keys keys.
    """

    def __init__(
        self,
        store: str | os.PathLike[str] | None = None,
        required_scopes: Iterable[str] = (),
        *,
        resource_server_url: str | None = None,
        validator: Validator | None = None,
    ) -> None:
        _require_sdk()
        self.validator = _validator(store, validator)
        self.required_scopes = tuple(required_scopes)
        self.resource = _own_resource(resource_server_url)

    def __repr__(self) -> str:
        return f"McpKeysTokenVerifier({self.validator.location!r})"

    def check(self, token: str | None) -> ValidationResult:
        """The full validation this verifier applies (scopes and resource included)."""
        return self.validator.validate(token, self.required_scopes, resource=self.resource)

    async def verify_token(self, token: str) -> AccessToken | None:
        """An ``AccessToken`` (client_id = key ID) for a valid key, else ``None``."""
        from mcp.server.auth.provider import AccessToken

        result = await self.validator.avalidate(token, self.required_scopes,
                                                resource=self.resource)  # off the loop
        if not result:
            return None
        return AccessToken(**token_fields(result, self.resource))

    def auth_settings(self, issuer_url: str | None = None, *,
                      required_scopes: Iterable[str] | None = None) -> AuthSettings:
        """``AuthSettings`` for this verifier; the SDK answers 403 for a key without
        ``required_scopes`` (default: the verifier's own). Without ``issuer_url`` no
        authorization server is advertised (no protected-resource metadata is served);
        give a real one and the SDK serves RFC 9728 metadata naming it."""
        from mcp.server.auth.settings import AuthSettings

        scopes = list(self.required_scopes if required_scopes is None else required_scopes)
        settings: dict[str, Any] = {"required_scopes": scopes or None}
        if "validate_token_resource" in AuthSettings.model_fields:  # SDK 2.x
            settings["validate_token_resource"] = False  # the verifier checks it
        if issuer_url is None:
            # issuer_url is a required field but is only published with metadata, which
            # is not served without resource_server_url: nothing false is advertised.
            return AuthSettings(issuer_url=self.resource or "http://127.0.0.1",  # type: ignore[arg-type]
                                resource_server_url=None, **settings)
        return AuthSettings(issuer_url=issuer_url,  # type: ignore[arg-type]
                            resource_server_url=self.resource,  # type: ignore[arg-type]
                            **settings)

    def protect(self, app: ASGIApp, scopes: Iterable[str] | None = None, *,
                allowed_hosts: Iterable[str] | None = None,
                allowed_origins: Iterable[str] | None = None) -> ASGIApp:
        """``app`` (the SDK's Starlette app) answering refusals the mcp-keys way, behind
        the Host/Origin guard (``allowed_hosts``/``allowed_origins`` add to the loopback
        defaults); ``scopes`` are those the challenges name (default:
        ``required_scopes``)."""
        wanted = tuple(self.required_scopes if scopes is None else scopes)
        resource = self.resource

        def check(token: str | None) -> ValidationResult:
            return self.validator.validate(token, wanted, resource=resource)

        return OriginGuard(Challenges(app, check, wanted), allowed_hosts=allowed_hosts,
                           allowed_origins=allowed_origins)


def mcp_auth(
    resource_server_url: str,
    *,
    required_scopes: Iterable[str] = (),
    store: str | os.PathLike[str] | None = None,
    issuer_url: str | None = None,
) -> dict[str, Any]:
    """Keyword arguments for ``MCPServer(...)`` (2.x) or ``FastMCP(...)`` (SDK 1.x) that
    protect it with mcp-keys; serve it with ``http_app(server)``.

    With ``API_KEY_REQUIRED=false`` it returns ``{}`` (an open server) and warns once.
    """
    if not key_required():
        log.warning("API_KEY_REQUIRED=false: this MCP server admits calls without a key")
        return {}
    verifier = McpKeysTokenVerifier(store, resource_server_url=resource_server_url)
    return {"token_verifier": verifier,
            "auth": verifier.auth_settings(issuer_url, required_scopes=required_scopes)}


def http_app(server: Any, *, allowed_hosts: Iterable[str] | None = None,
             allowed_origins: Iterable[str] | None = None, **kwargs: Any) -> ASGIApp:
    """``server.streamable_http_app(**kwargs)`` behind the Host/Origin guard, with
    mcp-keys' refusals when the server was built with an ``McpKeysTokenVerifier`` (as
    ``mcp_auth`` does). ``allowed_hosts``/``allowed_origins`` add to the loopback
    defaults (or set ``MCP_KEYS_ALLOWED_HOSTS``/``MCP_KEYS_ALLOWED_ORIGINS``)."""
    _hand_over_sdk_guard(server, kwargs)
    app: ASGIApp = server.streamable_http_app(**kwargs)
    verifier = getattr(server, "_token_verifier", None)  # the SDK keeps it here (1.x, 2.x)
    auth = getattr(getattr(server, "settings", None), "auth", None)
    if isinstance(verifier, McpKeysTokenVerifier):
        extra = getattr(auth, "required_scopes", None) or ()
        scopes = (*verifier.required_scopes,
                  *(s for s in extra if s not in verifier.required_scopes))
        return verifier.protect(app, scopes, allowed_hosts=allowed_hosts,
                                allowed_origins=allowed_origins)
    if auth is not None:
        raise TypeError("http_app(server) needs a server built with McpKeysTokenVerifier "
                        "(mcp_auth(...) does that)")
    return OriginGuard(app, allowed_hosts=allowed_hosts, allowed_origins=allowed_origins)


def _hand_over_sdk_guard(server: Any, kwargs: dict[str, Any]) -> None:
    """Turn off the SDK's own Host/Origin check, which mcp-keys' guard in front replaces
    (else a host the operator allowed would still meet the SDK's fixed loopback list).
    ``transport_security`` the caller chose (argument or setting) is kept."""
    from mcp.server.transport_security import TransportSecuritySettings

    off = TransportSecuritySettings(enable_dns_rebinding_protection=False)
    if "transport_security" in inspect.signature(server.streamable_http_app).parameters:
        kwargs.setdefault("transport_security", off)  # SDK 2.x
        return
    settings = getattr(server, "settings", None)  # SDK 1.x: set on the server
    loopback = ["127.0.0.1:*", "localhost:*", "[::1]:*"]
    sdk_default = TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=loopback,
        allowed_origins=[f"http://{host}" for host in loopback])
    if getattr(settings, "transport_security", None) == sdk_default:
        settings.transport_security = off  # type: ignore[union-attr]


def extract_token(scope: Scope) -> str | None:
    """The key from ``Authorization: Bearer`` or ``X-API-Key``, or ``None``."""
    token = bearer_token(scope)
    if token is not None:
        return token
    api_key = header(scope, b"x-api-key")
    if api_key is not None and api_key.strip():
        return api_key.strip()
    return None


class ApiKeyMiddleware:
    """Pure ASGI middleware: 401 without a valid key, 403 without the scopes, 503 when the
    store cannot be read. The ValidationResult is put in ``scope["mcp_keys.result"]``.
    ``resource_server_url`` (this server's URL) refuses keys bound to other servers.
    Before any of that, a foreign ``Origin`` gets 403 and a foreign ``Host`` 421
    (``allowed_hosts``/``allowed_origins`` add to the loopback defaults)."""

    def __init__(
        self,
        app: ASGIApp,
        store: str | os.PathLike[str] | None = None,
        scopes: Iterable[str] = (),
        *,
        resource_server_url: str | None = None,
        validator: Validator | None = None,
        allowed_hosts: Iterable[str] | None = None,
        allowed_origins: Iterable[str] | None = None,
    ) -> None:
        self.app = app
        self.origin = OriginPolicy.configure(allowed_hosts, allowed_origins)
        self.validator = _validator(store, validator)
        self.scopes = tuple(scopes)
        self.resource = _own_resource(resource_server_url)
        self.required = key_required()
        if not self.required:
            log.warning("API_KEY_REQUIRED=false: requests without a key are admitted")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if await refuse(self.origin, scope, send):
            return
        token = extract_token(scope)
        if token is None and not self.required:
            await self.app({**scope, SCOPE_KEY: None}, receive, send)
            return
        result = await self.validator.avalidate(token, self.scopes, resource=self.resource)
        if result:
            await self._admit(result, {**scope, SCOPE_KEY: result}, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await refusal(result, token_sent=token is not None, scopes=self.scopes).send(send)

    async def _admit(self, result: ValidationResult, scope: Scope, receive: Receive,
                     send: Send) -> None:
        """Pass the request on as the SDK's own auth layer would: ``scope["user"]`` and
        the auth context hold the caller's access token, so ``require_scopes`` and the
        SDK's ``get_access_token()`` work behind this middleware too."""
        sdk = _sdk_auth()
        if sdk is None:  # no SDK: the result in scope is all there is
            await self.app(scope, receive, send)
            return
        context, user_type, token_type, credentials = sdk
        user = user_type(token_type(**token_fields(result, self.resource)))
        scope["user"], scope["auth"] = user, credentials(list(result.scopes))
        reset = context.set(user)
        try:
            await self.app(scope, receive, send)
        finally:
            context.reset(reset)


@functools.cache
def _sdk_auth() -> tuple[Any, Any, Any, Any] | None:
    """The SDK's auth context variable, user and token classes and Starlette's
    credentials, imported once; ``None`` without the SDK."""
    try:
        from mcp.server.auth.middleware.auth_context import auth_context_var
        from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
        from mcp.server.auth.provider import AccessToken
        from starlette.authentication import AuthCredentials
    except ImportError:
        return None
    return auth_context_var, AuthenticatedUser, AccessToken, AuthCredentials
