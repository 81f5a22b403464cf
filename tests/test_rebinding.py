"""DNS rebinding: every mcp-keys front door refuses a foreign ``Origin`` (403) and, on
loopback, a foreign ``Host`` (421), before it looks at a key.

Each example runs under a real uvicorn process on 127.0.0.1 and is called over a raw
socket (so ``Host`` can be anything, doubled or absent); the guard itself is also driven
in-process with ASGI scopes for the variations a socket cannot reach (the server's own
address, lifespan, WebSocket).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mcp_keys import Validator
from mcp_keys.errors import UsageError
from mcp_keys.integrations.mcp import ApiKeyMiddleware
from mcp_keys.integrations.origin import HOSTS_VAR, ORIGINS_VAR, OriginGuard
from mcp_keys.integrations.refusal import Message, Receive, Scope, Send
from tests.conftest import FileKeys, assert_absent
from tests.test_middleware import echo_app
from tests.test_stacks import INIT, Stack, running_example, stack  # noqa: F401

EVIL_ORIGIN = "http://evil.example"
EVIL_HOST = "evil.example"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: str


def raw(port: int, headers: list[tuple[str, str]], *, path: str = "/mcp",
        method: str = "POST", version: str = "1.1") -> Reply:
    """One request over a plain socket, headers exactly as given (none added)."""
    body = json.dumps(INIT).encode() if method == "POST" else b""
    lines = [f"{method} {path} HTTP/{version}",
             *(f"{name}: {value}" for name, value in headers),
             "Content-Type: application/json",
             "Accept: application/json, text/event-stream",
             f"Content-Length: {len(body)}", "Connection: close", "", ""]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall("\r\n".join(lines).encode("latin-1") + body)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        found = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            found[name.strip().lower()] = value.strip()
        status = int(status_line.split()[1])
        if status >= 300:  # a refusal: read the whole (short) body
            want = int(found.get("content-length", "0"))
            while len(rest) < want:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                rest += chunk
    return Reply(status, found, rest.decode(errors="replace"))


@contextmanager
def example(chosen: Stack, manager: FileKeys, tmp_path: Path,
            extra: dict[str, str] | None = None) -> Iterator[tuple[int, Path]]:
    """The stack's example under uvicorn on 127.0.0.1, and its log."""
    manager.init()
    log = tmp_path / f"{chosen.name}.log"
    env = {k: v for k, v in os.environ.items() if k not in (HOSTS_VAR, ORIGINS_VAR)}
    env.update(MCP_KEYS_STORE=str(manager.store.path), **(extra or {}))
    with running_example(chosen, env, log) as port:
        yield port, log


