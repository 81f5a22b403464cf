"""A real upstream API for the gateway tests: a small ASGI app under uvicorn on
127.0.0.1 that accepts only the credential the gateway should inject, for each auth
kind, and records every request it receives (so a test can prove that a refused call
never reached it, and that an allowed one carried the credential)."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from tests.conftest import free_port

SECRET = "sk_test_gw_5f3a9c2e7d1b4a6f8e0c"
USER, PASSWORD = "svc-user", "pw_9d8c7b6a5f4e3d2c"


@dataclass
class Seen:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes
    http_version: str = "1.1"


@dataclass
class Upstream:
    port: int = 0
    scheme: str = "http"
    seen: list[Seen] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def authorised(self, kind: str, request: Seen) -> bool:
        headers = request.headers
        if kind == "bearer":
            return headers.get("authorization") == f"Bearer {SECRET}"
        if kind == "basic":
            token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            return headers.get("authorization") == f"Basic {token}"
        if kind == "header":
            return headers.get("x-api-key") == SECRET
        if kind == "query":
            return ("api_key", SECRET) in request.query
        return False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = Seen(scope["method"], scope["path"],
                       parse_qsl(scope["query_string"].decode(), keep_blank_values=True),
                       {k.decode().lower(): v.decode() for k, v in scope["headers"]}, body,
                       scope.get("http_version", "1.1"))
        self.seen.append(request)
        parts = request.path.split("/")
        kind = parts[1] if len(parts) > 1 else ""
        action = parts[2] if len(parts) > 2 else ""
        headers = [(b"content-type", b"application/json")]
        if not self.authorised(kind, request):
            await self.reply(send, 401, {"error": "bad credential"}, headers)
            return
        if action == "slow":
            await asyncio.sleep(5)
        if action == "leak":  # an upstream that echoes the credential back
            headers += [(b"set-cookie", b"session=abc"), (b"x-echo", SECRET.encode())]
            await self.reply(send, 200, {"token": SECRET, "auth": request.headers.get(
                "authorization", "")}, headers)
            return
        if action == "redirect":
            await self.reply(send, 302, {}, [(b"location", b"http://evil.example/steal")])
            return
        if action == "big":
            await self.reply(send, 200, {"data": "x" * 300_000}, headers)
            return
        if action == "binary":
            await self.reply_raw(send, 200, bytes(range(256)),
                                 [(b"content-type", b"application/octet-stream")])
            return
        await self.reply(send, 200, {"ok": True, "method": request.method,
                                     "path": request.path, "body": body.decode(errors="replace")},
                         headers)

    async def reply(self, send: Any, status: int, data: Any, headers: list[Any]) -> None:
        await self.reply_raw(send, status, json.dumps(data).encode(), headers)

    async def reply_raw(self, send: Any, status: int, body: bytes, headers: list[Any]) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


@contextmanager
def running_upstream(certfile: str | None = None, keyfile: str | None = None,
                     upstream: Upstream | None = None) -> Iterator[Upstream]:
    """The upstream (or the given subclass instance) under uvicorn in a thread, on a free
    loopback port (HTTPS when given a certificate)."""
    import uvicorn

    upstream = upstream or Upstream()
    upstream.port, upstream.scheme = free_port(), "https" if certfile else "http"
    server = uvicorn.Server(uvicorn.Config(upstream, host="127.0.0.1", port=upstream.port,
                                           log_level="error", lifespan="off",
                                           ssl_certfile=certfile, ssl_keyfile=keyfile))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test upstream did not start")
        time.sleep(0.02)
    try:
        yield upstream
    finally:
        server.should_exit = True
        thread.join(10)


def issue_certificates(directory: Path, prefix: str = "up", ca_name: str = "upstream test CA",
                       leaf_name: str = "127.0.0.1",
                       dns_names: tuple[str, ...] = ()) -> tuple[str, str, str]:
    """A private CA and a leaf it signs for ``dns_names`` and 127.0.0.1, written under
    ``directory`` as PEM (paths: ca, cert, key), for an HTTPS upstream on loopback."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_name)])
    ca = (x509.CertificateBuilder().subject_name(issuer).issuer_name(issuer)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(hours=1))
          .not_valid_after(now + dt.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, leaf_name)]))
            .issuer_name(issuer).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .sign(ca_key, hashes.SHA256()))
    files = tuple(directory / f"{prefix}-{part}.pem" for part in ("ca", "cert", "key"))
    files[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    files[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(files[0]), str(files[1]), str(files[2])
