"""``run --proxy`` binds each credential to its service: its scheme, TLS on both legs,
the service's own name (client SNI, upstream SNI, every ``Host`` and ``:authority``),
responses the proxy can read (and so scrub), hooks that fail closed, and WebSocket
messages scrubbed like bodies.

The proxy is the project's own (``RunningProxy`` with ``SwapAddon``: real mitmproxy),
run in a thread of this process so that a fault can be injected into a hook; one test
goes through the ``mcp-keys run --proxy`` command. The upstreams are real, on loopback:
a hypercorn TLS "edge" that serves two names (``localhost`` and ``other.localhost``, as a
shared CDN edge serves many) and records every SNI it is asked for, and plain TCP sinks
that record every byte they are sent. The attacking client speaks raw sockets, so it can
send any SNI, ``Host`` or request form a compromised child could."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    FileKeys,
    accepting,
    free_port,
    mcp_keys_cmd,
    require_proxy_stack,
    run_cli_process,
    wait_for,
)
from tests.gateway_upstream import SECRET, Seen, Upstream, issue_certificates

require_proxy_stack()
pytest.importorskip("hypercorn")

EDGE_NAMES = ("localhost", "other.localhost")  # one TLS edge, two names


def assert_no_secret(data: str | bytes, where: str) -> None:
    """No spelling of the secret that the gateway's scrubber knows (raw, base64, hex,
    escaped, URL-encoded, case-folded) in ``data``; the message names only where."""
    from mcp_keys.gateway.scrub import Scrubber

    raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
    assert SECRET.encode() not in raw and Scrubber([SECRET]).data(raw) == raw, \
        f"a form of the upstream secret reached {where}"


# -- the upstreams --------------------------------------------------------------------


CHARSETS = {"utf-16-le-json": "", "utf-32-be-json": "", "utf-16-bom": "",
            "utf-7": "utf-7", "cp037": "cp037", "utf-16": "utf-16"}  # name: declared


def encoded(name: str) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The headers and body of ``/bearer/enc/NAME``: the credential echoed, encoded."""
    from mitmproxy.net.encoding import encode

    body = json.dumps({"token": SECRET}).encode()
    simple = {"gzip", "deflate", "br", "zstd"}
    if name in simple:
        return [(b"content-encoding", name.encode())], encode(body, name)
    if name == "identity":
        return [(b"content-encoding", b"identity")], body
    if name == "stacked":  # gzip, then br: legal, and nothing the proxy decodes
        return [(b"content-encoding", b"gzip, br")], encode(encode(body, "gzip"), "br")
    if name == "two-headers":
        return ([(b"content-encoding", b"gzip"), (b"content-encoding", b"br")],
                encode(encode(body, "gzip"), "br"))
    if name == "unknown":
        return [(b"content-encoding", b"x-mcp-test")], body
    if name == "base64":  # a Python codec, not an HTTP content coding
        return [(b"content-encoding", b"base64")], base64.b64encode(body)
    if name == "corrupt":
        return [(b"content-encoding", b"gzip")], b"not gzip at all " + body
    if name in CHARSETS:  # the text in another character set, declared or not
        declared = CHARSETS[name]
        kind = b"application/json" + (b"; charset=" + declared.encode() if declared else b"")
        bom = b"\xff\xfe" if name == "utf-16-bom" else b""
        spelled = declared or name.removesuffix("-json").replace("-bom", "-le")
        return [(b"content-type", kind)], bom + json.dumps({"token": SECRET}).encode(spelled)
    if name == "gzip-members":  # two gzip members: a client reads both
        import gzip

        return ([(b"content-encoding", b"gzip")],
                gzip.compress(b'{"a": 1}') + gzip.compress(body))
    raise AssertionError(name)


@dataclass
class Edge(Upstream):
    """The test upstream (accepts only the real credential, records requests), plus
    the SNI of every TLS handshake, responses in chosen encodings, and a WebSocket."""

    snis: list[str | None] = field(default_factory=list)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await self.websocket(scope, receive, send)
        elif scope["type"] == "http" and scope["path"] == "/bearer/range":
            await self.ranged(scope, send)
        elif scope["type"] == "http" and scope["path"].startswith("/bearer/enc/"):
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            self.seen.append(Seen("GET", scope["path"], [], headers, b""))
            if headers.get("authorization") != f"Bearer {SECRET}":
                await self.reply(send, 401, {"error": "bad credential"}, [])
                return
            extra, body = encoded(scope["path"].rsplit("/", 1)[1])
            typed = any(name == b"content-type" for name, _ in extra)
            await self.reply_raw(send, 200, body, [
                *([] if typed else [(b"content-type", b"application/json")]), *extra])
        else:
            await super().__call__(scope, receive, send)

    async def ranged(self, scope: dict[str, Any], send: Any) -> None:
        """The credential in a body served by byte ranges, as file servers do."""
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.seen.append(Seen("GET", scope["path"], [], headers, b""))
        if headers.get("authorization") != f"Bearer {SECRET}":
            await self.reply(send, 401, {"error": "bad credential"}, [])
            return
        body = f"token={SECRET}".encode()
        wanted = headers.get("range", "")
        if not wanted.startswith("bytes="):
            await self.reply_raw(send, 200, body, [(b"accept-ranges", b"bytes")])
            return
        first, _, last = wanted[len("bytes="):].partition("-")
        start, end = int(first), min(int(last), len(body) - 1)
        await self.reply_raw(send, 206, body[start:end + 1], [
            (b"content-range", f"bytes {start}-{end}/{len(body)}".encode())])

    async def websocket(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.seen.append(Seen("WEBSOCKET", scope["path"], [], headers, b""))
        await receive()  # websocket.connect
        if headers.get("authorization") != f"Bearer {SECRET}":
            await send({"type": "websocket.close", "code": 4401})
            return
        await send({"type": "websocket.accept"})
        encoded_secret = base64.b64encode(SECRET.encode()).decode()
        await send({"type": "websocket.send",
                    "text": f"ws-message token={SECRET} b64={encoded_secret}"})
        await send({"type": "websocket.send", "bytes": b"ws-bytes " + SECRET.encode()})
        await send({"type": "websocket.close", "code": 1000})


@contextlib.contextmanager
def running_edge(cert: str, key: str) -> Iterator[Edge]:
    """The edge under hypercorn (HTTP/2 and HTTP/1.1, TLS) on a free loopback port."""
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    edge = Edge(port=free_port(), scheme="https")

    def record(_sock: ssl.SSLObject, name: str | None, _context: ssl.SSLContext) -> None:
        edge.snis.append(name)

    config = Config()
    make_context = config.create_ssl_context

    def recording_context() -> ssl.SSLContext:
        context: ssl.SSLContext = make_context()
        context.sni_callback = record
        return context

    setattr(config, "create_ssl_context", recording_context)  # noqa: B010 - a method
    config.bind = [f"127.0.0.1:{edge.port}"]
    config.certfile, config.keyfile = cert, key
    config.alpn_protocols = ["h2", "http/1.1"]
    stop = asyncio.Event()
    loop = asyncio.new_event_loop()
    app: Any = edge
    thread = threading.Thread(target=loop.run_until_complete,
                              args=(serve(app, config, shutdown_trigger=stop.wait),),
                              daemon=True)
    thread.start()
    try:
        wait_for(lambda: accepting(edge.port), 20, "the edge upstream")
        yield edge
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)