def test_every_example_refuses_a_foreign_origin_and_host(
        stack: Stack, manager: FileKeys, tmp_path: Path) -> None:  # noqa: F811
    reader = manager.create("reader", scopes=["tools:call"])
    seen: list[str] = []
    with example(stack, manager, tmp_path) as (port, log):
        here = f"127.0.0.1:{port}"
        key = [("Authorization", f"Bearer {reader.key}")]
        bad_key = [("Authorization", "Bearer mcpk_notakey")]

        def status(*headers: tuple[str, str], path: str = "/mcp", version: str = "1.1"
                   ) -> int:
            reply = raw(port, list(headers), path=path, version=version)
            seen.append(json.dumps(reply.headers) + reply.body)
            return reply.status

        assert status(("Host", here), *key) == 200, "a normal request is served"
        for with_key in (key, bad_key, []):
            what = f"{stack.name}, {len(with_key)} key header(s)"
            reply = raw(port, [("Host", here), ("Origin", EVIL_ORIGIN), *with_key])
            seen.append(reply.body)
            assert reply.status == 403, f"{what}: a foreign Origin got {reply.status}"
            assert "www-authenticate" not in reply.headers, "not a key problem"
            assert ORIGINS_VAR in json.loads(reply.body)["error_description"], \
                f"{what}: the 403 names what to configure: {reply.body}"
            reply = raw(port, [("Host", EVIL_HOST), *with_key])
            seen.append(reply.body)
            assert reply.status == 421, f"{what}: a foreign Host got {reply.status}"
            assert HOSTS_VAR in json.loads(reply.body)["error_description"], \
                f"{what}: the 421 names what to configure: {reply.body}"
            assert status(("Host", f"{EVIL_HOST}:{port}"), *with_key) == 421, what
            assert status(("Host", EVIL_HOST), ("Origin", EVIL_ORIGIN), *with_key) in \
                (403, 421), what

        refused_origins = ["null", f"http://{here}.evil.example", "http://127.0.0.1@evil.example",
                           f"file://{here}", "HTTP://EVIL.EXAMPLE", ""]
        for value in refused_origins:
            assert status(("Host", here), ("Origin", value), *key) == 403, \
                f"{stack.name}: Origin {value!r} was not refused"
        assert status(("Host", here), ("Origin", f"http://{here}"),
                      ("Origin", EVIL_ORIGIN), *key) == 403, "two Origin headers"
        for value in ("user@" + here, here + "@evil.example", f"{EVIL_HOST}.", "localhost..",
                      f"127.0.0.1.{EVIL_HOST}", f"{here}/x", f"[::2]:{port}"):
            assert status(("Host", value), *key) == 421, \
                f"{stack.name}: Host {value!r} was not refused"
        assert status(("Host", here), ("Host", EVIL_HOST), *key) in (400, 421), \
            "two Host headers (uvicorn's h11 answers 400 itself)"
        assert status(*key, version="1.0") == 421, "HTTP/1.0 without a Host header"

        for value in (f"http://{here}", f"http://localhost:{port}", f"https://[::1]:{port}",
                      "HTTP://LOCALHOST:3000"):
            assert status(("Host", here), ("Origin", value), *key) == 200, \
                f"{stack.name}: the loopback origin {value!r} was refused"
        for value in (f"localhost:{port}", f"LOCALHOST.:{port}", f"[::1]:{port}",
                      f"[0:0::1]:{port}", "127.0.0.1"):
            assert status(("Host", value), *key) == 200, \
                f"{stack.name}: the loopback host {value!r} was refused"

        if stack.name == "fastapi":  # the app's own route, behind Depends(require_key(...))
            for version_key in (key, []):
                assert raw(port, [("Host", here), ("Origin", EVIL_ORIGIN), *version_key],
                           path="/api/whoami", method="GET").status == 403
                assert raw(port, [("Host", EVIL_HOST), *version_key], path="/api/whoami",
                           method="GET").status == 421
            assert raw(port, [("Host", here), *key], path="/api/whoami",
                       method="GET").status == 200

    for where in (log.read_text(errors="replace"), *seen):
        assert_absent(reader.key, where, "a refusal or the server log")


def test_every_example_admits_what_the_operator_lists(
        stack: Stack, manager: FileKeys, tmp_path: Path) -> None:  # noqa: F811
    reader = manager.create("reader", scopes=["tools:call"])
    listed = {HOSTS_VAR: "mcp.example.test, *.corp.test",
              ORIGINS_VAR: "https://app.example.test"}
    with example(stack, manager, tmp_path, listed) as (port, _):
        key = ("Authorization", f"Bearer {reader.key}")
        for host in (f"mcp.example.test:{port}", "MCP.example.test", f"a.corp.test:{port}",
                     f"127.0.0.1:{port}"):
            reply = raw(port, [("Host", host), key])
            assert reply.status == 200, f"{stack.name}: listed Host {host!r}: {reply.status}"
        for host in (EVIL_HOST, f"corp.test:{port}"):
            assert raw(port, [("Host", host), key]).status == 421, host
        here = ("Host", f"mcp.example.test:{port}")
        assert raw(port, [here, ("Origin", "https://app.example.test"), key]).status == 200
        for value in (EVIL_ORIGIN, "https://app.example.test:8443", "http://app.example.test"):
            assert raw(port, [here, ("Origin", value), key]).status == 403, value
        assert raw(port, [here, ("Origin", "https://app.example.test")]).status == 401, \
            "an allowed origin still needs a key"


OUTSIDE_MCP = ["/", "/mcp/", "/MCP", "//mcp", "/docs", "/openapi.json", "/redoc",
               "/.well-known/oauth-protected-resource",
               "/.well-known/oauth-protected-resource/mcp",
               "/.well-known/oauth-authorization-server", "/health", "/api/whoami",
               "http://evil.example/mcp", "*"]


def test_every_path_of_every_example_is_guarded(
        stack: Stack, manager: FileKeys, tmp_path: Path) -> None:  # noqa: F811
    """Not only /mcp: the framework's own pages (FastAPI's /docs and /openapi.json), the
    well-known URIs, a route without the key dependency, a 404 and an absolute-form
    target are all refused to a foreign Host (421) and a foreign Origin (403)."""
    with example(stack, manager, tmp_path) as (port, _):
        here = ("Host", f"127.0.0.1:{port}")
        for path in OUTSIDE_MCP:
            for method in ("GET", "POST", "OPTIONS"):
                what = f"{stack.name}: {method} {path}"
                got = raw(port, [("Host", EVIL_HOST)], path=path, method=method).status
                assert got == 421, f"{what} with a foreign Host got {got}"
                got = raw(port, [here, ("Origin", EVIL_ORIGIN)], path=path,
                          method=method).status
                assert got == 403, f"{what} with a foreign Origin got {got}"


