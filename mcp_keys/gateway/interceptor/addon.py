"""The mitmproxy addon behind ``run --proxy``: only the services' hosts are reachable;
on them the placeholder becomes the real credential (in the header or query parameter
the auth kind uses, never a body or path), the service's rules decide, responses are
scrubbed, and each request is one ``gateway_call`` audit line with ``front: "proxy"``."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from ..hygiene import Refused, normalise_path
from ..proxy import Denied

if TYPE_CHECKING:
    from ..model import Service
    from ..proxy import Caller, Gateway
    from ..server import CallerSource


class SwapAddon:
    def __init__(self, gateway: Gateway, callers: CallerSource,
                 placeholders: dict[str, str]) -> None:
        self.gateway = gateway
        self.callers = callers
        self.placeholders = placeholders  # service name -> this run's placeholder

    def __repr__(self) -> str:
        return f"SwapAddon({sorted(self.placeholders)})"

    # -- which service ----------------------------------------------------------------

    def _service(self, host: str, port: int) -> Service | None:
        from urllib.parse import urlsplit

        for name in self.placeholders:
            service = self.gateway.config.current().services.get(name)
            if service is None or service.kind != "http":
                continue
            parts = urlsplit(service.base_url)
            wanted = parts.port or (443 if parts.scheme == "https" else 80)
            if (parts.hostname or "").lower() == host.lower() and wanted == port:
                return service
        return None

    def _refuse(self, flow: Any, status: int, message: str, **detail: Any) -> None:
        from mitmproxy import http

        body = json.dumps({"error": message, **{k: v for k, v in detail.items()
                                                 if k == "rule"}}).encode()
        flow.response = http.Response.make(status, body,
                                           {"Content-Type": "application/json"})

    def _caller(self) -> Caller | None:
        try:
            return self.callers.current()
        except Exception:  # the key was revoked or the store is away: refuse
            return None

    # -- mitmproxy hooks --------------------------------------------------------------

    def http_connect(self, flow: Any) -> None:
        host, port = flow.request.host, flow.request.port
        if self._service(host, port) is None:
            self._block(flow, host, port)

    def _block(self, flow: Any, host: str, port: int) -> None:
        caller = self._caller()
        if self.gateway.audit is not None:
            self.gateway.audit.append("proxy_blocked", key_id=caller.key_id if caller else None,
                                      detail={"front": "proxy", "host": host[:255],
                                              "port": port})
        self._refuse(flow, 403, f"{host}:{port} is not a service of this mcp-keys proxy")

    def request(self, flow: Any) -> None:
        if flow.response is not None:  # already refused at CONNECT
            return
        request = flow.request
        started = time.perf_counter()
        service = self._service(request.host, request.port)
        if service is None:
            self._block(flow, request.host, request.port)
            return
        detail: dict[str, Any] = {"front": "proxy", "service": service.name,
                                  "method": request.method}
        flow.metadata["mcp_keys"] = (started, detail)
        caller = self._caller()
        if caller is None:
            detail.update(decision="denied", why="the mcp-keys key is not valid")
            self._audit(None, detail, started)
            self._refuse(flow, 403, "the mcp-keys key of this proxy is no longer valid")
            return
        try:
            path = normalise_path(request.path.split("?", 1)[0])
        except Refused as exc:
            detail.update(decision="bad_request", why=str(exc))
            self._audit(caller, detail, started)
            self._refuse(flow, 400, f"refused: {exc}")
            return
        detail["path"] = path
        try:
            if request.headers.get("upgrade", "").lower() == "websocket" and \
                    not service.websocket:
                raise Denied("denied", f"WebSocket upgrades to {service.name} are not "
                             "allowed (service edit --websocket allow)")
            service = self.gateway.service(caller, service.name)  # scope, enabled, file
            allowed, why = service.decide(request.method, path, caller.scopes)
            if not allowed:
                raise Denied("denied", why)
            self.gateway._take(caller, service)
            secret = self.gateway.secrets.get(service.secret).reveal()
        except Denied as exc:
            detail.update(decision=exc.decision, why=str(exc))
            self._audit(caller, detail, started)
            status = 429 if exc.decision == "rate_limited" else 403
            self._refuse(flow, status, str(exc), rule=str(exc))
            return
        except Exception as exc:  # the credential could not be read: fail closed
            detail.update(decision="upstream_error", why=type(exc).__name__)
            self._audit(caller, detail, started)
            self._refuse(flow, 502, f"the credential for {service.name} could not be read")
            return
        detail["rule"] = why
        query = request.path.partition("?")[2]
        request.path = path + ("?" + query if query else "")  # what the rules matched
        self._swap(service, request, self.placeholders[service.name], secret)
        flow.metadata["mcp_keys"] = (started, detail, caller,
                                     self.gateway.scrubber(service, secret))

    @staticmethod
    def _swap(service: Service, request: Any, placeholder: str, secret: str) -> None:
        """The placeholder becomes the secret where the auth kind puts the credential."""
        kind, _, name = service.auth.partition(":")
        if kind == "bearer":
            value = request.headers.get("authorization", "")
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip() == placeholder:
                request.headers["authorization"] = f"Bearer {secret}"
        elif kind == "header":
            if request.headers.get(name, "") == placeholder:
                request.headers[name] = secret
        elif kind == "query":
            if request.query.get(name) == placeholder:
                request.query[name] = secret
        elif kind == "basic":
            import base64

            value = request.headers.get("authorization", "")
            scheme, _, token = value.partition(" ")
            try:
                user, _, word = base64.b64decode(token).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return
            if scheme.lower() == "basic" and placeholder in (user, word):
                request.headers["authorization"] = "Basic " + base64.b64encode(
                    secret.encode()).decode()

    def response(self, flow: Any) -> None:
        meta = flow.metadata.get("mcp_keys")
        if meta is None or len(meta) < 4:
            return
        started, detail, caller, scrub = meta
        response = flow.response
        for name in ("set-cookie", "set-cookie2"):
            response.headers.pop(name, None)
        for name, value in list(response.headers.items()):
            cleaned = scrub.text(value)
            if cleaned != value:
                response.headers[name] = cleaned
        content = response.content or b""
        cleaned_body = scrub.data(content)
        if cleaned_body != content:
            response.content = cleaned_body
        detail.update(decision="allowed", status=response.status_code,
                      bytes_in=len(content), bytes_out=len(flow.request.content or b""))
        self._audit(caller, detail, started)

    def error(self, flow: Any) -> None:
        meta = flow.metadata.get("mcp_keys")
        if meta is None or len(meta) < 4:
            return
        started, detail, caller, _ = meta
        detail.update(decision="upstream_error", why=type(flow.error).__name__)
        self._audit(caller, detail, started)

    def _audit(self, caller: Caller | None, detail: dict[str, Any], started: float) -> None:
        detail["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
        if self.gateway.audit is not None:
            self.gateway.audit.append("gateway_call",
                                      key_id=caller.key_id if caller else None, detail=detail)