class Listener:
    """A TCP listener on a free loopback port that hands each connection it accepts to
    ``handle`` in a thread of its own; a subclass sets its own state first."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = int(self.listener.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self.handle, args=(connection,), daemon=True).start()

    def handle(self, connection: socket.socket) -> None:
        """Serve one accepted connection (the subclass's job)."""
        raise NotImplementedError

    def close(self) -> None:
        self.listener.close()


class Sink(Listener):
    """A plain TCP listener that records every byte sent to it (and answers nothing)."""

    def __init__(self) -> None:
        self.received = bytearray()
        self._lock = threading.Lock()
        super().__init__()

    def handle(self, connection: socket.socket) -> None:
        with connection:
            connection.settimeout(30)
            with contextlib.suppress(OSError):
                while chunk := connection.recv(65536):
                    with self._lock:
                        self.received += chunk


class Raw(Listener):
    """A TLS upstream that writes scripted bytes, well-formed or not, once it got the
    real credential (``/bearer/raw/NAME`` picks the script; anything else gets 401)."""

    def __init__(self, cert: str, key: str) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.authorised = 0
        super().__init__()

    def handle(self, connection: socket.socket) -> None:
        with contextlib.suppress(OSError), connection:
            connection.settimeout(30)
            with self.context.wrap_socket(connection, server_side=True) as tls:
                head = bytearray()
                while b"\r\n\r\n" not in head and (chunk := tls.recv(65536)):
                    head += chunk
                lines = bytes(head).split(b"\r\n")
                headers = {k.strip().lower(): v.strip() for k, _, v in
                           (line.partition(b":") for line in lines[1:])}
                if headers.get(b"authorization") != f"Bearer {SECRET}".encode():
                    tls.sendall(b"HTTP/1.1 401 No\r\nContent-Length: 0\r\n\r\n")
                    return
                self.authorised += 1
                name = lines[0].split(b" ")[1].rsplit(b"/", 1)[1].decode()
                tls.sendall(raw_reply(name, headers))
                with contextlib.suppress(OSError):  # let the proxy read it all first
                    tls.settimeout(5)
                    tls.recv(1)


def ws_frame(opcode: int, payload: bytes) -> bytes:
    """An unmasked WebSocket frame (server to client) with a short payload."""
    assert len(payload) < 126
    return bytes([0x80 | opcode, len(payload)]) + payload


def raw_reply(name: str, headers: dict[bytes, bytes]) -> bytes:
    """The scripted bytes of ``/bearer/raw/NAME``: each quotes the credential somewhere a
    proxy might pass on without reading it as a body or a header value."""
    secret = SECRET.encode()
    if name == "header-line":  # a header line without a colon
        return b"HTTP/1.1 200 OK\r\nX-Echo " + secret + b"\r\n\r\n"
    if name == "status-line":
        return b"HTTP/1.1 2" + secret + b" OK\r\nContent-Length: 0\r\n\r\n"
    if name == "cut-head":  # the connection closes in the middle of the head
        return b"HTTP/1.1 200 OK\r\nX-Echo: " + secret + b"\r\n"
    if name == "header-name":
        return (b"HTTP/1.1 200 OK\r\nX-" + secret + b": 1\r\n"
                b"Content-Length: 2\r\n\r\nok")
    if name.startswith("ws-"):
        import hashlib

        accept = base64.b64encode(hashlib.sha1(
            headers.get(b"sec-websocket-key", b"") +
            b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        handshake = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept +
                     b"\r\n\r\n")
        if name == "ws-ping":
            return handshake + ws_frame(0x9, b"p " + secret) + ws_frame(
                0x8, (1000).to_bytes(2, "big"))
        return handshake + ws_frame(0x8, (1000).to_bytes(2, "big") + b"bye " + secret)
    raise AssertionError(name)


# -- the attacking client -------------------------------------------------------------


@dataclass
class Reply:
    status: int  # 0: no HTTP answer (the connection failed; ``error`` says how)
    headers: list[tuple[str, str]]
    body: bytes
    error: str = ""

    def header(self, name: str) -> str | None:
        found = [v for k, v in self.headers if k.lower() == name]
        return ", ".join(found) if found else None


def _read_all(sock: socket.socket) -> bytes:
    data = bytearray()
    with contextlib.suppress(ssl.SSLZeroReturnError, ssl.SSLEOFError, ConnectionError):
        while chunk := sock.recv(65536):
            data += chunk
    return bytes(data)


def _parse(data: bytes) -> Reply:
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/"):
        return Reply(0, [], data, "no HTTP answer")
    headers = [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])]
    reply = Reply(int(lines[0].split()[1]), headers, rest)
    if (reply.header("transfer-encoding") or "").lower().endswith("chunked"):
        body, rest = bytearray(), reply.body
        while rest:
            size, _, rest = rest.partition(b"\r\n")
            length = int(size.split(b";")[0], 16)
            if not length:
                break
            body += rest[:length]
            rest = rest[length + 2:]
        reply.body = bytes(body)
    return reply


