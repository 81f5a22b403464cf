"""Putting the upstream credential into a request, one function per auth kind.

``bearer``, ``basic`` (the reference holds ``user:password``), ``header:NAME``,
``query:NAME`` and ``sigv4:REGION:SERVICE`` (the reference holds ``ACCESS_KEY_ID:SECRET``;
botocore signs). A signing kind is one more entry in ``INJECTORS``: it gets the whole
outgoing request, after every other header is final.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import SecretError
from ..secrets.value import Secret


@dataclass(slots=True)
class Outgoing:
    """The request as it will be sent upstream."""

    method: str
    url: str  # scheme, host and path; no query
    headers: dict[str, str] = field(default_factory=dict)
    query: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


def _bearer(request: Outgoing, secret: Secret, _: str) -> None:
    request.headers["Authorization"] = f"Bearer {secret.reveal()}"


def _basic(request: Outgoing, secret: Secret, _: str) -> None:
    value = secret.reveal()
    if ":" not in value:
        raise SecretError(f"{secret.reference}: basic auth needs 'user:password' in the secret")
    request.headers["Authorization"] = "Basic " + base64.b64encode(value.encode()).decode()


def _header(request: Outgoing, secret: Secret, name: str) -> None:
    request.headers[name] = secret.reveal()


def _query(request: Outgoing, secret: Secret, name: str) -> None:
    request.query.append((name, secret.reveal()))


def _sigv4(request: Outgoing, secret: Secret, target: str) -> None:
    from .sigv4 import sign  # botocore, imported only for services that sign

    sign(request, secret, target)


INJECTORS: dict[str, Callable[[Outgoing, Secret, str], None]] = {
    "bearer": _bearer, "basic": _basic, "header": _header, "query": _query, "sigv4": _sigv4,
}


def inject(kind: str, request: Outgoing, secret: Secret) -> None:
    """Apply ``kind`` (e.g. ``header:X-Api-Key``) to ``request``."""
    name, _, argument = kind.partition(":")
    INJECTORS[name](request, secret, argument)


def reserved_headers(kind: str) -> tuple[str, ...]:
    """Headers the caller may not set because this auth kind sets them."""
    name, _, argument = kind.partition(":")
    if name == "header":
        return (argument,)
    if name == "sigv4":
        return ("x-amz-date", "x-amz-security-token", "x-amz-content-sha256")
    return ()


def reserved_query(kind: str) -> tuple[str, ...]:
    name, _, argument = kind.partition(":")
    return (argument,) if name == "query" else ()
