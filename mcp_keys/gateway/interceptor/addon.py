"""The mitmproxy addon behind ``run --proxy``: only the services' hosts are reachable;
on them the placeholder becomes the real credential (in the header or query parameter
the auth kind uses, never a body or path), the service's rules decide, responses are
scrubbed, and each request is one ``gateway_call`` audit line with ``front: "proxy"``.

The credential travels only to the service, by its name, over its scheme: a request
must arrive over the service's scheme (inside TLS for an ``https`` service), name the
service's host in its TLS SNI, ``Host`` and ``:authority``, and the upstream connection
is made with the service's host as its SNI. Every hook fails closed: an exception
refuses the request (502) and is audited, where mitmproxy would log it and go on."""

from __future__ import annotations

import functools
import json
import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..hygiene import Refused, check_overrides, normalise_path
from ..proxy import Denied
from ..scrub import REDACTED
from .binding import PIECEMEAL, Target, binding_problem, unreadable, wide

if TYPE_CHECKING:
    from ..model import Service
    from ..proxy import Caller, Gateway
    from ..scrub import Scrubber
    from ..server import CallerSource

CALL = "mcp_keys"  # flow.metadata key: this addon's _Call
log = logging.getLogger("mcp_keys.proxy")
_CONTROL: dict[str, Scrubber] = {}  # client connection id -> its WebSocket's scrubber
_USED: weakref.WeakSet[Scrubber] = weakref.WeakSet()  # every credential's, for the log


class _MitmproxyLog(logging.Handler):
    """mitmproxy's own log, kept off stderr: its crash reports quote what it crashed on
    (an upstream's answer, say). Each warning or error becomes one ``mcp_keys.proxy``
    line, scrubbed of every credential swapped in so far, without the exception's text."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a malformed record: say only that there was one
            text = "(a message that could not be formatted)"
        for scrub in list(_USED):
            text = scrub.text(text)
        if record.exc_info and record.exc_info[0] is not None:
            text += f" ({record.exc_info[0].__name__})"
        log.log(record.levelno, "mitmproxy: %s", text[:300])


def _quiet_mitmproxy() -> None:
    """Route mitmproxy's log through ``_MitmproxyLog`` (once per process)."""
    logger = logging.getLogger("mitmproxy")
    if not any(isinstance(h, _MitmproxyLog) for h in logger.handlers):
        logger.addHandler(_MitmproxyLog(logging.WARNING))
    logger.propagate = False


@dataclass(slots=True)
class _Call:
    """What this addon knows about one flow, for the hooks that follow the request."""

    started: float
    detail: dict[str, Any]
    caller: Caller | None = None
    scrub: Scrubber | None = None  # set once the credential was swapped in
    refused: bool = False  # the response is this addon's refusal
    websocket: bool = False  # the request was an allowed WebSocket upgrade
    wide: list[tuple[bytes, bytes]] = field(default_factory=list)  # UTF-16/32 forms

    def clean(self, data: bytes) -> bytes:
        """``data`` scrubbed of the credential: its wide spellings first become the marker
        in their own encoding (so a UTF-16 body still reads as one), then the scrubber
        takes every spelling it knows, wide ones included."""
        assert self.scrub is not None
        for form, redacted in self.wide:
            if form in data:
                data = data.replace(form, redacted)
        return self.scrub.data(data)
    broken: bool = False  # a hook failed: nothing more passes


def _guarded(hook: Callable[[SwapAddon, Any], None]) -> Callable[[SwapAddon, Any], None]:
    """Runs ``hook``; any exception refuses what the hook was about, and is audited.
    (mitmproxy itself would log the exception and let the flow go on, unscrubbed.)"""

    @functools.wraps(hook)
    def run(self: SwapAddon, data: Any) -> None:
        try:
            hook(self, data)
        except Exception as exc:
            self._failed(hook.__name__, data, exc)

    return run