def probe(proxy_port: int, lines: list[str], *, connect: str | None = None,
          tls: bool = False, sni: str | None = None, cafile: str | None = None,
          close: bool = True) -> Reply:
    """One request through the proxy as a child could send it: an optional CONNECT,
    optional TLS with any SNI (verified against ``cafile`` when given), then ``lines``."""
    try:
        sock: socket.socket = socket.create_connection(("127.0.0.1", proxy_port), timeout=20)
    except OSError as exc:
        return Reply(0, [], b"", type(exc).__name__)
    try:
        if connect is not None:
            sock.sendall(f"CONNECT {connect} HTTP/1.1\r\nHost: {connect}\r\n\r\n".encode())
            answer = bytearray()
            while b"\r\n\r\n" not in answer and (chunk := sock.recv(1)):
                answer += chunk
            status = int(answer.split()[1]) if answer.startswith(b"HTTP/") else 0
            if status != 200:  # the proxy keeps the connection: read the body by length
                refused = _parse(bytes(answer))
                length = int(refused.header("content-length") or 0)
                while len(refused.body) < length and (chunk := sock.recv(length)):
                    refused.body += chunk
                refused.error = "CONNECT refused"
                return refused
        if tls:
            if cafile is not None:
                context = ssl.create_default_context(cafile=cafile)
            else:  # an attacker does not care whom it talks to
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            sock = context.wrap_socket(sock, server_hostname=sni)
        ending = ["Connection: close"] if close else []
        sock.sendall(("\r\n".join([*lines, *ending, "", ""])).encode())
        return _parse(_read_all(sock))
    except (OSError, ssl.SSLError) as exc:
        return Reply(0, [], b"", type(exc).__name__)
    finally:
        sock.close()


# -- the rig: upstreams, store, services, the proxy -----------------------------------


@dataclass
class Rig:
    port: int  # the proxy's
    edge: Edge
    sink: Sink
    keys: FileKeys
    placeholders: dict[str, str]
    ca: str  # the proxy CA's certificate: what a child trusts
    edge_ca: str
    store: str
    proxy: Any  # the RunningProxy
    raw: Raw

    def authorised(self) -> list[Seen]:
        return [s for s in self.edge.seen if s.headers.get("authorization") ==
                f"Bearer {SECRET}"]

    def bearer(self, service: str) -> str:
        return f"Authorization: Bearer {self.placeholders[service]}"

    def audit(self) -> list[Any]:
        return [e for e in self.keys.audit.read().events
                if e.event in ("gateway_call", "proxy_blocked")]

    def reset(self) -> int:
        """Forget what the upstreams saw; the audit lines so far (to skip)."""
        self.edge.seen.clear()
        self.edge.snis.clear()
        self.sink.received.clear()
        return len(self.audit())


SERVICES = {  # name: (base URL template, extra options)
    "edge": ("https://localhost:{edge}/bearer", ["--websocket", "allow"]),
    "sink": ("https://127.0.0.1:{sink}/bearer", []),
    "limited": ("https://127.0.0.1:{edge}/bearer", ["--rate-limit", "2/hour"]),
    "raw": ("https://localhost:{raw}/bearer", ["--websocket", "allow"]),
}


def add_services(store: str, edge: int, sink: int, names: list[str], raw: int = 0) -> None:
    for name in names:
        url, extra = SERVICES[name]
        added = run_cli_process("--store", store, "service", "add", name, "--base-url",
                                url.format(edge=edge, sink=sink, raw=raw), "--auth", "bearer",
                                "--secret", "env:GW_SECRET", "--env",
                                f"{name.upper()}_KEY", "--allow", "GET /bearer/**", *extra,
                                env={"GW_SECRET": SECRET})
        assert added.returncode == 0, added.stderr


@pytest.fixture(scope="module")
def edge_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, str]:
    return issue_certificates(tmp_path_factory.mktemp("edge"), "edge", "edge test CA", "edge",
                              EDGE_NAMES)


