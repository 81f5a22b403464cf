"""The one ``Host``/``Origin`` check every mcp-keys front door runs before it looks at a
key, so a page on another website cannot drive a server on 127.0.0.1 through DNS
rebinding (the MCP transport spec: servers MUST validate ``Origin``).

- ``Origin`` must be an allowed origin, else 403. No ``Origin`` header is allowed (a
  non-browser client); ``null``, two of them, or one that is not ``scheme://host[:port]``
  is refused.
- ``Host`` must be an allowed host, else 421, when the request arrived on a loopback
  address (or one the server did not name: fail closed), or everywhere once the operator
  lists hosts. A missing, doubled or malformed ``Host`` (userinfo, a path) is refused.
- Allowed: ``127.0.0.1``, ``localhost`` and ``[::1]`` on any port (``http``/``https``
  for origins), plus what the operator lists in ``allowed_hosts=``/``allowed_origins=``
  or ``MCP_KEYS_ALLOWED_HOSTS``/``MCP_KEYS_ALLOWED_ORIGINS``; ``*`` turns a check off.

Names compare without case and without one trailing dot; IPv6 literals compare in their
canonical form. A ``host`` pattern matches any port unless it names one; an origin
pattern without a port means the scheme's default port, ``:*`` any port; ``*.example.com``
matches its subdomains. Lifespan and other non-HTTP scopes pass untouched.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import UsageError
from .refusal import ASGIApp, Receive, Refusal, Scope, Send

log = logging.getLogger("mcp_keys")

HOSTS_VAR = "MCP_KEYS_ALLOWED_HOSTS"
ORIGINS_VAR = "MCP_KEYS_ALLOWED_ORIGINS"
LOOPBACK = ("127.0.0.1", "localhost", "[::1]")
DEFAULT_HOSTS = tuple(f"{name}:*" for name in LOOPBACK)
DEFAULT_ORIGINS = tuple(f"{scheme}://{name}:*" for scheme in ("http", "https")
                        for name in LOOPBACK)
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
ANY = -1  # a pattern's port: any

_AUTHORITY = re.compile(r"(?:\[(?P<ip6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9._-]+))"
                        r"(?::(?P<port>[0-9]{0,5}))?")
_PATTERN = re.compile(r"(?:\[(?P<ip6>[0-9A-Fa-f:.]+)\]|(?P<name>(?:\*\.)?[A-Za-z0-9._-]+))"
                      r"(?::(?P<port>[0-9]{1,5}|\*))?")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")


@dataclass(frozen=True, slots=True)
class Authority:
    """A host and port in canonical form: lower case, no trailing dot, IPv6 in brackets
    and compressed; ``port`` is ``None`` when none was given (``ANY`` in a pattern)."""

    host: str
    port: int | None


def _host(ip6: str | None, name: str | None) -> str | None:
    if ip6 is not None:
        try:
            return f"[{ipaddress.IPv6Address(ip6).compressed}]"
        except ValueError:
            return None
    assert name is not None
    name = name.lower()
    name = name[:-1] if name.endswith(".") else name
    return name if name and not name.startswith(".") and ".." not in name else None


def authority(text: str) -> Authority | None:
    """A ``Host`` header value (or an origin's host part) as an ``Authority``, or
    ``None`` when it is not exactly ``host[:port]``."""
    found = _AUTHORITY.fullmatch(text)
    if found is None:
        return None
    host = _host(found["ip6"], found["name"])
    port = int(found["port"]) if found["port"] else None
    if host is None or (port is not None and port > 65535):
        return None
    return Authority(host, port)


@dataclass(frozen=True, slots=True)
class Origin:
    """An origin as a browser sends it: scheme and authority, or ``null`` (scheme "")."""

    scheme: str
    at: Authority | None

    @property
    def port(self) -> int | None:
        assert self.at is not None
        return self.at.port if self.at.port is not None else DEFAULT_PORTS.get(self.scheme)


def origin(text: str) -> Origin | None:
    """An ``Origin`` header value parsed, or ``None`` when it is not ``null`` nor
    exactly ``scheme://host[:port]``."""
    if text == "null":
        return Origin("", None)
    scheme, sep, rest = text.partition("://")
    if not sep or _SCHEME.fullmatch(scheme) is None:
        return None
    at = authority(rest)
    return None if at is None else Origin(scheme.lower(), at)


@dataclass(frozen=True, slots=True)
class HostRule:
    """One allowed host: a name (``*.`` for its subdomains, ``*`` for any) and a port
    (``ANY``, a number, or ``None`` for none)."""

    host: str
    port: int | None

    def admits(self, at: Authority) -> bool:
        if self.port not in (ANY, at.port):
            return False
        if self.host.startswith("*."):
            return at.host.endswith(self.host[1:])
        return self.host in ("*", at.host)


def _pattern(text: str) -> tuple[str, str | None] | None:
    """A host pattern's canonical host (``*.`` kept) and its port text, or ``None``."""
    found = _PATTERN.fullmatch(text)
    if found is None:
        return None
    name = found["name"]
    wild = name is not None and name.startswith("*.")
    host = _host(found["ip6"], name[2:] if wild else name)
    port = found["port"]
    if host is None or (port not in (None, "*") and int(port) > 65535):
        return None
    return ("*." + host if wild else host), port


def host_rule(text: str, var: str = "allowed_hosts") -> HostRule:
    """``name``, ``name:port`` or ``name:*`` (a name alone: any port), ``*.name`` or
    ``*``; a bad entry stops the server at start-up."""
    text = text.strip()
    if text == "*":
        return HostRule("*", ANY)
    found = _pattern(text)
    if found is None:
        raise UsageError(f"{var}: {text!r} is not a host; write host, host:port or "
                         "host:* (IPv6 as [::1]), or * for any")
    host, port = found
    return HostRule(host, ANY if port in (None, "*") else int(port))


@dataclass(frozen=True, slots=True)
class OriginRule:
    """One allowed origin: a scheme and a host rule whose port is the scheme's default
    when the pattern names none; scheme ``*`` allows any origin, ``null`` the opaque one."""

    scheme: str
    host: HostRule

    def admits(self, seen: Origin) -> bool:
        if self.scheme == "*":
            return True
        if seen.at is None:
            return self.scheme == "null"
        return self.scheme == seen.scheme and self.host.admits(
            Authority(seen.at.host, seen.port))


def origin_rule(text: str, var: str = "allowed_origins") -> OriginRule:
    """``scheme://host[:port|:*]``, ``null`` or ``*``."""
    text = text.strip()
    if text in ("*", "null"):
        return OriginRule(text, HostRule("*", ANY))
    scheme, sep, rest = text.removesuffix("/").partition("://")
    found = _pattern(rest) if sep and _SCHEME.fullmatch(scheme) else None
    if found is None:
        raise UsageError(f"{var}: {text!r} is not an origin; write scheme://host[:port] "
                         "(https://app.example.com, http://localhost:*), null, or * for any")
    host, port = found
    scheme = scheme.lower()
    number = (DEFAULT_PORTS.get(scheme) if port is None else ANY if port == "*"
              else int(port))
    return OriginRule(scheme, HostRule(host, number))


def _listed(given: Iterable[str] | None, var: str) -> list[str] | None:
    """The operator's entries: the argument, else the environment variable (comma or
    space separated), else ``None``."""
    if given is not None:
        return [entry for entry in given if entry.strip()]
    value = os.environ.get(var)
    if value is None or not value.strip():
        return None
    return [entry for entry in re.split(r"[,\s]+", value) if entry]


def _shown(value: str) -> str:
    """A header value fit to quote in a body or a log line: printable, bounded."""
    printable = "".join(c if " " <= c <= "~" else "?" for c in value)
    return printable if len(printable) <= 80 else printable[:80] + "..."


@dataclass(frozen=True, slots=True)
class OriginPolicy:
    """The allowed hosts and origins of one server, and the check itself."""

    hosts: tuple[HostRule, ...]
    origins: tuple[OriginRule, ...]
    hosts_listed: bool  # the operator named hosts: check Host on every interface

    @classmethod
    def configure(cls, allowed_hosts: Iterable[str] | None = None,
                  allowed_origins: Iterable[str] | None = None) -> OriginPolicy:
        """The loopback defaults plus the operator's lists (arguments win over
        ``MCP_KEYS_ALLOWED_HOSTS``/``MCP_KEYS_ALLOWED_ORIGINS``)."""
        hosts = _listed(allowed_hosts, HOSTS_VAR)
        origins = _listed(allowed_origins, ORIGINS_VAR)
        host_var = "allowed_hosts" if allowed_hosts is not None else HOSTS_VAR
        origin_var = "allowed_origins" if allowed_origins is not None else ORIGINS_VAR
        return cls(tuple(host_rule(h, host_var) for h in (*DEFAULT_HOSTS, *(hosts or ()))),
                   tuple(origin_rule(o, origin_var)
                         for o in (*DEFAULT_ORIGINS, *(origins or ()))),
                   hosts_listed=bool(hosts))

    def _checks_host(self, scope: Scope) -> bool:
        """Host is checked where rebinding reaches: on a loopback address, on an address
        the server did not give as an IP (fail closed), or everywhere when listed;
        nowhere once ``*`` is listed."""
        if any(rule.host == "*" for rule in self.hosts):
            return False
        if self.hosts_listed:
            return True
        server = scope.get("server")
        try:
            address = ipaddress.ip_address(str(server[0]).strip("[]"))  # type: ignore[index]
        except (TypeError, IndexError, ValueError):
            return True
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return address.is_loopback or address.is_unspecified

    def refusal(self, scope: Scope) -> Refusal | None:
        """403 for a foreign ``Origin``, 421 for a foreign ``Host``, else ``None``."""
        values: dict[bytes, list[str]] = {b"host": [], b"origin": []}
        for key, value in scope.get("headers", ()):
            name = bytes(key).lower()
            if name in values:
                values[name].append(bytes(value).decode("latin-1").strip())
        if self._checks_host(scope):
            hosts = values[b"host"]
            at = authority(hosts[0]) if len(hosts) == 1 else None
            if at is None or not any(rule.admits(at) for rule in self.hosts):
                return _refused(421, "misdirected_request", "Host", hosts, HOSTS_VAR)
        origins = values[b"origin"]
        if origins:
            seen = origin(origins[0]) if len(origins) == 1 else None
            if seen is None or not any(rule.admits(seen) for rule in self.origins):
                return _refused(403, "forbidden_origin", "Origin", origins, ORIGINS_VAR)
        return None


def _refused(status: int, error: str, header: str, values: list[str], var: str
             ) -> Refusal:
    """The refusal, naming what was refused and, when it may be legitimate, what to
    configure."""
    if len(values) == 1:
        what = f"{header} {_shown(values[0])!r} is not one this server answers to"
        fix = (f"if that {header.lower()} is yours, add it to {var} "
               f"(or allowed_{header.lower()}s=[...])")
    else:
        many = "no" if not values else "more than one"
        what = f"a request with {many} {header} header is refused"
        fix = f"send exactly one {header} header"
    log.warning("refused: %s (DNS-rebinding guard)", what)
    return Refusal(status, "", {"error": error, "error_description":
                                f"{what} (a guard against DNS rebinding); {fix}"})


class OriginGuard:
    """Pure ASGI middleware: the check above in front of ``app``. HTTP refusals are
    403/421 with a JSON body; a refused WebSocket is closed (1008) before it opens."""

    def __init__(self, app: ASGIApp, *, allowed_hosts: Iterable[str] | None = None,
                 allowed_origins: Iterable[str] | None = None,
                 policy: OriginPolicy | None = None) -> None:
        self.app = app
        self.policy = policy or OriginPolicy.configure(allowed_hosts, allowed_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not await refuse(self.policy, scope, send):
            await self.app(scope, receive, send)


async def refuse(policy: OriginPolicy, scope: Scope, send: Send) -> bool:
    """Send the refusal when ``policy`` refuses this HTTP or WebSocket request; ``True``
    when it did (the caller then stops)."""
    if scope["type"] not in ("http", "websocket"):
        return False
    refused = policy.refusal(scope)
    if refused is None:
        return False
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
    else:
        await refused.send(send)
    return True
