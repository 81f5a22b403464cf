"""The gateway's decision, forwarding and audit, callable with a plain request
description: the MCP tools are one front-end over ``Gateway``, the intercepting proxy of
``run --proxy`` another.

Order for each call: the service exists, is enabled and the caller holds
``gateway:SERVICE`` (or ``gateway:*``); the request passes hygiene; the rules allow it;
the rate limit has room; then the credential is injected, the request sent (no redirects
followed), the response filtered, capped and scrubbed, and one chained ``gateway_call``
audit line written, whatever the outcome.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import SecretError
from . import denial
from .hygiene import (
    Refused,
    check_headers,
    check_method,
    check_overrides,
    check_query,
    normalise_path,
)
from .injection import Outgoing, inject, reserved_headers, reserved_query
from .model import METHODS, Service
from .ratelimit import Buckets
from .scrub import Scrubber
from .services import ServiceConfig

if TYPE_CHECKING:
    from ..audit import AuditTrail
    from ..secrets.cache import SecretCache
    from .execmode import ExecResult

MAX_BODY = 1 << 20
MAX_REASON = 200
_DROPPED_RESPONSE_HEADERS = frozenset({
    "set-cookie", "set-cookie2", "connection", "keep-alive", "transfer-encoding",
    "proxy-authenticate", "proxy-connection", "trailer", "upgrade", "alt-svc",
    "content-encoding", "content-length",  # the body is decoded and scrubbed
})
ACCEPT_ENCODING = "gzip, deflate"  # what the HTTP client decodes, so the scrubber sees text
_DECODED = frozenset({"identity", "gzip", "deflate"})
_TEXT_TYPES = ("text/", "application/json", "application/xml", "application/javascript",
               "application/x-www-form-urlencoded", "+json", "+xml")


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: a verified mcp-keys key (its ID and scopes), never a name the
    client reported about itself."""

    key_id: str
    scopes: frozenset[str]

    def may_use(self, service: str) -> bool:
        return "gateway:*" in self.scopes or f"gateway:{service}" in self.scopes


@dataclass(slots=True)
class GatewayRequest:
    """A request as the agent describes it; nothing is trusted yet."""

    service: str
    method: str
    path: str
    query: Any = None
    headers: Any = None
    body: object = None  # bytes, text, or any JSON value (objects and arrays sent as JSON)
    reason: str | None = None


@dataclass(slots=True)
class GatewayResponse:
    status: int
    headers: dict[str, str]
    body: str
    encoding: str  # "text" or "base64"
    truncated: bool
    bytes_in: int = 0
    bytes_out: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "headers": self.headers, "body": self.body,
                "body_encoding": self.encoding, "truncated": self.truncated}


class Denied(Exception):
    """The call was not made (or failed upstream); ``str()`` tells the agent why, and
    ``to_dict()`` the same in the form every refusal takes (``denial``)."""

    def __init__(self, decision: str, message: str, *, retry_after: float | None = None,
                 status: int | None = None, rule: str | None = None,
                 next_step: str | None = None) -> None:
        super().__init__(message)
        self.decision = decision
        self.retry_after = retry_after
        self.status = status
        fallback_rule, fallback_step = denial.default(decision)
        self.rule = rule or fallback_rule
        self.next_step = next_step or fallback_step

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"error": str(self), "reason": self.decision,
                                "rule": self.rule, "next_step": self.next_step}
        if self.retry_after is not None:
            data["retry_after"] = round(self.retry_after, 1)
        return data