@pytest.fixture(scope="module")
def edge(edge_files: tuple[str, str, str]) -> Iterator[Edge]:
    with running_edge(edge_files[1], edge_files[2]) as running:
        yield running


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory, edge: Edge,
        edge_files: tuple[str, str, str]) -> Iterator[Rig]:
    from mcp_keys.gateway.interceptor.addon import SwapAddon
    from mcp_keys.gateway.interceptor.ca import LocalCA, service_hosts
    from mcp_keys.gateway.interceptor.run import RunningProxy, placeholder_for
    from mcp_keys.gateway.serve import make_gateway
    from mcp_keys.gateway.server import CallerSource

    home = tmp_path_factory.mktemp("rig")
    keys = FileKeys(home / "store" / "keys.json")
    keys.init()
    store = str(keys.store.path)
    sink = Sink()
    raw = Raw(edge_files[1], edge_files[2])
    add_services(store, edge.port, sink.port, list(SERVICES), raw.port)
    key = keys.create("tls", scopes=[f"gateway:{name}" for name in SERVICES])
    saved = os.environ.get("GW_SECRET")
    os.environ["GW_SECRET"] = SECRET  # what the env: references read, in this process
    gateway, validator = make_gateway(store, front="proxy")
    services = gateway.config.current().services
    placeholders = {name: placeholder_for(services[name].placeholder) for name in SERVICES}
    authority = LocalCA(Path(store).parent)
    authority.ensure(service_hosts(services))
    confdir = home / "mitmproxy"
    confdir.mkdir(mode=0o700)
    (confdir / "mitmproxy-ca.pem").write_bytes(authority.key_path.read_bytes() +
                                               authority.cert_path.read_bytes())
    proxy = RunningProxy(SwapAddon(gateway, CallerSource(validator, key.key), placeholders),
                         confdir, edge_files[0])
    proxy.start()
    try:
        yield Rig(proxy.port, edge, sink, keys, placeholders, str(authority.cert_path),
                  edge_files[0], store, proxy, raw)
    finally:
        proxy.stop()
        sink.close()
        raw.close()
        if saved is None:
            os.environ.pop("GW_SECRET", None)
        else:
            os.environ["GW_SECRET"] = saved


def get(rig: Rig, path: str, service: str = "edge", host: str | None = None) -> list[str]:
    host = host or f"localhost:{rig.edge.port}"
    return [f"GET {path} HTTP/1.1", f"Host: {host}", rig.bearer(service)]


# -- item 2: scheme, TLS and the service's own name ------------------------------------


def test_the_credential_goes_only_to_the_service_by_its_name(rig: Rig) -> None:
    """Domain fronting and its cousins: another SNI, another Host, no SNI, an absolute
    URI naming another host inside the tunnel, two Host headers, a forwarded host, an
    IP literal (itself another service) with the service's Host. Only the honest request
    is let through, and every TLS handshake the edge saw asked for the service's name."""
    seen_before = rig.reset()
    edge = f"localhost:{rig.edge.port}"
    other = f"other.localhost:{rig.edge.port}"
    honest = probe(rig.port, get(rig, "/bearer/things/1"), connect=edge, tls=True,
                   sni="localhost", cafile=rig.ca)
    assert honest.status == 200, (honest.status, honest.error, honest.body[:300])
    attacks = {
        "another SNI": probe(rig.port, get(rig, "/bearer/things/1"), connect=edge,
                             tls=True, sni="other.localhost"),
        "another Host": probe(rig.port, get(rig, "/bearer/things/1", host=other),
                              connect=edge, tls=True, sni="localhost"),
        "no SNI": probe(rig.port, get(rig, "/bearer/things/1"), connect=edge, tls=True),
        "absolute URI": probe(rig.port, [f"GET https://{other}/bearer/things/1 HTTP/1.1",
                                         f"Host: {edge}", rig.bearer("edge")],
                              connect=edge, tls=True, sni="localhost"),
        "two Hosts": probe(rig.port, [*get(rig, "/bearer/things/1"), f"Host: {other}"],
                           connect=edge, tls=True, sni="localhost"),
        "X-Forwarded-Host": probe(rig.port, [*get(rig, "/bearer/things/1"),
                                             f"X-Forwarded-Host: {other}"],
                                  connect=edge, tls=True, sni="localhost"),
        "Forwarded: host=": probe(rig.port, [*get(rig, "/bearer/things/1"),
                                             f'Forwarded: for=1.2.3.4;host="{other}"'],
                                  connect=edge, tls=True, sni="localhost"),
        "an address with the service's Host": probe(
            rig.port, get(rig, "/bearer/things/1", service="limited"),
            connect=f"127.0.0.1:{rig.edge.port}", tls=True),
        "an unknown address": probe(rig.port, get(rig, "/bearer/things/1"),
                                    connect=f"127.0.0.2:{rig.edge.port}", tls=True),
    }
    for what, reply in attacks.items():
        assert reply.status in (400, 403), (what, reply.status, reply.error)
        assert_no_secret(reply.body, f"the client ({what})")
    assert len(rig.authorised()) == 1, "only the honest request may carry the credential"
    assert rig.edge.snis and set(rig.edge.snis) <= {"localhost", None}, \
        f"the edge was asked for {sorted(map(str, set(rig.edge.snis)))}"
    refusals = [e for e in rig.audit()[seen_before:] if e.detail.get("decision") == "denied"]
    assert sum("refused:" in e.detail.get("why", "") for e in refusals) >= 7, refusals


def test_plain_http_never_carries_an_https_services_credential(rig: Rig) -> None:
    """An https service's credential over plain HTTP: CONNECT without TLS, an absolute
    http:// URL to its port, an absolute https:// URL sent in the clear. The "sink"
    service's port is a plain TCP listener that records every byte: none is a secret."""
    seen_before = rig.reset()
    sink = f"127.0.0.1:{rig.sink.port}"
    replies = {
        "CONNECT, then plain HTTP": probe(
            rig.port, get(rig, "/bearer/things/1", "sink", sink), connect=sink),
        "absolute http:// to the https port": probe(
            rig.port, [f"GET http://{sink}/bearer/things/1 HTTP/1.1", f"Host: {sink}",
                       rig.bearer("sink")]),
        "absolute https:// in the clear": probe(
            rig.port, [f"GET https://{sink}/bearer/things/1 HTTP/1.1", f"Host: {sink}",
                       rig.bearer("sink")]),
        "CONNECT to the edge, then plain HTTP": probe(
            rig.port, get(rig, "/bearer/things/1"), connect=f"localhost:{rig.edge.port}"),
    }
    for what, reply in replies.items():
        assert_no_secret(reply.body, f"the client ({what})")
        assert reply.status == 403, (what, reply.status, reply.error)
        assert b"over https only" in reply.body, (what, reply.body[:300])
    assert_no_secret(bytes(rig.sink.received), "the plain-text listener")
    assert not rig.authorised()
    decisions = [e.detail.get("decision") for e in rig.audit()[seen_before:]]
    assert decisions.count("denied") == len(replies), decisions


