"""The gateway's core against a real loopback upstream: injection for each auth kind,
rules, hygiene (a hostile corpus refused before any request leaves), scrubbing, limits,
reloads and the audit line, with no MCP in between."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mcp_keys.gateway.model import parse_rule
from mcp_keys.gateway.proxy import Caller, Denied, Gateway, GatewayRequest
from mcp_keys.gateway.services import ServiceConfig, update
from tests.conftest import FileKeys, assert_absent
from tests.gateway_upstream import PASSWORD, SECRET, USER, Upstream, running_upstream

CALLER = Caller("abcdefghijkl", frozenset({"gateway:*"}))
SECRETS = [SECRET, PASSWORD, base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()]


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with running_upstream() as server:
        yield server


def write_services(path: Path, upstream: Upstream, **extra: str) -> None:
    kinds = {"bearer": "bearer", "basic": "basic", "header": "header:X-Api-Key",
             "query": "query:api_key"}
    lines = []
    for name, auth in kinds.items():
        ref = "env:GW_BASIC" if name == "basic" else "env:GW_SECRET"
        lines += [f"[services.{name}]", f'base_url = "{upstream.url}/{name}"',
                  f'auth = "{auth}"', f'secret = "{ref}"',
                  'allow = ["GET /**", "POST /items/*", '
                  '{ rule = "DELETE /items/*", scope = "items:delete" }]',
                  'deny = ["* /admin/**"]', extra.get(name, ""), ""]
    path.write_text("\n".join(lines))
    path.chmod(0o600)


@pytest.fixture
def gateway(tmp_path: Path, upstream: Upstream, manager: FileKeys,
            monkeypatch: pytest.MonkeyPatch) -> Gateway:
    monkeypatch.setenv("GW_SECRET", SECRET)
    monkeypatch.setenv("GW_BASIC", f"{USER}:{PASSWORD}")
    manager.init()
    path = tmp_path / "services.toml"
    write_services(path, upstream)
    upstream.seen.clear()
    return Gateway(ServiceConfig(path), audit=manager.audit, max_body=100_000)


def call(gateway: Gateway, caller: Caller = CALLER, **request: Any) -> Any:
    async def go() -> Any:
        try:
            return await gateway.execute(caller, GatewayRequest(**request))
        finally:
            await gateway.aclose()

    return asyncio.run(go())


def refused(gateway: Gateway, caller: Caller = CALLER, **request: Any) -> Denied:
    try:
        call(gateway, caller, **request)
    except Denied as exc:
        return exc
    pytest.fail(f"{request} was not refused", pytrace=False)


@pytest.mark.parametrize("kind", ["bearer", "basic", "header", "query"])
def test_each_auth_kind_is_injected_and_never_seen_by_the_agent(
        gateway: Gateway, upstream: Upstream, kind: str, manager: FileKeys) -> None:
    response = call(gateway, service=kind, method="GET", path="/things/1",
                    query={"limit": "3"})
    assert response.status == 200, f"{kind}: the upstream refused the injected credential"
    (seen,) = upstream.seen
    assert upstream.authorised(kind, seen), f"{kind}: the credential was not injected"
    assert ("limit", "3") in seen.query and seen.path == f"/{kind}/things/1"
    shown = json.dumps(response.to_dict())
    for secret in SECRETS:
        assert_absent(secret, shown, "a tool result")
    (line,) = [e for e in manager.audit.read(event="gateway_call").events]
    assert line.key_id == CALLER.key_id and line.detail["decision"] == "allowed" and \
        line.detail["status"] == 200 and line.detail["path"] == "/things/1" and \
        line.detail["service"] == kind and isinstance(line.detail["latency_ms"], float)


def test_rules_deny_wins_scopes_refine_unmatched_denied(gateway: Gateway,
                                                        upstream: Upstream) -> None:
    assert "denied by rule 'deny * /admin/**'" in str(
        refused(gateway, service="bearer", method="GET", path="/admin/users"))
    assert "lacks scope items:delete" in str(
        refused(gateway, service="bearer", method="DELETE", path="/items/1"))
    holder = Caller("abcdefghijkl", frozenset({"gateway:bearer", "items:delete"}))
    assert call(gateway, holder, service="bearer", method="DELETE", path="/items/1").status \
        == 200
    assert "no rule allows PUT /items/1" in str(
        refused(gateway, service="bearer", method="PUT", path="/items/1"))
    assert len(upstream.seen) == 1, "only the allowed call reached the upstream"


def test_a_service_needs_its_gateway_scope(gateway: Gateway, upstream: Upstream) -> None:
    other = Caller("abcdefghijkl", frozenset({"gateway:basic"}))
    unknown = refused(gateway, other, service="nope", method="GET", path="/")
    hidden = refused(gateway, other, service="bearer", method="GET", path="/")
    assert str(unknown).replace("nope", "X") == str(hidden).replace("bearer", "X"), \
        "a service outside the key's scopes answers like one that does not exist"
    assert [s["name"] for s in gateway.visible(other)] == ["basic"]
    assert gateway.visible(other)[0]["allowed"] == ["GET /**", "POST /items/*"]
    assert not upstream.seen


HOSTILE: list[tuple[str, dict[str, Any]]] = [
    ("absolute URL", {"path": "http://169.254.169.254/latest/meta-data"}),
    ("https URL", {"path": "https://evil.example/x"}),
    ("scheme-relative", {"path": "//evil.example/x"}),
    ("no leading slash", {"path": "evil.example/x"}),
    ("dot-dot", {"path": "/things/../admin"}),
    ("dot segment", {"path": "/./admin"}),
    ("encoded dot-dot", {"path": "/things/%2e%2e/admin"}),
    ("upper encoded dot-dot", {"path": "/things/%2E%2E/admin"}),
    ("double-encoded dot-dot", {"path": "/things/%252e%252e/admin"}),
    ("triple-encoded", {"path": "/things/%25252e%25252e/admin"}),
    ("encoded slash", {"path": "/things%2F..%2Fadmin"}),
    ("double-encoded slash", {"path": "/things%252F..%252Fadmin"}),
    ("backslash", {"path": "/things\\..\\admin"}),
    ("encoded backslash", {"path": "/things/%5c..%5cadmin"}),
    ("NUL", {"path": "/things/%00"}),
    ("raw NUL", {"path": "/things/\x00"}),
    ("CRLF in path", {"path": "/things/%0d%0aHost:%20evil"}),
    ("query in path", {"path": "/things?api_key=x"}),
    ("fragment in path", {"path": "/things#x"}),
    ("empty segment", {"path": "/things//x"}),
    ("not a string", {"path": ["/things"]}),
    ("huge path", {"path": "/" + "a" * 5000}),
    ("path not UTF-8", {"path": "/things/%ff"}),
    ("overlong UTF-8 in path", {"path": "/things/%c0%ae%c0%ae/admin"}),
    ("Host header", {"headers": {"Host": "evil.example"}}),
    ("Authorization header", {"headers": {"Authorization": "Bearer other"}}),
    ("Cookie header", {"headers": {"Cookie": "a=b"}}),
    ("Proxy header", {"headers": {"Proxy-Authorization": "Basic x"}}),
    ("X-Forwarded header", {"headers": {"X-Forwarded-Host": "evil.example"}}),
    ("Transfer-Encoding", {"headers": {"Transfer-Encoding": "chunked"}}),
    ("CRLF in header value", {"headers": {"X-Note": "a\r\nHost: evil"}}),
    ("LF in header name", {"headers": {"X-No\nte": "a"}}),
    ("NUL in header value", {"headers": {"X-Note": "a\x00b"}}),
    ("space in header name", {"headers": {"X Note": "a"}}),
    ("non-string header", {"headers": {"X-Note": 1}}),
    ("non-ASCII header value", {"headers": {"X-Note": "caf\u00e9 \u2028"}}),
    ("the auth header of header:", {"service": "header", "headers": {"x-api-key": "mine"}}),
    ("the auth param of query:", {"service": "query", "query": {"api_key": "mine"}}),
    ("CRLF in query", {"query": {"a": "1\r\n2"}}),
    ("oversized body", {"method": "POST", "path": "/items/1", "body": "x" * 100_001}),
    ("bad method", {"method": "TRACE"}),
    ("method with CRLF", {"method": "GET\r\n"}),
]


@pytest.mark.parametrize(("what", "change"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_requests_never_leave(gateway: Gateway, upstream: Upstream, what: str,
                                      change: dict[str, Any]) -> None:
    request = {"service": "bearer", "method": "GET", "path": "/things", **change}
    denial = refused(gateway, **request)
    assert denial.decision == "bad_request", f"{what}: {denial.decision}: {denial}"
    assert str(denial).startswith("refused before sending: "), str(denial)
    assert not upstream.seen, f"{what}: a request reached the upstream"


def test_the_normalised_path_is_what_rules_match_and_what_is_sent(
        gateway: Gateway, upstream: Upstream) -> None:
    assert call(gateway, service="bearer", method="GET", path="/%69tems/a%20b").status == 200
    assert upstream.seen[-1].path == "/bearer/items/a b"
    assert "denied by rule" in str(refused(gateway, service="bearer", method="GET",
                                           path="/%61dmin/x")), "encoding does not dodge a deny"


def test_responses_are_scrubbed_filtered_and_capped(gateway: Gateway) -> None:
    leak = call(gateway, service="bearer", method="GET", path="/leak")
    text = json.dumps(leak.to_dict())
    for secret in SECRETS:
        assert_absent(secret, text, "a response the upstream filled with the credential")
    assert "[redacted]" in leak.body and "set-cookie" not in leak.headers and \
        leak.headers["x-echo"] == "[redacted]"
    redirect = call(gateway, service="bearer", method="GET", path="/redirect")
    assert redirect.status == 302, "redirects are returned, never followed"
    big = call(gateway, service="bearer", method="GET", path="/big")
    assert big.truncated and len(big.body.encode()) <= 100_000
    binary = call(gateway, service="bearer", method="GET", path="/binary")
    assert binary.encoding == "base64" and base64.b64decode(binary.body) == bytes(range(256))


def test_upstream_down_and_timeouts_are_clear_errors(gateway: Gateway, tmp_path: Path,
                                                      upstream: Upstream) -> None:
    path = gateway.config.path

    def point(services: dict[str, Any]) -> None:
        services["bearer"] = services["bearer"].with_changes(timeout=0.5)
        services["down"] = services["basic"].with_changes(name="down",
                                                          base_url="http://127.0.0.1:9")

    update(path, point, store=str(tmp_path / "nope.json"))
    gateway.config.reload()
    slow = refused(gateway, service="bearer", method="GET", path="/slow")
    assert slow.decision == "upstream_error" and "did not answer within 0.5s" in str(slow)
    down = refused(gateway, service="down", method="GET", path="/x")
    assert down.decision == "upstream_error" and "could not reach 127.0.0.1:9" in str(down)


def test_rate_limit_per_key_and_service(gateway: Gateway, tmp_path: Path) -> None:
    update(gateway.config.path, lambda s: s.update(
        bearer=s["bearer"].with_changes(rate_limit=__import__(
            "mcp_keys.gateway.model", fromlist=["parse_rate"]).parse_rate("2/min"))),
        store=str(tmp_path / "nope.json"))
    gateway.config.reload()

    async def burst() -> list[str]:
        outcomes = []
        for caller in (CALLER, CALLER, CALLER, Caller("zzzzzzzzzzzz", CALLER.scopes)):
            try:
                await gateway.execute(caller, GatewayRequest("bearer", "GET", "/x"))
                outcomes.append("ok")
            except Denied as exc:
                outcomes.append(exc.decision)
                assert exc.retry_after is not None and "retry in" in str(exc)
        await gateway.aclose()
        return outcomes

    assert asyncio.run(burst()) == ["ok", "ok", "rate_limited", "ok"], \
        "two per minute per key; another key has its own bucket"


def test_hand_edits_reload_and_a_broken_file_fails_closed(gateway: Gateway) -> None:
    assert call(gateway, service="bearer", method="GET", path="/x").status == 200
    path = gateway.config.path
    path.write_text(path.read_text().replace('"GET /**", ', ""))
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            call(gateway, service="bearer", method="GET", path="/x")
        except Denied:
            break
        time.sleep(0.05)
    else:
        pytest.fail("a removed rule still allowed calls after 2 s", pytrace=False)
    path.write_text(path.read_text() + "\n[services.broken]\nbase_url = 1\n")
    gateway.config.reload()
    broken = refused(gateway, service="basic", method="GET", path="/x")
    assert broken.decision == "config_error" and "invalid" in str(broken)


def test_disable_is_a_kill_switch(gateway: Gateway, tmp_path: Path) -> None:
    update(gateway.config.path,
           lambda s: s.update(bearer=s["bearer"].with_changes(enabled=False)),
           store=str(tmp_path / "nope.json"))
    gateway.config.reload()
    assert refused(gateway, service="bearer", method="GET", path="/x").decision == "disabled"


def test_explain_says_which_rule_decides(gateway: Gateway, upstream: Upstream) -> None:
    assert gateway.explain(CALLER, "bearer", "GET", "/admin/x")["why"] == \
        "denied by rule 'deny * /admin/**'"
    assert gateway.explain(CALLER, "bearer", "get", "/things")["allowed"] is True
    assert "refused before any rule" in gateway.explain(CALLER, "bearer", "GET", "/../x")["why"]
    assert not upstream.seen


def test_reasons_are_cleaned_and_audited(gateway: Gateway, manager: FileKeys) -> None:
    call(gateway, service="bearer", method="GET", path="/x",
         reason="look up\x1b[31m the \nrefund" + "!" * 500)
    (line,) = manager.audit.read(event="gateway_call").events
    reason = line.detail["reason"]
    assert "\x1b" not in reason and "\n" not in reason and len(reason) == 200


def test_no_secret_in_any_audit_line(gateway: Gateway, manager: FileKeys) -> None:
    for path in ("/leak", "/admin/x", "/x"):
        with contextlib.suppress(Denied):
            call(gateway, service="query", method="GET", path=path)
    raw = b"".join(line for _, _, line in manager.audit.lines())
    for secret in SECRETS:
        assert_absent(secret, raw, "the audit log")
    assert os.environ["GW_SECRET"] == SECRET


def test_rule_syntax() -> None:
    rule = parse_rule("GET /v1/charges/**", "allow")
    assert rule.matches("GET", "/v1/charges") and rule.matches("GET", "/v1/charges/ch_1/x")
    assert not rule.matches("GET", "/v1/chargesX") and not rule.matches("POST", "/v1/charges")
    one = parse_rule("* /repos/*/pulls", "allow")
    assert one.matches("PATCH", "/repos/a/pulls") and not one.matches("GET", "/repos/a/b/pulls")


def test_an_unexpected_failure_is_refused_audited_and_leaks_nothing(
        gateway: Gateway, upstream: Upstream, manager: FileKeys,
        monkeypatch: pytest.MonkeyPatch) -> None:
    odd = "sk_live_caf\u00e9_\u2713_secret"  # not latin-1: the HTTP client cannot send it
    monkeypatch.setenv("GW_SECRET", odd)
    denial = refused(gateway, service="bearer", method="GET", path="/x")
    assert denial.decision == "upstream_error" and "failed inside the gateway" in str(denial)
    assert_absent(odd, str(denial), "the error")
    (line,) = manager.audit.read(event="gateway_call").events
    assert line.detail["decision"] == "upstream_error"
    assert_absent(odd, b"".join(raw for _, _, raw in manager.audit.lines()), "the audit log")
    assert not upstream.seen