def test_install_guards_the_whole_fastapi_app() -> None:
    """``install(app)`` puts the guard in front of every route, also one that never asks
    for a key; its lists admit what the operator names."""
    fastapi = pytest.importorskip("fastapi")
    from mcp_keys.integrations.fastapi import install

    def app_with(**lists: list[str]) -> Any:
        app = fastapi.FastAPI()
        install(app, **lists)

        @app.get("/health")  # type: ignore[untyped-decorator]
        def health() -> dict[str, str]:
            return {"ok": "yes"}

        return app

    def get(app: Any, headers: dict[str, str]) -> int:
        sent: list[Message] = []
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": "GET", "scheme": "http", "path": "/health", "raw_path": b"/health",
                 "root_path": "", "query_string": b"", "client": ("127.0.0.1", 5000),
                 "server": ("127.0.0.1", 8000), "headers": [
                     (k.lower().encode(), v.encode()) for k, v in
                     {"Host": "127.0.0.1:8000", **headers}.items()]}

        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Message) -> None:
            sent.append(message)

        asyncio.run(app(scope, receive, send))
        return int(sent[0]["status"])

    plain = app_with()
    assert get(plain, {}) == 200
    assert get(plain, {"Host": EVIL_HOST}) == 421
    assert get(plain, {"Origin": EVIL_ORIGIN}) == 403
    listed = app_with(allowed_hosts=["api.example"], allowed_origins=["https://app.example"])
    assert get(listed, {"Host": "api.example", "Origin": "https://app.example"}) == 200
    assert get(listed, {"Host": EVIL_HOST}) == 421


# The guard in-process: what a socket to 127.0.0.1 cannot show.

class Inner:
    """The app behind the guard: it only notes that it was reached."""

    def __init__(self) -> None:
        self.reached = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.reached = True
        if scope["type"] == "http":
            await echo_app(scope, receive, send)


def call(app: Any, scope: Scope) -> tuple[list[Message], bool]:
    """Run ``app`` (built on an ``Inner``) on ``scope``: what it sent, and whether the
    request got through."""
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    inner = app.app
    inner.reached = False
    asyncio.run(app(scope, receive, send))
    return sent, bool(inner.reached)


def scope_of(headers: list[tuple[str, str]], server: Any = ("127.0.0.1", 8000),
             kind: str = "http") -> Scope:
    return {"type": kind, "method": "POST", "path": "/mcp", "headers":
            [(k.lower().encode(), v.encode("latin-1")) for k, v in headers], "server": server}


def refused(app: Any, headers: list[tuple[str, str]], server: Any = ("127.0.0.1", 8000)
            ) -> int:
    sent, reached = call(app, scope_of(headers, server))
    return 0 if reached else int(sent[0]["status"])


def test_host_is_checked_where_rebinding_reaches() -> None:
    guard = OriginGuard(Inner())
    lan = ("192.168.1.20", 8000)
    assert refused(guard, [("Host", EVIL_HOST)]) == 421
    assert refused(guard, []) == 421, "no Host"
    assert refused(guard, [("Host", "127.0.0.1:1"), ("Host", "127.0.0.1:1")]) == 421, \
        "two Host headers, even alike"
    assert refused(guard, [("Host", "127.0.0.1:1"), ("Origin", "http://127.0.0.1:1"),
                           ("Origin", "http://127.0.0.1:1")]) == 403, "two Origin headers"
    assert refused(guard, [("Host", EVIL_HOST)], lan) == 0, \
        "on a LAN address with no hosts listed, Host is not checked"
    assert refused(guard, [("Host", EVIL_HOST), ("Origin", EVIL_ORIGIN)], lan) == 403, \
        "but Origin is, on every interface"
    for server in (("::1", 8000), ("::ffff:127.0.0.1", 8000), ("127.0.0.2", 8000),
                   ("0.0.0.0", 8000), None, ("testserver", 80), ("/run/mcp.sock", None)):
        assert refused(guard, [("Host", EVIL_HOST)], server) == 421, \
            f"server {server}: an address that is loopback or unknown checks Host"
    listed = OriginGuard(Inner(), allowed_hosts=["mcp.example.com"])
    assert refused(listed, [("Host", EVIL_HOST)], lan) == 421, \
        "once hosts are listed, Host is checked everywhere"
    assert refused(listed, [("Host", "mcp.example.com")], lan) == 0
    assert refused(listed, [("Host", "127.0.0.1:9")], lan) == 0, "loopback stays allowed"
    anywhere = OriginGuard(Inner(), allowed_hosts=["*"], allowed_origins=["*"])
    assert refused(anywhere, [("Host", EVIL_HOST), ("Origin", "null")]) == 0, \
        "* turns a check off, on the operator's word"