def test_an_unverified_upstream_gets_no_credential(rig: Rig) -> None:
    """Should mitmproxy be told not to verify upstream certificates, no credential goes."""
    rig.reset()
    rig.proxy._master.options.update(ssl_insecure=True)
    try:
        reply = probe(rig.port, get(rig, "/bearer/things/4"),
                      connect=f"localhost:{rig.edge.port}", tls=True, sni="localhost",
                      cafile=rig.ca)
    finally:
        rig.proxy._master.options.update(ssl_insecure=False)
    assert reply.status == 403 and b"ssl_insecure" in reply.body, (reply.status, reply.body)
    assert not rig.authorised()


def test_http2_authority_must_be_the_services_name(rig: Rig) -> None:
    """Over HTTP/2 the name is ``:authority``: another one on the same connection (what
    connection coalescing would do) is refused."""
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("h2")
    rig.reset()
    context = ssl.create_default_context(cafile=rig.ca)
    url = f"https://localhost:{rig.edge.port}/bearer/things/2"
    with httpx.Client(http2=True, proxy=f"http://127.0.0.1:{rig.port}", verify=context,
                      timeout=20) as client:
        honest = client.get(url, headers={"Authorization": f"Bearer "
                                          f"{rig.placeholders['edge']}"})
        fronted = client.get(url, headers={
            "Authorization": f"Bearer {rig.placeholders['edge']}",
            "Host": f"other.localhost:{rig.edge.port}"})
    assert (honest.status_code, honest.http_version) == (200, "HTTP/2"), honest.text
    assert fronted.status_code == 403 and "other.localhost" in fronted.text, fronted.text
    (seen,) = rig.authorised()
    assert seen.http_version == "2"


# -- item 2: responses the proxy cannot read -------------------------------------------


def decoded(reply: Reply) -> bytes:
    """What a client that honours Content-Encoding would read, as far as it can."""
    from mitmproxy.net.encoding import decode

    body = reply.body
    codings = [c.strip() for c in (reply.header("content-encoding") or "").split(",")]
    for coding in reversed([c for c in codings if c and c != "identity"]):
        try:
            result = decode(body, coding)
        except ValueError:
            return body
        body = result if isinstance(result, bytes) else result.encode()
    return body


@pytest.mark.parametrize("name", ["gzip", "deflate", "br", "zstd", "identity", "stacked",
                                  "two-headers", "unknown", "base64", "corrupt"])
def test_responses_the_proxy_cannot_read_are_refused(rig: Rig, name: str) -> None:
    """A body in a coding the proxy decodes is scrubbed and re-encoded; any other
    (unknown, stacked, a Python codec, corrupt) is refused, never forwarded."""
    seen_before = rig.reset()
    reply = probe(rig.port, get(rig, f"/bearer/enc/{name}"),
                  connect=f"localhost:{rig.edge.port}", tls=True, sni="localhost",
                  cafile=rig.ca)
    assert_no_secret(reply.body, "the client (raw body)")
    assert_no_secret(decoded(reply), "the client (decoded body)")
    assert len(rig.authorised()) == 1, "the upstream was asked with the credential"
    (line,) = rig.audit()[seen_before:]
    if name in ("gzip", "deflate", "br", "zstd", "identity"):
        assert reply.status == 200, (reply.status, reply.body[:200])
        assert json.loads(decoded(reply)) == {"token": "[redacted]"}
        assert line.detail["decision"] == "allowed"
    else:
        assert (reply.status == 502 and b"cannot be read" in reply.body) or \
            b"corrupt" in reply.body, (reply.status, reply.body[:300])
        assert line.detail["decision"] == "upstream_error", line.detail


def test_unreadable_transfer_codings_and_protocol_switches() -> None:
    """A compressed transfer coding (mitmproxy would pass it through still compressed)
    and a protocol switch that is not a WebSocket are unreadable too."""
    from mitmproxy import http

    from mcp_keys.gateway.interceptor.binding import unreadable

    chunked = http.Response.make(200, b"x", {"Transfer-Encoding": "chunked"})
    assert unreadable(chunked, websocket=False) is None
    compressed = http.Response.make(200, b"x", {"Transfer-Encoding": "gzip, chunked"})
    assert "transfer encoding" in str(unreadable(compressed, websocket=False))
    switched = http.Response.make(101, b"", {"Upgrade": "h2c"})
    assert "protocol switch" in str(unreadable(switched, websocket=False))
    assert unreadable(http.Response.make(101, b"", {"Upgrade": "websocket"}),
                      websocket=True) is None


def test_an_undecodable_path_is_refused_audited_and_counted(rig: Rig) -> None:
    """``%ff`` is not UTF-8: refused (400) and audited before anything is sent, and it
    counts against the rate limit (2/hour), so the next good request gets 429."""
    seen_before = rig.reset()
    where = f"127.0.0.1:{rig.edge.port}"
    replies = [probe(rig.port, get(rig, path, "limited", where), connect=where, tls=True,
                     sni="127.0.0.1", cafile=rig.ca)  # ssl sends no SNI for an address
               for path in ("/bearer/things/%ff", "/bearer/x%C3%28y", "/bearer/things/3")]
    assert [r.status for r in replies] == [400, 400, 429], [(r.status, r.body[:200])
                                                            for r in replies]
    assert not rig.edge.seen, "nothing reached the upstream"
    lines = rig.audit()[seen_before:]
    assert [e.detail.get("decision") for e in lines] == ["bad_request", "bad_request",
                                                         "rate_limited"]
    assert all(e.detail.get("service") == "limited" and e.key_id for e in lines)


