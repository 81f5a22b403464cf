"""mcp-keys for servers built on the standalone ``fastmcp`` package (3.x and 4.x).

``FastMCP("name", auth=McpKeysVerifier(required_scopes=["tools:call"]))``: a subclass of
FastMCP's own ``TokenVerifier``, so FastMCP's auth machinery (its ``require_scopes``
checks on tools, ``get_access_token()``) sees mcp-keys keys, and FastMCP answers 401/403
in the same words as every other mcp-keys front door. Its middleware starts with the
Host/Origin guard (``origin.py``), which FastMCP leaves off by default.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from ..models import ValidationResult
from ..validator import Validator, get_validator
from .mcp import token_fields
from .origin import OriginGuard, OriginPolicy
from .refusal import Challenges

try:
    from fastmcp.server.auth import AccessToken, TokenVerifier
except ImportError:  # pragma: no cover - exercised in a venv without fastmcp
    from ..extras import install_hint

    raise ImportError(f"this integration needs FastMCP: {install_hint('fastmcp')}") from None


class McpKeysVerifier(TokenVerifier):
    """A FastMCP token verifier over an mcp-keys store.

    ``required_scopes`` are checked by FastMCP for every request (403 without them);
    ``resource_server_url`` is this server's URL, so a key bound to other servers is
    refused (``WRONG_RESOURCE``) and ``AccessToken.resource`` is filled. No OAuth
    metadata is served: there is no authorization server behind API keys. A foreign
    ``Origin`` gets 403 and a foreign ``Host`` 421 before any key is looked at
    (``allowed_hosts``/``allowed_origins`` add to the loopback defaults).
    """

    def __init__(
        self,
        store: str | os.PathLike[str] | None = None,
        *,
        required_scopes: Iterable[str] = (),
        resource_server_url: str | None = None,
        validator: Validator | None = None,
        allowed_hosts: Iterable[str] | None = None,
        allowed_origins: Iterable[str] | None = None,
    ) -> None:
        super().__init__(required_scopes=list(required_scopes))
        self.origin = OriginPolicy.configure(allowed_hosts, allowed_origins)
        self.validator = validator if validator is not None else get_validator(store)
        self.resource: str | None = None
        if resource_server_url is not None:
            from ..resources import canonical

            self.resource = canonical(resource_server_url)

    def __repr__(self) -> str:
        return f"McpKeysVerifier({self.validator.location!r})"

    def check(self, token: str | None) -> ValidationResult:
        """The validation FastMCP's scope check then completes."""
        return self.validator.validate(token, (), resource=self.resource)

    async def verify_token(self, token: str) -> AccessToken | None:
        """A FastMCP ``AccessToken`` (client_id = key ID) for a valid key, else ``None``."""
        result = await self.validator.avalidate(token, (), resource=self.resource)
        if not result:
            return None
        return AccessToken(**token_fields(result, self.resource),
                           claims={"key_id": result.key_id, "name": result.name})

    def get_middleware(self) -> list[Any]:
        """FastMCP's auth middleware behind the Host/Origin guard, wrapped so its
        refusals read like mcp-keys' own."""
        from starlette.middleware import Middleware

        scopes = tuple(self.required_scopes)

        def check(token: str | None) -> ValidationResult:
            return self.validator.validate(token, scopes, resource=self.resource)

        return [Middleware(OriginGuard, policy=self.origin),
                Middleware(Challenges, check=check, scopes=scopes),
                *super().get_middleware()]
