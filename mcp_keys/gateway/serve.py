"""``mcp-keys gateway serve``: build the gateway over a store and its services file and
run it on stdio or streamable HTTP."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import McpKeysError, UsageError
from ..validator import Validator
from .model import RateLimit
from .proxy import MAX_BODY, Gateway
from .ratelimit import Buckets
from .server import KEY_VAR, CallerSource, build, key_from_environment
from .services import ConfigError, ServiceConfig, services_path

if TYPE_CHECKING:  # HTTP only: stdio serving never imports it
    from ..integrations.refusal import ASGIApp, Receive, Scope, Send

LOOPBACK = {"127.0.0.1", "::1", "localhost"}
REFRESH = 0.5  # a revoke or a store change reaches the gateway within this


class KeyRateLimit:
    """429 with ``Retry-After`` when a key as a whole is over the gateway's limit."""

    def __init__(self, app: ASGIApp, validator: Validator, limit: RateLimit) -> None:
        self.app, self.validator, self.limit = app, validator, limit
        self.buckets = Buckets()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            from ..integrations.refusal import bearer_token

            result = self.validator.validate(bearer_token(scope))
            if result and result.key_id:
                wait = self.buckets.take(result.key_id, self.limit.count, self.limit.period)
                if wait:
                    body = json.dumps({"error": "rate_limited", "error_description":
                                       f"this key is over {self.limit.text} on the gateway; "
                                       f"retry in {wait:.1f}s", "reason": "rate_limited",
                                       "rule": f"rate limit {self.limit.text} per key",
                                       "next_step": f"retry in {wait:.1f}s"}).encode()
                    await send({"type": "http.response.start", "status": 429, "headers": [
                        (b"content-type", b"application/json"),
                        (b"retry-after", str(math.ceil(wait)).encode()),
                        (b"content-length", str(len(body)).encode())]})
                    await send({"type": "http.response.body", "body": body})
                    return
        await self.app(scope, receive, send)


def quiet_http_clients() -> None:
    """HTTP clients log each request's URL at INFO, and a ``query:`` credential is in that
    URL: keep them at WARNING whatever the SDK configures."""
    import logging

    for name in ("httpx", "httpx2", "httpcore", "httpcore2"):
        logging.getLogger(name).setLevel(logging.WARNING)


def make_gateway(store: str | os.PathLike[str] | None, *, services: Path | None = None,
                 max_body: int = MAX_BODY, log_bodies: bool = False, front: str = "mcp",
                 allow_workspace_policy: bool = False) -> tuple[Gateway, Validator]:
    """A gateway over ``store``'s keys and audit trail (the per-user store when none is
    named) and its services file, which must be valid, and out of an agent's workspace,
    before anything is served."""
    from ..manager import KeyManager
    from .workspace import check_policy_location, gateway_store

    store = gateway_store(store)
    config = ServiceConfig(services or services_path(store))
    check_policy_location(store, config.path, allow=allow_workspace_policy)
    snapshot = config.current()
    if snapshot.error is not None:
        raise ConfigError(snapshot.error)
    if not snapshot.services:
        legacy = Path(".mcp-keys") / "services.toml"
        hint = (f" (the old default {legacy.resolve()} is in this workspace: move it and the "
                f"store to {config.path.parent}/)" if legacy.is_file() else "")
        raise ConfigError(f"no services in {config.path}: add one with 'mcp-keys service "
                          f"add'{hint}")
    manager = KeyManager(store)
    validator = Validator(store, refresh_interval=REFRESH)
    gateway = Gateway(config, audit=manager.audit, max_body=max_body, log_bodies=log_bodies,
                      front=front)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, lambda *_: config.reload())
    return gateway, validator


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, or one line saying why not: a port that is in
    use or not ours to take is an operation that failed (exit 1), not uvicorn's log."""
    if not 1 <= port <= 65535:
        raise UsageError(f"--port {port} is out of range: use 1-65535")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except (OSError, UnicodeError) as exc:
        raise McpKeysError(f"--host {host} does not resolve ({exc}): use an IP address "
                           "or a name this machine knows") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        import errno

        if exc.errno == errno.EADDRINUSE:
            raise McpKeysError(f"port {port} on {host} is in use (another gateway?): stop "
                               "it or pick another with --port") from None
        raise McpKeysError(f"cannot listen on {host} port {port}: "
                           f"{exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    """The MCP endpoint a client should be given for this socket."""
    address = sock.getsockname()
    host = f"[{address[0]}]" if ":" in address[0] else address[0]
    return f"http://{host}:{address[1]}/mcp"


def serve(store: str | os.PathLike[str] | None, *, transport: str = "stdio",
          host: str = "127.0.0.1", port: int = 8765, public: bool = False,
          services: Path | None = None, max_body: int = MAX_BODY, log_bodies: bool = False,
          rate_limit: RateLimit | None = None, allow_workspace_policy: bool = False) -> None:
    """Run the gateway until its transport ends."""
    if transport == "http" and host not in LOOPBACK and not public:
        raise UsageError(f"--host {host} is not loopback: add --public to serve other "
                         "machines (and put TLS in front)")
    if transport == "http" and not 1 <= port <= 65535:
        raise UsageError(f"--port {port} is out of range: use 1-65535")
    gateway, validator = make_gateway(store, services=services, max_body=max_body,
                                      log_bodies=log_bodies,
                                      allow_workspace_policy=allow_workspace_policy)
    if transport == "stdio":
        callers = CallerSource(validator, key_from_environment())
        result = callers.check_start()
        if not result:
            raise McpKeysError(f"{KEY_VAR} must hold a valid mcp-keys key for the gateway "
                               f"({result.reason.value}); create one with 'mcp-keys create "
                               "agent --scope gateway:SERVICE'")
        server = build(gateway, callers)
        quiet_http_clients()  # after the SDK has set up its logging
        server.run("stdio")
        return
    sock = bind(host, port)  # before anything heavy: a port in use is one line at once
    import uvicorn

    from ..integrations.mcp import McpKeysTokenVerifier
    from ..manager import KeyManager
    from .workspace import gateway_store

    verifier = McpKeysTokenVerifier(validator=validator)
    records = KeyManager(gateway_store(store)).get  # whoami: the name the token lacks
    server = build(gateway, CallerSource(validator, records=records), token_verifier=verifier,
                   auth=verifier.auth_settings())
    quiet_http_clients()
    try:
        app: ASGIApp = server.streamable_http_app(host=host)
    except TypeError:  # SDK 1.x takes the host on the server
        app = server.streamable_http_app()
    app = verifier.protect(app)
    if rate_limit is not None:
        app = KeyRateLimit(app, validator, rate_limit)
    print(f"mcp-keys gateway: serving {url_of(sock)} (Ctrl-C stops it)", file=sys.stderr,
          flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