@pytest.mark.parametrize("override", [
    ["X-HTTP-Method-Override: DELETE"], ["x-http-method: DELETE"], ["X-Method-Override: PUT"],
    ["X-Original-URL: /bearer/admin"], "query", "body"])
def test_a_method_or_path_override_is_refused(rig: Rig, override: list[str] | str) -> None:
    """The rules decide on the method and path the proxy sees; a request that asks the
    upstream to act as another method or path is refused (400), audited, never sent."""
    seen_before = rig.reset()
    edge = f"localhost:{rig.edge.port}"
    if override == "query":
        lines = get(rig, "/bearer/things/1?_method=DELETE")
    elif override == "body":
        body = "_method=DELETE"
        lines = ["POST /bearer/things/1 HTTP/1.1", f"Host: {edge}", rig.bearer("edge"),
                 "Content-Type: application/x-www-form-urlencoded",
                 f"Content-Length: {len(body)}", "Connection: close", "", body]
    else:
        assert isinstance(override, list)
        lines = [*get(rig, "/bearer/things/1"), *override]
    reply = probe(rig.port, lines, connect=edge, tls=True, sni="localhost", cafile=rig.ca,
                  close=override != "body")
    assert reply.status == 400 and b"override" in reply.body, (reply.status, reply.body[:200])
    assert not rig.authorised(), "nothing with the credential reached the upstream"
    (line,) = rig.audit()[seen_before:]
    assert line.detail["decision"] == "bad_request", line.detail


# -- item 5: WebSocket messages --------------------------------------------------------


def websocket_messages(rig: Rig) -> list[str | bytes]:
    """Every message the edge's WebSocket sends to a client through the proxy."""
    pytest.importorskip("websockets")
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    context = ssl.create_default_context(cafile=rig.ca)
    received: list[str | bytes] = []
    with connect(f"wss://localhost:{rig.edge.port}/bearer/ws",
                 proxy=f"http://127.0.0.1:{rig.port}", ssl=context, open_timeout=20,
                 additional_headers={"Authorization":
                                     f"Bearer {rig.placeholders['edge']}"}) as ws, \
            contextlib.suppress(ConnectionClosed):
        while True:
            received.append(ws.recv(timeout=20))
    return received


def test_websocket_messages_are_scrubbed(rig: Rig) -> None:
    """A service that allows WebSockets has each message from upstream scrubbed, text
    and binary, compressed on the wire (permessage-deflate) or not."""
    rig.reset()
    messages = websocket_messages(rig)
    assert len(messages) == 2, messages
    for message in messages:
        assert_no_secret(message if isinstance(message, bytes) else message.encode(),
                         "the WebSocket client")
    text, binary = messages
    assert isinstance(text, str) and "[redacted]" in text, text
    assert isinstance(binary, bytes) and b"[redacted]" in binary, binary
    assert [s.method for s in rig.authorised()] == ["WEBSOCKET"]


# -- item 2: every hook fails closed ----------------------------------------------------


