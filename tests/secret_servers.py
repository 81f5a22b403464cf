"""Real peers for the secret sources: moto's server for AWS, a KV v2 server that follows
Vault's documented wire format (a real ``vault`` is used instead when it is on PATH), and
a loopback upstream whose accepted token changes mid-test."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOKEN = "s.test-root-token"


@dataclass
class KvServer:
    """``/v1/<mount>/data/<path>`` (GET, POST/PUT) and ``/v1/auth/approle/login``, with
    Vault's status codes: 403 without a valid token, 404 for a missing secret."""

    secrets: dict[str, dict[str, str]] = field(default_factory=dict)
    approle: tuple[str, str] = ("role-1", "secret-1")
    namespace: str | None = None
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    address: str = ""

    def serve(self) -> Iterator[KvServer]:
        kv = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorised(self) -> bool:
                kv.requests.append((self.command, self.path,
                                    self.headers.get("X-Vault-Namespace")))
                if kv.namespace and self.headers.get("X-Vault-Namespace") != kv.namespace:
                    return False
                return self.headers.get("X-Vault-Token") == TOKEN

            def do_GET(self) -> None:
                if not self._authorised():
                    self._answer(403, {"errors": ["permission denied"]})
                    return
                key = self.path.removeprefix("/v1/")
                mount, _, rest = key.partition("/data/")
                found = kv.secrets.get(f"{mount}/{rest}")
                if found is None:
                    self._answer(404, {"errors": []})
                    return
                self._answer(200, {"data": {"data": found, "metadata": {"version": 1}}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.path == "/v1/auth/approle/login":
                    kv.requests.append(("POST", self.path, None))
                    if (body.get("role_id"), body.get("secret_id")) == kv.approle:
                        self._answer(200, {"auth": {"client_token": TOKEN,
                                                    "lease_duration": 3600}})
                    else:
                        self._answer(400, {"errors": ["invalid role or secret ID"]})
                    return
                if not self._authorised():
                    self._answer(403, {"errors": ["permission denied"]})
                    return
                mount, _, rest = self.path.removeprefix("/v1/").partition("/data/")
                kv.secrets[f"{mount}/{rest}"] = dict(body.get("data", {}))
                self._answer(200, {"data": {"version": 1}})

            do_PUT = do_POST

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        self.address = f"http://127.0.0.1:{httpd.server_address[1]}"
        try:
            yield self
        finally:
            httpd.shutdown()
            httpd.server_close()


@dataclass
class Upstream:
    """An API that accepts only ``Authorization: Bearer <accepted>``, counting calls."""

    accepted: str
    calls: list[str] = field(default_factory=list)
    address: str = ""

    def serve(self) -> Iterator[Upstream]:
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                sent = self.headers.get("Authorization", "")
                ok = sent == f"Bearer {upstream.accepted}"
                upstream.calls.append("ok" if ok else "401")
                self.send_response(200 if ok else 401)
                self.send_header("Content-Length", "0")
                self.end_headers()

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        self.address = f"http://127.0.0.1:{httpd.server_address[1]}"
        try:
            yield self
        finally:
            httpd.shutdown()
            httpd.server_close()