def test_lifespan_and_websockets() -> None:
    guard = OriginGuard(Inner())
    sent, reached = call(guard, {"type": "lifespan"})
    assert reached and not sent, "lifespan passes untouched"
    sent, reached = call(guard, scope_of([("Host", "127.0.0.1:1"),
                                          ("Origin", EVIL_ORIGIN)], kind="websocket"))
    assert not reached and sent == [{"type": "websocket.close", "code": 1008}], \
        "a cross-site WebSocket is closed before it opens"
    _, reached = call(guard, scope_of([("Host", "127.0.0.1:1")], kind="websocket"))
    assert reached


def test_the_middleware_checks_origin_before_the_key(
        manager: FileKeys, monkeypatch: pytest.MonkeyPatch) -> None:
    good = manager.create("good", scopes=["tools:call"])
    validator = Validator(manager.store.path, refresh_interval=0)
    app = ApiKeyMiddleware(Inner(), scopes=["tools:call"], validator=validator)
    for headers in ([("Authorization", f"Bearer {good.key}")], []):
        assert refused(app, [("Host", "127.0.0.1:1"), ("Origin", EVIL_ORIGIN), *headers]) \
            == 403
        assert refused(app, [("Host", EVIL_HOST), *headers]) == 421
    assert refused(app, [("Host", "127.0.0.1:1"),
                         ("Authorization", f"Bearer {good.key}")]) == 0
    monkeypatch.setenv("API_KEY_REQUIRED", "false")
    open_app = ApiKeyMiddleware(Inner(), validator=validator)
    assert refused(open_app, [("Host", EVIL_HOST)]) == 421, "an open server is guarded too"
    assert refused(open_app, [("Host", "localhost:1")]) == 0


def test_operator_lists_from_arguments_and_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HOSTS_VAR, "env.example")
    monkeypatch.setenv(ORIGINS_VAR, "https://env.example")
    from_env = OriginGuard(Inner())
    assert refused(from_env, [("Host", "env.example"), ("Origin", "https://env.example")]) \
        == 0
    given = OriginGuard(Inner(), allowed_hosts=["arg.example:8443"],
                        allowed_origins=["https://arg.example:*", "null"])
    assert refused(given, [("Host", "env.example")]) == 421, "an argument wins over the env"
    assert refused(given, [("Host", "arg.example:8443"), ("Origin", "null")]) == 0
    assert refused(given, [("Host", "arg.example:8444")]) == 421, "a listed port is exact"
    assert refused(given, [("Host", "arg.example:8443"),
                           ("Origin", "https://arg.example:9")]) == 0


@pytest.mark.parametrize("bad", ["evil.example/path", "user@host", "[::1", "host:99999",
                                 "http://", "a;b"])
def test_a_bad_entry_stops_the_server_at_start_up(
        bad: str, monkeypatch: pytest.MonkeyPatch, manager: FileKeys) -> None:
    validator = Validator(manager.store.path, refresh_interval=0)
    for var, kwarg, ok in ((HOSTS_VAR, "allowed_hosts", "ok.example"),
                           (ORIGINS_VAR, "allowed_origins", "https://ok.example")):
        with pytest.raises(UsageError) as raised:
            chosen: dict[str, Any] = {kwarg: [ok, bad]}
            ApiKeyMiddleware(Inner(), validator=validator, **chosen)
        assert kwarg in str(raised.value) and repr(bad) in str(raised.value), \
            str(raised.value)
        monkeypatch.setenv(var, f"{ok},{bad}")
        with pytest.raises(UsageError) as raised:
            OriginGuard(Inner())
        assert var in str(raised.value), str(raised.value)
        monkeypatch.delenv(var)


def test_a_hostile_header_is_quoted_safely(caplog: pytest.LogCaptureFixture) -> None:
    guard = OriginGuard(Inner())
    hostile = "evil.example\x1b[2J\r\n" + "x" * 500
    sent, _ = call(guard, scope_of([("Host", "127.0.0.1:1"), ("Origin", hostile)]))
    body = json.loads(sent[1]["body"])["error_description"]
    for text in (body, caplog.text):
        assert "\x1b" not in text and "\n" not in text.strip() and len(text) < 600, \
            "control characters and length are not passed on"