def fail_inside(hook: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``Target.of`` raise when called (at any depth) from the hook ``hook``."""
    from mcp_keys.gateway.interceptor.binding import Target

    original = Target.of.__func__  # type: ignore[attr-defined]

    def picky(cls: type[Target], service: Any) -> Target:
        frame = sys._getframe(1)
        while frame is not None:
            if frame.f_code.co_name == hook:
                raise RuntimeError(f"injected {SECRET}")
            frame = frame.f_back  # type: ignore[assignment]
        result: Target = original(cls, service)
        return result

    monkeypatch.setattr(Target, "of", classmethod(picky))


@pytest.mark.parametrize("hook", ["request", "response", "websocket_message",
                                  "tls_clienthello", "server_connect"])
def test_an_exception_in_any_hook_refuses_and_is_audited(
        rig: Rig, monkeypatch: pytest.MonkeyPatch, hook: str) -> None:
    """A fault injected into a step of each hook: the request or message is refused
    (502, or dropped), one audit line says which hook failed, and nothing unscrubbed
    reaches the client (the fault's own text, which quotes the secret, included)."""
    from mcp_keys.gateway.interceptor import addon
    from mcp_keys.gateway.scrub import Scrubber

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError(f"injected {SECRET}")

    if hook == "request":
        monkeypatch.setattr(addon, "binding_problem", broken)
    elif hook == "response":
        monkeypatch.setattr(addon, "unreadable", broken)
    elif hook == "websocket_message":
        original = Scrubber.data

        def on_messages(self: Scrubber, value: bytes) -> bytes:
            if value.startswith(b"ws-"):
                broken()
            return original(self, value)

        monkeypatch.setattr(Scrubber, "data", on_messages)
    else:
        fail_inside(hook, monkeypatch)
    seen_before = rig.reset()
    if hook == "websocket_message":
        assert websocket_messages(rig) == [], "a message passed a failed hook"
    else:
        reply = probe(rig.port, get(rig, "/bearer/leak"), connect=f"localhost:"
                      f"{rig.edge.port}", tls=True, sni="localhost", cafile=rig.ca)
        assert_no_secret(reply.body + str(reply.headers).encode(), "the client")
        assert reply.status == 502, (reply.status, reply.error, reply.body[:300])
    if hook in ("request", "tls_clienthello", "server_connect"):
        assert not rig.authorised(), "the credential left after a failed hook"
    lines = rig.audit()[seen_before:]
    failed = [e for e in lines if hook in e.detail.get("why", "")]
    assert len(failed) == 1, [e.detail for e in lines]
    assert failed[0].detail.get("decision", "proxy_error") == "proxy_error"
    assert_no_secret(json.dumps([e.detail for e in rig.audit()]), "the audit")


# -- through the command ----------------------------------------------------------------


FRONTING_CHILD = r'''
import json, os, sys
sys.path.insert(0, sys.argv[1])
from tests.test_proxy_tls import probe
port = int(os.environ["HTTPS_PROXY"].rsplit(":", 1)[1])
edge, token = sys.argv[2], os.environ["EDGE_KEY"]
lines = [f"GET /bearer/things/7 HTTP/1.1", f"Host: {edge}", f"Authorization: Bearer {token}"]
honest = probe(port, lines, connect=edge, tls=True, sni="localhost",
               cafile=os.environ["SSL_CERT_FILE"])
fronted = probe(port, lines, connect=edge, tls=True, sni="other.localhost")
print(json.dumps({"honest": honest.status, "fronted": fronted.status,
                  "body": fronted.body.decode("latin-1")[:300]}))
'''


def test_run_proxy_refuses_a_fronted_name(edge: Edge, edge_files: tuple[str, str, str],
                                          manager: FileKeys, tmp_path: Path) -> None:
    """The same through ``mcp-keys run --proxy``: the child verifies the proxy with the
    bundle it is given (the CA's leaf for a DNS-named service passes its constraints),
    and its fronted request is refused."""
    manager.init()
    store = str(manager.store.path)
    add_services(store, edge.port, 0, ["edge"])
    key = manager.create("front", scopes=["gateway:edge"])
    edge.seen.clear()
    edge.snis.clear()
    (tmp_path / "child.py").write_text(FRONTING_CHILD)
    env = {**os.environ, "GW_SECRET": SECRET, "MCP_KEYS_STORE": store, "MCP_API_KEY": key.key}
    done = subprocess.run(mcp_keys_cmd("run", "--proxy", "--service", "edge", "--upstream-ca",
                                       edge_files[0], "--", sys.executable,
                                       str(tmp_path / "child.py"),
                                       str(Path(__file__).parent.parent),
                                       f"localhost:{edge.port}"),
                          env=env, capture_output=True, text=True, timeout=90, check=False)
    assert_no_secret(done.stdout + done.stderr, "the command's output")
    assert done.returncode == 0, done.stderr[-1500:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["honest"] == 200 and result["fronted"] == 403, result
    assert "SNI" in result["body"]
    assert len([s for s in edge.seen if s.headers.get("authorization") ==
                f"Bearer {SECRET}"]) == 1
    assert set(edge.snis) <= {"localhost"}, sorted(map(str, set(edge.snis)))


# -- variations: what the first fix let through ----------------------------------------


def test_a_compressed_body_reaches_the_client_as_the_proxy_read_it(rig: Rig) -> None:
    """A gzip body of two members: mitmproxy's decoder reads the first, a client reads
    both. The body the client gets is the one the proxy read and scrubbed (decoded), so
    no decoder of the client's can find more in it than the scrubber saw."""
    import gzip

    rig.reset()
    reply = probe(rig.port, get(rig, "/bearer/enc/gzip-members"),
                  connect=f"localhost:{rig.edge.port}", tls=True, sni="localhost",
                  cafile=rig.ca)
    body = reply.body
    if "gzip" in (reply.header("content-encoding") or ""):
        body = gzip.decompress(body)  # every member, as browsers and urllib3 do
    assert_no_secret(reply.body, "the client (raw body)")
    assert_no_secret(body, "the client (every gzip member)")
    assert reply.status in (200, 502), (reply.status, reply.error)
    assert len(rig.authorised()) == 1


@pytest.mark.parametrize("name", ["header-line", "status-line", "cut-head"])
def test_an_upstream_answer_the_proxy_cannot_parse_is_not_quoted(rig: Rig,
                                                                   name: str) -> None:
    """mitmproxy's own error page quotes the bytes of an answer it cannot parse (a
    header line without a colon, a bad status line, a head cut short); after the
    credential went out, none of that may reach the client: the flow is ended, audited."""
    seen_before = rig.reset()
    before = rig.raw.authorised
    reply = probe(rig.port, get(rig, f"/bearer/raw/{name}", "raw",
                                f"localhost:{rig.raw.port}"),
                  connect=f"localhost:{rig.raw.port}", tls=True, sni="localhost",
                  cafile=rig.ca)
    assert rig.raw.authorised == before + 1, "the upstream was asked with the credential"
    assert_no_secret(reply.body + str(reply.headers).encode(), f"the client ({name})")
    assert reply.status in (0, 502), (reply.status, reply.error)
    lines = rig.audit()[seen_before:]
    assert [e.detail.get("decision") for e in lines] == ["upstream_error"], \
        [e.detail for e in lines]
    assert_no_secret(json.dumps([e.detail for e in lines]), "the audit")


def test_a_secret_in_a_response_header_name_is_removed(rig: Rig) -> None:
    """Header values are scrubbed; a header whose name quotes the credential is dropped."""
    rig.reset()
    reply = probe(rig.port, get(rig, "/bearer/raw/header-name", "raw",
                                f"localhost:{rig.raw.port}"),
                  connect=f"localhost:{rig.raw.port}", tls=True, sni="localhost",
                  cafile=rig.ca)
    assert_no_secret(str(reply.headers), "the client's response headers")
    assert (reply.status, reply.body) == (200, b"ok"), (reply.status, reply.body[:200])


@pytest.mark.parametrize("name", ["ws-close", "ws-ping"])
def test_websocket_control_frames_are_scrubbed(rig: Rig, name: str) -> None:
    """A close frame's reason and a ping's payload are relayed by mitmproxy without the
    message hook; from a WebSocket service they are scrubbed too."""
    rig.reset()
    host = f"localhost:{rig.raw.port}"
    reply = probe(rig.port, [f"GET /bearer/raw/{name} HTTP/1.1", f"Host: {host}",
                             rig.bearer("raw"), "Upgrade: websocket",
                             "Connection: Upgrade", "Sec-WebSocket-Version: 13",
                             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="],
                  connect=host, tls=True, sni="localhost", cafile=rig.ca, close=False)
    assert reply.status == 101, (reply.status, reply.error, reply.body[:200])
    assert reply.body, "the frames after the handshake"
    assert_no_secret(reply.body, f"the WebSocket client ({name})")


def test_a_secret_cannot_be_fetched_in_pieces(rig: Rig) -> None:
    """Byte ranges would hand the client the credential in pieces, none of which the
    scrubber can recognise: a service's requests go without ``Range``, so each answer is
    whole (and scrubbed), and a partial answer is refused."""
    rig.reset()
    edge = f"localhost:{rig.edge.port}"
    pieces = [probe(rig.port, [*get(rig, "/bearer/range"), f"Range: bytes={span}"],
                    connect=edge, tls=True, sni="localhost", cafile=rig.ca)
              for span in ("0-15", "16-99")]
    joined = b"".join(reply.body for reply in pieces)
    assert_no_secret(joined, "the client (the pieces put together)")
    assert [reply.status for reply in pieces] == [200, 200], [r.status for r in pieces]
    assert all(b"[redacted]" in reply.body for reply in pieces)
    assert not any("range" in seen.headers for seen in rig.edge.seen)


def test_a_partial_answer_is_refused() -> None:
    """A 206 the proxy did not ask for is a piece of something it cannot see whole."""
    from mitmproxy import http

    from mcp_keys.gateway.interceptor.binding import unreadable

    piece = http.Response.make(206, b"sk_te", {"Content-Range": "bytes 0-4/40"})
    assert "partial" in str(unreadable(piece, websocket=False))


def test_an_uninvited_protocol_switch_is_refused(rig: Rig) -> None:
    """A WebSocket is relayed only when the request was an upgrade the service allows:
    an upstream that switches on its own (no ``Upgrade`` asked for) is refused. (mitmproxy
    then crashes on the frames that follow; its report, which quotes them, reaches no
    handler of the root logger, where Python would print it to stderr.)"""
    import logging

    class Keep(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.DEBUG)
            self.lines: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.lines.append(logging.Formatter().format(record))

    kept = Keep()
    logging.getLogger().addHandler(kept)
    rig.reset()
    host = f"localhost:{rig.raw.port}"
    try:
        reply = probe(rig.port, ["GET /bearer/raw/ws-close HTTP/1.1", f"Host: {host}",
                                 rig.bearer("raw"), "Sec-WebSocket-Version: 13",
                                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="],
                      connect=host, tls=True, sni="localhost", cafile=rig.ca, close=False)
        # mitmproxy may crash on the frames that follow, after the reply was read (or not
        # at all, when the connection closes first): give its report time to arrive, so
        # that what it logs is checked below
        end = time.monotonic() + 10
        while time.monotonic() < end and not any("mitmproxy has crashed" in line
                                                 for line in kept.lines):
            time.sleep(0.05)
    finally:
        logging.getLogger().removeHandler(kept)
    assert_no_secret(reply.body, "the client")
    assert reply.status in (0, 502), (reply.status, reply.body[:200])
    assert_no_secret("\n".join(kept.lines), "the log")


def as_read(reply: Reply) -> str:
    """The body as a client reads it: in its declared character set, else as JSON
    (which detects UTF-16 and UTF-32 by itself), else by its byte-order mark."""
    kind = reply.header("content-type") or ""
    declared = kind.partition("charset=")[2].strip()
    if declared:
        return reply.body.decode(declared, "replace")
    if reply.body.startswith(b"\xff\xfe"):
        return reply.body.decode("utf-16", "replace")
    try:
        return json.dumps(json.loads(reply.body))
    except ValueError:
        return reply.body.decode("latin-1")


@pytest.mark.parametrize("name", sorted(CHARSETS))
def test_a_body_in_another_character_set_is_scrubbed_or_refused(rig: Rig,
                                                                 name: str) -> None:
    """A byte-wise scrubber does not see the credential spelled in UTF-16, UTF-32, UTF-7
    or EBCDIC: a character set declared that does not spell ASCII as ASCII is refused,
    and the wide spellings a client detects unasked are scrubbed."""
    rig.reset()
    reply = probe(rig.port, get(rig, f"/bearer/enc/{name}"),
                  connect=f"localhost:{rig.edge.port}", tls=True, sni="localhost",
                  cafile=rig.ca)
    assert len(rig.authorised()) == 1, "the upstream was asked with the credential"
    assert_no_secret(as_read(reply), f"the client ({name})")
    if CHARSETS[name]:
        assert reply.status == 502 and b"character set" in reply.body, reply.status
    else:
        assert reply.status == 200 and "[redacted]" in as_read(reply), reply.status


def test_websockets_are_refused_if_control_frames_cannot_be_scrubbed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The control-frame scrubbing wraps a mitmproxy internal; should a mitmproxy lack it,
    the addon knows (and then refuses every WebSocket upgrade)."""
    from mitmproxy.proxy.layers import websocket

    from mcp_keys.gateway.interceptor.addon import _guard_control_frames

    assert _guard_control_frames()
    monkeypatch.delattr(websocket.WebsocketConnection, "send2")
    assert not _guard_control_frames()
