"""Resource indicators: the MCP server URLs a key is bound to (RFC 8707, in API-key form).

A bound key is valid only at the servers it names; an unbound key works anywhere. URLs
are compared in one canonical form (lower-case scheme and host, no default port, no
trailing slash), the form the MCP authorization spec gives for a canonical server URI.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from .errors import UsageError

MAX_RESOURCES = 16
MAX_RESOURCE_LENGTH = 2048
_DEFAULT_PORTS = {"http": 80, "https": 443}


def canonical(url: str) -> str:
    """``url`` in canonical form, or a ``UsageError`` saying what is wrong with it.

    RFC 8707 §2: an absolute URI without a fragment; a query is refused too (it SHOULD NOT
    be there, and two spellings of one query would compare unequal).
    """
    if not isinstance(url, str) or not url.strip():
        raise UsageError("a resource must be the MCP server's URL, e.g. "
                         "https://mcp.example.com/mcp")
    shown = url if len(url) <= 80 else url[:77] + "..."
    if len(url) > MAX_RESOURCE_LENGTH or not url.isprintable() or any(c.isspace() for c in url):
        raise UsageError(f"resource {shown!r} is not a URL (spaces, control characters or "
                         f"over {MAX_RESOURCE_LENGTH} characters)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"resource {shown!r} is not a URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise UsageError(f"resource {shown!r} must be an absolute http:// or https:// URL, "
                         "e.g. https://mcp.example.com/mcp")
    if parts.username is not None or parts.password is not None:
        raise UsageError(f"resource {shown!r} must not carry a user name or password")
    if parts.fragment or "#" in url:
        raise UsageError(f"resource {shown!r} must not have a fragment (RFC 8707)")
    if parts.query or "?" in url:
        raise UsageError(f"resource {shown!r} must not have a query; give the server's URL")
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        host = f"{host}:{port}"
    return f"{scheme}://{host}{parts.path.rstrip('/')}"


def check_resources(resources: Iterable[str]) -> tuple[str, ...]:
    """Canonical, de-duplicated resources in the order given."""
    if isinstance(resources, str):
        raise UsageError("resources must be a list of URLs, not one string")
    result: list[str] = []
    for url in resources:
        value = canonical(url)
        if value not in result:
            result.append(value)
    if len(result) > MAX_RESOURCES:
        raise UsageError(f"a key can be bound to at most {MAX_RESOURCES} resources")
    return tuple(result)


def same_resource(url: str) -> str | None:
    """``canonical(url)``, or ``None`` for a URL that cannot be a resource (never raises:
    the validator calls it with what a server was configured with)."""
    try:
        return canonical(url)
    except UsageError:
        return None