def _guard_control_frames() -> bool:
    """mitmproxy relays a WebSocket's pings, pongs and close frame itself, with no hook:
    its sender is wrapped so that those going to a client whose WebSocket carried a
    credential are scrubbed too. False if mitmproxy no longer has that sender (then no
    WebSocket is allowed)."""
    try:
        from mitmproxy.proxy.layers import websocket
    except ImportError:
        return False
    WebsocketConnection: Any = getattr(websocket, "WebsocketConnection", None)
    send = getattr(WebsocketConnection, "send2", None)
    events = getattr(getattr(websocket, "wsproto", None), "events", None)
    if send is None or events is None:
        return False
    Ping, Pong, CloseConnection = events.Ping, events.Pong, events.CloseConnection
    if getattr(send, "_mcp_keys", False):
        return True

    def send2(self: Any, event: Any) -> Any:
        scrub = _CONTROL.get(getattr(self.conn, "id", ""))
        if scrub is not None and isinstance(event, (Ping, Pong)):
            event = type(event)(payload=scrub.data(bytes(event.payload))[:125])
        elif scrub is not None and isinstance(event, CloseConnection) and event.reason:
            reason = scrub.text(event.reason).encode()[:123]
            event = CloseConnection(event.code, reason.decode("utf-8", "ignore"))
        return send(self, event)

    send2._mcp_keys = True  # type: ignore[attr-defined]
    WebsocketConnection.send2 = send2
    return True


