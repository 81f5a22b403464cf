"""What binds a ``run --proxy`` flow to its service before the credential goes in, and
what makes a response readable enough to scrub before it goes back.

A service's base URL binds its scheme, host and port. The credential travels only over
that scheme (an ``https`` service: TLS from the child to the proxy and from the proxy
on), to that host by its own name (the client's SNI, the upstream SNI, every ``Host``
and the ``:authority``), so a child cannot front another name on the same address."""

from __future__ import annotations

import codecs
import ipaddress
import string
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from ..model import Service

DECODABLE = frozenset({"gzip", "deflate", "br", "zstd"})  # one coding, which mitmproxy reads
ASCII_PROBE = string.ascii_letters + string.digits + "-_.~+/=:%"  # what secrets are made of
WIDE = ("utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be")  # what clients detect unasked
PIECEMEAL = ("range", "if-range")  # request headers that would split an answer in pieces
FORWARDED_HOST = ("x-forwarded-host", "x-forwarded-server", "x-host", "x-original-host",
                  "x-http-host-override")


@dataclass(frozen=True, slots=True)
class Target:
    """Where a service lives: what its base URL binds a request to."""

    scheme: str
    host: str  # lower-case hostname, or an address without brackets
    port: int

    @classmethod
    def of(cls, service: Service) -> Target:
        parts = urlsplit(service.base_url)
        scheme = parts.scheme.lower()
        return cls(scheme, (parts.hostname or "").lower(),
                   parts.port or (443 if scheme == "https" else 80))

    @property
    def is_address(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True

    def sni_ok(self, sni: str | None) -> bool:
        """A DNS-named service needs its own name as SNI; an address needs none (RFC 6066
        forbids addresses in SNI) or the address itself."""
        if self.is_address:
            return sni is None or sni.lower() == self.host
        return sni is not None and sni.lower() == self.host


def binding_problem(flow: Any, target: Target) -> str | None:
    """Why this flow may not carry the credential of the service at ``target``, or None.

    Checked: the request's scheme and the TLS of both legs against the service's scheme;
    the client's SNI and the upstream connection's SNI; every ``Host`` header, the
    ``:authority`` (or absolute-form authority) and every header an edge may route on
    instead (``X-Forwarded-Host`` and its kin, ``Forwarded: host=``) against the
    service's host and port."""
    from mitmproxy.net.http.url import parse_authority

    request = flow.request
    client_tls = bool(flow.client_conn.tls_established)
    if request.scheme != target.scheme or client_tls != (target.scheme == "https"):
        how = "TLS" if client_tls else "plain HTTP"
        return (f"this service is reached over {target.scheme} only; the request came as "
                f"{request.scheme} over {how} (use {target.scheme}://{target.host})")
    if client_tls and _unverified_upstream():
        return "the proxy does not verify upstream certificates (ssl_insecure is on)"
    if client_tls and not target.sni_ok(flow.client_conn.sni):
        return (f"the TLS name (SNI) {str(flow.client_conn.sni)[:100]!r} is not the "
                f"service's host {target.host}")
    server = flow.server_conn  # the connection the request goes out on, if already open
    same = server.address is not None and tuple(server.address) == (request.host, request.port)
    if same and (bool(server.tls) != client_tls or
                 (server.tls and not target.sni_ok(server.sni))):
        return (f"the upstream connection is not TLS to {target.host} by its name "
                f"(SNI {str(server.sni)[:100]!r})")
    names = list(request.headers.get_all("host"))
    if request.authority:
        names.append(request.authority)
    if not names:
        return "the request names no host (no Host header or :authority)"
    for header in FORWARDED_HOST:  # an edge may route on these instead of Host
        names += request.headers.get_all(header)
    for value in request.headers.get_all("forwarded"):
        names += [pair.partition("=")[2].strip().strip('"') for element in value.split(",")
                  for pair in element.split(";")
                  if pair.partition("=")[0].strip().lower() == "host"]
    for name in names:
        try:
            host, port = parse_authority(name, check=True)
        except ValueError:
            return f"the request's host {name[:100]!r} is malformed"
        if host.lower() != target.host or port not in (None, target.port):
            return (f"the request names {name[:100]!r}, not the service's host "
                    f"{target.host}: the credential goes to the service by its own name")
    return None


def unreadable(response: Any, *, websocket: bool) -> str | None:
    """Why the proxy cannot read this response to scrub it, or None: a coding it cannot
    decode (unknown, stacked, corrupt, or a compressed transfer coding), or a protocol
    switch to anything but a WebSocket it relays message by message, or a piece of an
    answer (206: the rest, and so the whole credential, may come in another)."""
    if response.status_code == 101 and not websocket:
        return "a protocol switch the proxy cannot read"
    if response.status_code == 206:
        return "a partial answer (206) cannot be scrubbed whole"
    codings = [c.strip().lower() for v in response.headers.get_all("content-encoding")
               for c in v.split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if len(codings) > 1 or (codings and codings[0] not in DECODABLE):
        return f"content encoding {', '.join(codings)[:100]!r} cannot be read to scrub it"
    transfer = [c.strip().lower() for v in response.headers.get_all("transfer-encoding")
                for c in v.split(",")]
    if any(c not in ("chunked", "identity", "") for c in transfer):
        return f"transfer encoding {', '.join(transfer)[:100]!r} cannot be read to scrub it"
    try:
        response.get_content(strict=True)
    except ValueError:
        return f"its {codings[0] if codings else 'body'} encoding is corrupt"
    return _charset_problem(response)


def _charset_problem(response: Any) -> str | None:
    """Why the body's declared character set hides the credential from a byte-wise
    scrubber (it does not spell ASCII as ASCII: UTF-7, UTF-16, EBCDIC...), or None."""
    for value in response.headers.get_all("content-type"):
        for param in value.split(";")[1:]:
            key, _, name = param.partition("=")
            if key.strip().lower() != "charset":
                continue
            name = name.strip().strip('"').strip("'")
            try:
                same = ASCII_PROBE.encode(codecs.lookup(name).name) == ASCII_PROBE.encode()
            except (LookupError, UnicodeError, ValueError):
                same = False
            if not same:
                return f"character set {name[:40]!r} cannot be read to scrub it"
    return None


def wide(forms: list[str], redacted: str) -> list[tuple[bytes, bytes]]:
    """Each form of a credential and its replacement in the wide encodings a client may
    detect without being told (a UTF-16 BOM, JSON's UTF-16/32 detection)."""
    return [(form.encode(encoding), redacted.encode(encoding))
            for form in forms for encoding in WIDE]


def _unverified_upstream() -> bool:
    """Whether mitmproxy was told not to verify upstream certificates."""
    from mitmproxy import ctx

    return bool(ctx.options.ssl_insecure)
