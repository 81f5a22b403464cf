"""mcp-keys as a FastAPI dependency: ``Depends(require_key(scopes=[...]))`` returns the
caller's ``ValidationResult`` or refuses with the middleware's status and headers.

FastAPI renders an ``HTTPException`` as ``{"detail": ...}``; ``install(app)`` adds the
handler that sends the middleware's exact body instead (``error``, ``error_description``).
Like the middleware, the dependency checks ``Host`` and ``Origin`` before the key; and
``install(app)`` puts the same check in front of the whole app, so routes without the
dependency (``/docs``, ``/openapi.json``, a health check, a 404) are not open to DNS
rebinding either.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from ..models import ValidationResult
from ..validator import Validator, get_validator, key_required
from .mcp import extract_token
from .origin import OriginGuard, OriginPolicy
from .refusal import Refusal, refusal

try:
    from fastapi import HTTPException, Request
    from fastapi.responses import JSONResponse
except ImportError:  # pragma: no cover - exercised in a venv without FastAPI
    from ..extras import install_hint

    raise ImportError(f"this integration needs FastAPI: {install_hint('fastapi')}") from None


class KeyRefused(HTTPException):
    """A refused request (a key, or the Host/Origin guard): the middleware's status and
    headers, and the words of its body as ``detail``."""

    def __init__(self, refused: Refusal) -> None:
        super().__init__(refused.status, refused.body["error_description"], refused.headers)
        self.refusal = refused


async def _send_refusal(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, KeyRefused)
    refused = exc.refusal
    return JSONResponse(refused.body, refused.status, headers=refused.headers)


def install(app: Any, *, allowed_hosts: Iterable[str] | None = None,
            allowed_origins: Iterable[str] | None = None) -> None:
    """Make refusals carry the middleware's exact JSON body on this app, and refuse a
    foreign ``Origin`` (403) or ``Host`` (421) on every route, with or without
    ``require_key`` (``allowed_hosts``/``allowed_origins`` add to the loopback defaults,
    as for ``require_key``)."""
    app.add_exception_handler(KeyRefused, _send_refusal)
    app.add_middleware(OriginGuard, policy=OriginPolicy.configure(allowed_hosts,
                                                                   allowed_origins))


def require_key(
    scopes: Iterable[str] = (),
    *,
    store: str | os.PathLike[str] | None = None,
    resource_server_url: str | None = None,
    validator: Validator | None = None,
    allowed_hosts: Iterable[str] | None = None,
    allowed_origins: Iterable[str] | None = None,
) -> Callable[[Request], ValidationResult | None]:
    """A dependency admitting a valid key (``Authorization: Bearer`` or ``X-API-Key``)
    that holds ``scopes``; ``None`` for a keyless request only when
    ``API_KEY_REQUIRED=false``. A foreign ``Origin`` (403) or ``Host`` (421) is refused
    first (``allowed_hosts``/``allowed_origins`` add to the loopback defaults)."""
    wanted = tuple(scopes)
    origin = OriginPolicy.configure(allowed_hosts, allowed_origins)
    checker = validator if validator is not None else get_validator(store)
    resource = None
    if resource_server_url is not None:
        from ..resources import canonical

        resource = canonical(resource_server_url)
    required = key_required()

    def mcp_keys_caller(request: Request) -> ValidationResult | None:
        guarded = origin.refusal(request.scope)
        if guarded is not None:
            raise KeyRefused(guarded)
        token = extract_token(request.scope)
        if token is None and not required:
            return None
        result = checker.validate(token, wanted, resource=resource)
        if not result:
            raise KeyRefused(refusal(result, token_sent=token is not None, scopes=wanted))
        return result

    return mcp_keys_caller
