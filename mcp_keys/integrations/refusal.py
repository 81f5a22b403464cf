"""How every mcp-keys front door refuses a request: status, ``WWW-Authenticate`` and a
JSON body, the same for the middleware, the SDK and FastMCP wrappers and FastAPI.

RFC 6750 §3: the challenge names the scopes to request; §3.1: a request that carried no
token gets a challenge with no error code. No ``resource_metadata`` parameter is sent:
with API keys there is no authorization server to discover (RFC 9728 §5.1 makes the
parameter optional, and MCP requires metadata to name a real authorization server).
The body tells a person, in words, how to send a key. Nothing here ever echoes a token.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any

from ..models import Reason, ValidationResult

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

HOW_TO_SEND = "send the key as 'Authorization: Bearer mcpk_…'"
_WORDS = {
    Reason.MISSING: "an API key is required",
    Reason.MALFORMED: "the API key is not a valid mcp-keys key",
    Reason.UNKNOWN: "the API key is not known here",
    Reason.REVOKED: "the API key was revoked",
    Reason.EXPIRED: "the API key has expired",
    Reason.WRONG_RESOURCE: "the API key is bound to other MCP servers",
}


@dataclass(frozen=True, slots=True)
class Refusal:
    """One refusal, ready to send or to raise (FastAPI); ``challenge`` is empty for one
    that is not about the key (the Host/Origin guard's)."""

    status: int
    challenge: str
    body: dict[str, str]

    @property
    def headers(self) -> dict[str, str]:
        headers = {"WWW-Authenticate": self.challenge} if self.challenge else {}
        if self.status == 503:
            headers["Retry-After"] = "5"
        return headers

    def encoded(self) -> bytes:
        return json.dumps(self.body).encode()

    async def send(self, send: Send) -> None:
        body = self.encoded()
        headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode()),
                   *((k.lower().encode(), v.encode()) for k, v in self.headers.items())]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def refusal(result: ValidationResult, *, token_sent: bool,
            scopes: Iterable[str] = ()) -> Refusal:
    """The refusal for a failed validation. ``scopes`` are the ones this endpoint needs."""
    wanted = " ".join(scopes)
    scope_param = [f"scope={_quoted(wanted)}"] if wanted else []
    if result.reason is Reason.STORE_ERROR:
        return Refusal(503, "Bearer", {
            "error": "temporarily_unavailable",
            "error_description": "API keys cannot be checked right now; try again shortly"})
    if result.reason is Reason.INSUFFICIENT_SCOPE:
        words = f"the API key lacks a required scope ({wanted or 'see the server'})"
        params = ['error="insufficient_scope"', f"error_description={_quoted(words)}",
                  *scope_param]
        return Refusal(403, "Bearer " + ", ".join(params),
                       {"error": "insufficient_scope", "error_description":
                        f"{words}; ask for a key with those scopes"})
    words = _WORDS.get(result.reason, "the API key is not valid")
    if not token_sent:
        challenge = "Bearer " + ", ".join(scope_param) if scope_param else "Bearer"
        return Refusal(401, challenge, {"error_description": f"{words}: {HOW_TO_SEND}"})
    params = ['error="invalid_token"', f"error_description={_quoted(words)}", *scope_param]
    return Refusal(401, "Bearer " + ", ".join(params),
                   {"error": "invalid_token", "error_description": f"{words}; {HOW_TO_SEND}"})


def header(scope: Scope, name: bytes) -> str | None:
    """One request header (latin-1, as HTTP sends it), or ``None``."""
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def bearer_token(scope: Scope) -> str | None:
    """The token of ``Authorization: Bearer <token>``, or ``None``."""
    authorization = header(scope, b"authorization")
    if authorization is None:
        return None
    kind, _, value = authorization.strip().partition(" ")
    if kind.lower() == "bearer" and value.strip():
        return value.strip()
    return None


class Challenges:
    """Rewrites the 401/403 a framework's own auth layer sends (the official SDK's, or
    FastMCP's) into the refusal above, so that every stack answers alike. It does nothing
    to other responses and costs nothing on admitted requests: the key is looked at again
    only when the framework has already refused it."""

    def __init__(self, app: ASGIApp, check: Callable[[str | None], ValidationResult],
                 scopes: Iterable[str] = ()) -> None:
        self.app = app
        self.check = check
        self.scopes = tuple(scopes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        replaced = False

        async def rewrite(message: Message) -> None:
            nonlocal replaced
            if message["type"] == "http.response.start" and message["status"] in (401, 403):
                names = {bytes(k).lower() for k, _ in message.get("headers", ())}
                if b"www-authenticate" in names:
                    replaced = True
                    token = bearer_token(scope)
                    import anyio.to_thread  # the check may wait: never on the loop

                    result = await anyio.to_thread.run_sync(self.check, token)
                    if result and message["status"] == 403:
                        result = ValidationResult(Reason.INSUFFICIENT_SCOPE)
                    # A key the framework refused for its own reason (its resource or
                    # expiry check) stays VALID here and is answered "not valid".
                    await refusal(result, token_sent=token is not None,
                                  scopes=self.scopes).send(send)
                    return
            if replaced and message["type"] == "http.response.body":
                return  # the framework's own body: ours was sent instead
            await send(message)

        await self.app(scope, receive, rewrite)