def encode_body(body: object, headers: dict[str, str]) -> bytes:
    """The bytes to send for ``body``: text as UTF-8, bytes as they are, an object or
    array as JSON (adding ``Content-Type: application/json`` unless the caller set a
    content type), a number or boolean as its JSON text. SDK 2.x hands a tool the parsed
    value of a JSON-looking string, so every JSON value must be accepted here."""
    if body is None:
        return b""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    try:
        text = json.dumps(body, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        raise Refused("body must be text or a JSON value") from None
    if isinstance(body, dict | list) and not any(
            name.lower() == "content-type" for name in headers):
        headers["Content-Type"] = "application/json"
    return text.encode()


def clean_reason(reason: object) -> str | None:
    """The caller's stated reason, control characters stripped and capped."""
    if not isinstance(reason, str) or not reason:
        return None
    text = "".join(c if c.isprintable() else " " for c in reason).strip()
    return text[:MAX_REASON] or None


def _client_module() -> Any:
    """httpx2 (what the MCP SDK 2.x ships), else httpx (SDK 1.x): the same API."""
    from importlib import import_module

    for name in ("httpx2", "httpx"):
        try:
            return import_module(name)
        except ImportError:
            continue
    from ..extras import install_hint

    raise SecretError(f"the gateway needs an HTTP client: {install_hint('gateway')}")


@dataclass(slots=True)
class _Timing:
    started: float = field(default_factory=time.perf_counter)

    def ms(self) -> float:
        return round((time.perf_counter() - self.started) * 1000, 2)


class Gateway:
    """Checks, injects, forwards, scrubs and audits calls to configured services."""

    def __init__(self, config: ServiceConfig, *, audit: AuditTrail | None = None,
                 secrets: SecretCache | None = None, max_body: int = MAX_BODY,
                 log_bodies: bool = False, front: str = "mcp") -> None:
        from ..secrets.cache import SecretCache

        self.config = config
        self.audit = audit
        self.secrets = secrets if secrets is not None else SecretCache(ttl=60.0)
        self.max_body = max_body
        self.log_bodies = log_bodies
        self.front = front
        self.buckets = Buckets()
        self._client: Any = None
        self._httpx: Any = None  # the HTTP client's module, found on the first call
        self._scrubbers: dict[str, tuple[tuple[str, ...], Scrubber]] = {}

    def __repr__(self) -> str:
        return f"Gateway({self.config!r})"

    # -- what a caller may see --------------------------------------------------------

    def service(self, caller: Caller, name: object) -> Service:
        """The service ``name`` if this caller may use it; unknown and not-yours answer
        alike, so a key learns nothing about services outside its scopes."""
        snapshot = self.config.current()
        if snapshot.error is not None:
            raise Denied("config_error", f"the gateway's services file is invalid, so every "
                         f"call is refused until it is fixed: {snapshot.error}")
        service = snapshot.services.get(name) if isinstance(name, str) else None
        if service is None or not caller.may_use(service.name):
            rule, step = denial.for_scope(str(name)[:64])
            raise Denied("denied", f"no service {str(name)[:64]!r} for this key (it needs "
                         f"scope gateway:{str(name)[:64]})", rule=rule, next_step=step)
        if not service.enabled:
            raise Denied("disabled", f"service {service.name} is disabled",
                         rule=f"service {service.name} disabled",
                         next_step=f"ask the operator to run 'mcp-keys service enable "
                                   f"{service.name}'")
        if (held := snapshot.check_held(service.name)) is not None:
            raise Denied("restart_required", held)
        return service

    def visible(self, caller: Caller) -> list[dict[str, Any]]:
        snapshot = self.config.current()
        if snapshot.error is not None:
            raise Denied("config_error", f"the gateway's services file is invalid: "
                         f"{snapshot.error}")
        return [{"name": s.name, "description": s.description, "host": s.host,
                 "allowed": s.rules_for(caller.scopes)}
                for s in sorted(snapshot.services.values(), key=lambda s: s.name)
                if s.enabled and caller.may_use(s.name)]

    def explain(self, caller: Caller, name: object, method: object, path: object
                ) -> dict[str, Any]:
        """Which rule would decide, and why, without sending anything."""
        service = self.service(caller, name)
        try:
            verb = check_method(method, METHODS)
            normal = normalise_path(path)
        except Refused as exc:
            return {"allowed": False, "why": f"refused before any rule: {exc}",
                    "rule": "request checks (before any rule)",
                    "next_step": "change the method or path"}
        allowed, why = service.decide(verb, normal, caller.scopes)
        found: dict[str, Any] = {"allowed": allowed, "why": why, "method": verb,
                                 "path": normal}
        if not allowed:
            found["rule"], found["next_step"] = denial.for_rules(service, verb, normal,
                                                                 caller.scopes)
        return found

    # -- the call ---------------------------------------------------------------------

    def check(self, caller: Caller, request: GatewayRequest) -> tuple[Service, Outgoing, str]:
        """Everything but the sending: the service, the outgoing request (without the
        credential) and why it is allowed; ``Denied`` otherwise."""
        service = self.service(caller, request.service)
        if service.kind != "http":
            raise Denied("denied", f"service {service.name} runs a command: use exec",
                         rule=f"service {service.name} is an exec service",
                         next_step="call the exec tool instead")
        part = "method"
        try:
            method = check_method(request.method, METHODS)
            part = "path"
            path = normalise_path(request.path)
            part = "headers"
            headers = check_headers(request.headers, reserved=reserved_headers(service.auth))
            part = "query"
            query = check_query(request.query, reserved=reserved_query(service.auth))
            part = "body"
            body = encode_body(request.body, headers)
            if len(body) > self.max_body:
                raise Refused(f"the body is over {self.max_body} bytes")
            part = "request"
            check_overrides(headers, [name for name, _ in query], body)
        except Refused as exc:
            raise Denied("bad_request", f"refused before sending: {exc}",
                         rule=f"{part} check (before any rule)",
                         next_step=f"change the {part} and call again") from None
        allowed, why = service.decide(method, path, caller.scopes)
        if not allowed:
            rule, step = denial.for_rules(service, method, path, caller.scopes)
            raise Denied("denied", why, rule=rule, next_step=step)
        self._take(caller, service)
        outgoing = Outgoing(method, service.base_url + path, headers, query, body)
        return service, outgoing, why

    def scrubber(self, service: Service, value: str) -> Scrubber:
        """The scrubber for a service's current secret, built once per value."""
        return self._scrubber(service.secret, (value,))

    def _scrubber(self, key: str, values: tuple[str, ...]) -> Scrubber:
        cached = self._scrubbers.get(key)
        if cached is None or cached[0] != values:
            cached = self._scrubbers[key] = (values, Scrubber(list(values)))
        return cached[1]

    async def execute(self, caller: Caller, request: GatewayRequest) -> GatewayResponse:
        """Make the call, or raise ``Denied``; audited either way."""
        timing = _Timing()
        detail: dict[str, Any] = {"front": self.front, "service": str(request.service)[:64],
                                  "method": str(request.method)[:16].upper()}
        reason = clean_reason(request.reason)
        if reason:
            detail["reason"] = reason
        try:
            service, outgoing, why = self.check(caller, request)
            detail.update(method=outgoing.method, path=outgoing.url[len(service.base_url):],
                          rule=why)
            response = await self._send(service, outgoing)
        except Denied as exc:
            self._audit_refusal(caller, detail, request, exc, timing)
            raise
        except Exception as exc:  # fail closed, audited, and said in words, whatever it was
            refused = Denied("upstream_error", f"the call failed inside the gateway "
                             f"({type(exc).__name__}); nothing more is known")
            self._audit_refusal(caller, detail, request, refused, timing)
            raise refused from None
        detail.update(decision="allowed", status=response.status, latency_ms=timing.ms(),
                      bytes_out=response.bytes_out, bytes_in=response.bytes_in)
        if self.log_bodies:
            scrub = self._scrubbers[service.secret][1]
            detail["body"] = scrub.cut(response.body.encode(), 2048)[0].decode(
                "utf-8", "ignore")
        self._audit(caller, detail)
        return response

    def _audit_refusal(self, caller: Caller, detail: dict[str, Any],
                       request: GatewayRequest, exc: Denied, timing: _Timing) -> None:
        """The audit line of a refused call, with the path as far as it could be
        normalised (a refused one kept, cut short: the JSON line escapes it)."""
        if "path" not in detail:
            try:
                detail["path"] = normalise_path(request.path)
            except Refused:
                detail["path_refused"] = str(request.path)[:200]
        detail.update(decision=exc.decision, why=str(exc), latency_ms=timing.ms())
        if exc.status is not None:
            detail["status"] = exc.status
        self._audit(caller, detail)

    def refuse_arguments(self, caller: Caller, tool: str, arguments: dict[str, Any],
                         problem: str) -> Denied:
        """A tool call whose arguments do not fit the tool's schema: refused, and audited
        as ``bad_request`` like any other refusal (``problem`` names fields, not values)."""
        detail: dict[str, Any] = {"front": self.front, "tool": tool}
        for name, size in (("service", 64), ("method", 16)):
            value = arguments.get(name)
            if isinstance(value, str):
                detail[name] = value[:size]
        denied = Denied("bad_request", f"refused before sending: the arguments do not fit "
                        f"the {tool} tool ({problem})"[:600], rule=f"{tool} tool input schema",
                        next_step=f"fix the arguments to match the {tool} tool's input schema "
                                  "and call again")
        if isinstance(arguments.get("path"), str):
            request = GatewayRequest(str(detail.get("service")), "", arguments["path"])
            self._audit_refusal(caller, detail, request, denied, _Timing())
        else:
            detail.update(decision=denied.decision, why=str(denied), latency_ms=0.0)
            self._audit(caller, detail, event="gateway_exec" if tool == "exec"
                        else "gateway_call")
        return denied

    async def run_exec(self, caller: Caller, name: object, args: object,
                       reason: object = None) -> ExecResult:
        """Run an exec service's command with ``args`` if a glob allows them; audited as
        ``gateway_exec`` whatever the outcome."""
        from .execmode import check_args, run

        timing = _Timing()
        detail: dict[str, Any] = {"front": self.front, "service": str(name)[:64]}
        cleaned = clean_reason(reason)
        if cleaned:
            detail["reason"] = cleaned
        try:
            service = self.service(caller, name)
            if service.kind != "exec" or service.command is None:
                raise Denied("denied", f"service {service.name} is an HTTP service: use "
                             "execute", rule=f"service {service.name} is an HTTP service",
                             next_step="call the execute tool instead")
            try:
                argv = check_args(args)
            except ValueError as exc:
                raise Denied("bad_request", f"refused before running: {exc}",
                             rule="args check (before any rule)",
                             next_step="change the args and call again") from None
            detail["args"] = " ".join(argv)[:500]
            allowed, why = service.args_allowed(argv)
            detail["rule"] = why
            if not allowed:
                rule, step = denial.for_args(service, argv)
                raise Denied("denied", why, rule=rule, next_step=step)
            self._take(caller, service)
            env, values = {}, []
            for var, ref in service.secret_env:
                try:
                    secret = self.secrets.get(ref)
                except SecretError as exc:
                    raise Denied("upstream_error", f"the credential for {service.name} could "
                                 f"not be read: {exc}") from None
                env[var] = secret.reveal()
                values.append(secret.reveal())
            scrub = self._scrubber("exec:" + service.name, tuple(values))
            try:
                result = await run(service.command, argv, env, cwd=service.cwd,
                                   timeout=service.timeout, limit=self.max_body, scrub=scrub)
            except OSError as exc:  # gone, not executable, a bad working directory
                raise Denied("upstream_error", f"{service.command} could not be started "
                             f"({exc.strerror or type(exc).__name__})") from None
        except Denied as exc:
            detail.update(decision=exc.decision, why=str(exc), latency_ms=timing.ms())
            self._audit(caller, detail, event="gateway_exec")
            raise
        detail.update(decision="timed_out" if result.timed_out else "allowed",
                      exit_code=result.exit_code, latency_ms=timing.ms(),
                      bytes_in=result.bytes_out)
        self._audit(caller, detail, event="gateway_exec")
        return result

    def _take(self, caller: Caller, service: Service) -> None:
        if service.rate_limit is None:
            return
        wait = self.buckets.take((caller.key_id, service.name), service.rate_limit.count,
                                 service.rate_limit.period)
        if wait:
            raise Denied("rate_limited", f"rate limit {service.rate_limit.text} reached for "
                         f"this key on {service.name}: retry in {wait:.1f}s", retry_after=wait,
                         rule=f"rate limit {service.rate_limit.text}",
                         next_step=f"retry in {wait:.1f}s")

    async def probe(self, name: str, path: str = "/") -> tuple[GatewayResponse, float]:
        """One GET to ``path`` of a service with its credential, whatever the rules (the
        operator's ``service test``); scrubbed, and audited with ``front: "test"``."""
        snapshot = self.config.current()
        if snapshot.error is not None:
            raise Denied("config_error", snapshot.error)
        service = snapshot.services.get(name)
        if service is None:
            raise Denied("denied", f"no service {name!r} in {self.config.path}")
        try:
            normal = normalise_path(path)
        except Refused as exc:
            raise Denied("bad_request", str(exc)) from None
        timing = _Timing()
        detail: dict[str, Any] = {"front": "test", "service": name, "method": "GET",
                                  "path": normal}
        try:
            response = await self._send(service, Outgoing("GET", service.base_url + normal))
        except Denied as exc:
            detail.update(decision=exc.decision, why=str(exc), latency_ms=timing.ms())
            self._audit(None, detail)
            raise
        latency = timing.ms()
        detail.update(decision="allowed", status=response.status, latency_ms=latency)
        self._audit(None, detail)
        return response, latency

    def _audit(self, caller: Caller | None, detail: dict[str, Any],
               event: str = "gateway_call") -> None:
        """One audit line, every text in it scrubbed of every secret this gateway read."""
        if self.audit is None:
            return
        for _, scrub in list(self._scrubbers.values()):
            for name, value in detail.items():
                if isinstance(value, str):
                    detail[name] = scrub.text(value)
        self.audit.append(event, key_id=caller.key_id if caller else None, detail=detail)

    async def _send(self, service: Service, outgoing: Outgoing) -> GatewayResponse:
        httpx = self._httpx = self._httpx or _client_module()
        try:
            secret = self.secrets.get(service.secret)
        except SecretError as exc:
            raise Denied("upstream_error", f"the credential for {service.name} could not be "
                         f"read: {exc}") from None
        scrub = self.scrubber(service, secret.reveal())
        try:
            inject(service.auth, outgoing, secret)
        except SecretError as exc:
            raise Denied("upstream_error", scrub.text(str(exc))) from None
        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=False, trust_env=False)
        client = self._client
        try:
            upstream = client.build_request(
                outgoing.method, outgoing.url, params=outgoing.query or None,
                headers={**outgoing.headers, "Accept-Encoding": ACCEPT_ENCODING},
                content=outgoing.body or None, timeout=service.timeout)
            reply = await client.send(upstream, stream=True)
            try:
                _check_encoding(reply.headers.get("content-encoding", ""))
                wanted = self.max_body + scrub.lookahead  # a secret at the cut is whole
                chunks, size, more = [], 0, False
                async for chunk in reply.aiter_bytes():
                    size += len(chunk)
                    if size > wanted:
                        chunks.append(chunk[:len(chunk) - (size - wanted)])
                        more = True
                        break
                    chunks.append(chunk)
            finally:
                await reply.aclose()
        except httpx.TimeoutException:
            raise Denied("upstream_error", f"{service.host} did not answer within "
                         f"{service.timeout:g}s") from None
        except httpx.HTTPError as exc:
            raise Denied("upstream_error", f"could not reach {service.host} "
                         f"({type(exc).__name__})") from None
        data, truncated = scrub.cut(b"".join(chunks), self.max_body, more)
        headers = {scrub.text(name): scrub.text(value) for name, value in reply.headers.items()
                   if name.lower() not in _DROPPED_RESPONSE_HEADERS}
        kind = headers.get("content-type", "").lower()
        text: str | None = None
        if not kind or any(marker in kind for marker in _TEXT_TYPES):
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                text = None
        if text is None:
            body, encoding = base64.b64encode(data).decode(), "base64"
        else:
            body, encoding = text, "text"
        return GatewayResponse(reply.status_code, headers, body, encoding, truncated,
                               bytes_in=size, bytes_out=len(outgoing.body))

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _check_encoding(value: str) -> None:
    """Refuse a response the scrubber could not read: only the encodings the gateway
    asked for (and the HTTP client decodes) are let through."""
    codings = [c.strip().lower() for c in value.split(",") if c.strip()]
    unknown = [c for c in codings if c not in _DECODED]
    if unknown:
        raise Denied("upstream_error", f"the upstream answered in Content-Encoding "
                     f"{unknown[0][:40]!r}, which the gateway cannot decode to scrub: refused")