class SwapAddon:
    def __init__(self, gateway: Gateway, callers: CallerSource,
                 placeholders: dict[str, str]) -> None:
        self.gateway = gateway
        self.callers = callers
        self.placeholders = placeholders  # service name -> this run's placeholder
        self._broken: set[str] = set()  # client connections a connection hook failed on
        self._control = _guard_control_frames()
        _quiet_mitmproxy()

    def __repr__(self) -> str:
        return f"SwapAddon({sorted(self.placeholders)})"

    # -- which service ----------------------------------------------------------------

    def _service(self, host: str | None, port: int | None) -> Service | None:
        if not host or port is None:
            return None
        for name in self.placeholders:
            service = self.gateway.config.current().services.get(name)
            if service is None or service.kind != "http":
                continue
            target = Target.of(service)
            if target.host == host.lower() and target.port == port:
                return service
        return None

    def _refuse(self, flow: Any, status: int, message: str) -> None:
        """Answer the flow with ``status`` from here: nothing is sent upstream."""
        from mitmproxy import http

        body = json.dumps({"error": message}).encode()
        flow.response = http.Response.make(status, body,
                                           {"Content-Type": "application/json"})
        call = flow.metadata.get(CALL)
        if isinstance(call, _Call):
            call.refused = True
        else:
            flow.metadata[CALL] = _Call(time.perf_counter(), {}, refused=True)

    def _caller(self) -> Caller | None:
        try:
            return self.callers.current()
        except Exception:  # the key was revoked or the store is away: refuse
            return None

    # -- connections ------------------------------------------------------------------

    @_guarded
    def http_connect(self, flow: Any) -> None:
        host, port = flow.request.host, flow.request.port
        if self._service(host, port) is None:
            self._block(flow, host, port)

    def _block(self, flow: Any, host: str, port: int) -> None:
        self._refuse(flow, 403, f"{host}:{port} is not a service of this mcp-keys proxy")
        self._blocked_line(self._caller(), host, port)

    def _blocked_line(self, caller: Caller | None, host: str, port: int,
                      why: str | None = None) -> None:
        if self.gateway.audit is not None:
            detail: dict[str, Any] = {"front": "proxy", "host": str(host)[:255],
                                      "port": port}
            if why:
                detail["why"] = why
            self.gateway.audit.append("proxy_blocked",
                                      key_id=caller.key_id if caller else None,
                                      detail=detail)

    @_guarded
    def tls_clienthello(self, data: Any) -> None:
        """The upstream TLS name is the service's own, whatever the client sent (the
        request is then refused if the client's differs)."""
        server = data.context.server
        service = self._service(*(server.address or (None, None)))
        if service is not None and server.sni is None:
            target = Target.of(service)
            server.sni = target.host

    @_guarded
    def server_connect(self, data: Any) -> None:
        """The last line: no upstream connection but to a service, by its name."""
        server = data.server
        service = self._service(*(server.address or (None, None)))
        if service is None:
            server.error = "not a service of this mcp-keys proxy"
        elif server.sni is not None and not Target.of(service).sni_ok(server.sni):
            server.error = f"the upstream TLS name is not {Target.of(service).host}"
        if server.error:
            host, port = server.address or ("?", 0)
            self._blocked_line(self._caller(), host, port, server.error)

    # -- requests ---------------------------------------------------------------------

    @_guarded
    def requestheaders(self, flow: Any) -> None:
        flow.request.stream = False  # the request hook must see it before it is sent

    @_guarded
    def request(self, flow: Any) -> None:
        if flow.response is not None:  # answered by mitmproxy itself; nothing is sent
            return
        request = flow.request
        service = self._service(request.host, request.port)
        if service is None:
            self._block(flow, request.host, request.port)
            return
        call = flow.metadata[CALL] = _Call(time.perf_counter(), {
            "front": "proxy", "service": service.name, "method": request.method})
        caller = call.caller = self._caller()
        if flow.client_conn.id in self._broken:
            self._deny(flow, call, "proxy_error", 502, "an earlier step of this connection "
                       "failed inside the mcp-keys proxy: refused")
            return
        if caller is None:
            self._deny(flow, call, "denied", 403,
                       "the mcp-keys key of this proxy is no longer valid")
            return
        try:
            service = self.gateway.service(caller, service.name)  # scope, enabled, file
            problem = binding_problem(flow, Target.of(service))
            if problem is not None:
                raise Denied("denied", f"refused: {problem}")
            try:
                path = normalise_path(request.path.split("?", 1)[0])
            except (Refused, ValueError) as exc:  # %ff is a UnicodeDecodeError
                call.detail["path_refused"] = request.path.split("?", 1)[0][:200]
                self.gateway._take(caller, service)  # counted like any other request
                reason = str(exc) if isinstance(exc, Refused) else \
                    "the path is not percent-encoded UTF-8"
                raise Denied("bad_request", f"refused: {reason}") from None
            call.detail["path"] = path
            try:  # a method or path override would make the upstream act on another rule
                check_overrides(request.headers.keys(), request.query.keys(),
                                request.content or b"")
            except Refused as exc:
                raise Denied("bad_request", f"refused: {exc}") from None
            upgrade = request.headers.get("upgrade")
            if upgrade is not None and upgrade.lower() != "websocket":
                raise Denied("denied", f"protocol upgrades ({upgrade[:40]!r}) are not "
                             "allowed: the proxy could not read, so not scrub, what follows")
            if upgrade is not None and not service.websocket:
                raise Denied("denied", f"WebSocket upgrades to {service.name} are not "
                             "allowed (service edit --websocket allow)")
            if upgrade is not None and not self._control:
                raise Denied("denied", "this mitmproxy's WebSocket control frames "
                             "cannot be scrubbed: WebSocket upgrades are refused")
            allowed, why = service.decide(request.method, path, caller.scopes)
            if not allowed:
                raise Denied("denied", why)
            self.gateway._take(caller, service)
            call.websocket = upgrade is not None
        except Denied as exc:
            status = {"rate_limited": 429, "bad_request": 400}.get(exc.decision, 403)
            self._deny(flow, call, exc.decision, status, str(exc))
            return
        try:
            secret = self.gateway.secrets.get(service.secret).reveal()
        except Exception as exc:  # the credential could not be read: fail closed
            self._deny(flow, call, "upstream_error", 502,
                       f"the credential for {service.name} could not be read",
                       why=type(exc).__name__)
            return
        call.detail["rule"] = why
        query = request.path.partition("?")[2]
        request.path = path + ("?" + query if query else "")  # what the rules matched
        call.scrub = self.gateway.scrubber(service, secret)
        _USED.add(call.scrub)
        call.wide = wide([secret], REDACTED)
        for name in PIECEMEAL:  # the answer comes whole, so the scrubber sees it whole
            if name in request.headers:
                del request.headers[name]
        self._swap(service, request, self.placeholders[service.name], secret)

    def _deny(self, flow: Any, call: _Call, decision: str, status: int, message: str,
              why: str | None = None) -> None:
        """Refuse the flow with ``status`` and write its audit line."""
        self._refuse(flow, status, message)
        call.detail.update(decision=decision, why=why or message, status=status)
        self._audit(call)

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

    # -- responses --------------------------------------------------------------------

    @_guarded
    def responseheaders(self, flow: Any) -> None:
        flow.response.stream = False  # the response hook must scrub it before it is sent

    @_guarded
    def response(self, flow: Any) -> None:
        call = flow.metadata.get(CALL)
        if isinstance(call, _Call) and call.refused:
            return
        if not isinstance(call, _Call) or call.scrub is None or call.broken:
            self._refuse(flow, 502, "the mcp-keys proxy let no request through for this "
                         "response: refused")
            return
        response = flow.response
        problem = unreadable(response, websocket=flow.websocket is not None and
                             call.websocket)
        if problem is not None:
            self._deny(flow, call, "upstream_error", 502, f"the response of "
                       f"{call.detail.get('service')} was refused: {problem}")
            return
        scrub = call.scrub
        # The client gets the body as the scrubber read it, decoded: a client's decoder
        # may read more than mitmproxy's (a second gzip member), never more than this.
        response.decode(strict=True)
        content = response.content or b""
        cleaned = call.clean(content)
        if cleaned != content:  # (an empty body, a HEAD's, keeps its Content-Length)
            response.content = cleaned
        response.headers.fields = tuple(
            (name, scrub.data(value)) for name, value in response.headers.fields
            if name.lower() not in (b"set-cookie", b"set-cookie2")
            and scrub.data(name) == name)  # a name that quotes the credential: dropped
        if flow.websocket is not None:
            _CONTROL[flow.client_conn.id] = scrub
        if response.trailers is not None:
            response.trailers.fields = tuple(
                (name, scrub.data(value)) for name, value in response.trailers.fields
                if scrub.data(name) == name)
        if response.reason:
            response.reason = scrub.text(response.reason)
        call.detail.update(decision="allowed", status=response.status_code,
                           bytes_in=len(content), bytes_out=len(flow.request.content or b""))
        self._audit(call)

    @_guarded
    def websocket_message(self, flow: Any) -> None:
        """A WebSocket service's messages from upstream are scrubbed like bodies
        (mitmproxy hands over each message whole and decompressed)."""
        message = flow.websocket.messages[-1]
        call = flow.metadata.get(CALL)
        if not isinstance(call, _Call) or call.scrub is None or call.broken:
            message.drop()
            return
        if not message.from_client:
            cleaned = call.clean(message.content)
            if cleaned != message.content:
                message.content = cleaned

    @_guarded
    def websocket_end(self, flow: Any) -> None:
        _CONTROL.pop(flow.client_conn.id, None)

    @_guarded
    def error(self, flow: Any) -> None:
        """After the credential went out, mitmproxy's error page would quote what the
        upstream sent that it could not parse: the flow is killed instead (the client's
        connection is closed without it), and audited."""
        call = flow.metadata.get(CALL)
        if not isinstance(call, _Call) or call.scrub is None:
            return
        from mitmproxy.flow import Error

        flow_error = getattr(flow.error, "msg", "")
        flow.error = Error(Error.KILLED_MESSAGE)
        if "decision" not in call.detail:
            what = call.scrub.text(str(flow_error)).split(":", 1)[0][:80]
            call.detail.update(decision="upstream_error", why=f"{what} (the client's "
                               "connection was closed, the error text withheld)")
            self._audit(call)

    # -- failure and audit ------------------------------------------------------------

    def _failed(self, hook: str, data: Any, exc: Exception) -> None:
        """A hook raised: refuse what it was about (the flow, the message, the connection)
        and audit it. Never the exception's text: it may quote what it was handling."""
        why = f"{hook} failed inside the mcp-keys proxy ({type(exc).__name__})"
        try:
            self._stop(hook, data)
        except Exception:  # nothing more can be done; say so below
            log.exception("mcp-keys proxy: could not refuse after %s failed", hook)
        try:
            call = getattr(data, "metadata", {}).get(CALL)
            if isinstance(call, _Call) and "service" in call.detail:
                call.detail.update(decision="proxy_error", why=why, status=502)
                self._audit(call)
            else:
                self._blocked_line(self._caller(), *_where(data), why)
        except Exception:
            log.error("mcp-keys proxy: %s, and its audit line could not be written", why)

    def _stop(self, hook: str, data: Any) -> None:
        if hook == "server_connect":
            data.server.error = "refused by the mcp-keys proxy"
        elif hook in ("tls_clienthello",):
            self._broken.add(data.context.client.id)
        elif hook == "websocket_message":
            data.metadata.setdefault(CALL, _Call(time.perf_counter(), {})).broken = True
            data.websocket.messages[-1].drop()
        elif hook != "error":
            call = data.metadata.get(CALL)
            if isinstance(call, _Call):
                call.broken = True
            self._refuse(data, 502, "refused: the mcp-keys proxy failed on this request")

    def _audit(self, call: _Call) -> None:
        call.detail["latency_ms"] = round((time.perf_counter() - call.started) * 1000, 2)
        if self.gateway.audit is not None:
            self.gateway.audit.append("gateway_call",
                                      key_id=call.caller.key_id if call.caller else None,
                                      detail=call.detail)


def _where(data: Any) -> tuple[str, int]:
    """The host and port a hook's data is about (a flow, a connection, a TLS hello)."""
    request = getattr(data, "request", None)
    if request is not None:
        return str(request.host), int(request.port)
    server = getattr(data, "server", None) or data.context.server
    host, port = server.address or ("?", 0)
    return str(host), int(port)
