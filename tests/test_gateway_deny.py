"""Deny rules mean what an operator thinks: a path an upstream would route to what a deny
rule names (another case, ``;params``, a trailing slash, a ``.json`` suffix, encoded)
is denied, and ``HEAD`` is denied with ``GET``; allow rules still match only what is sent.
A request that asks the upstream to take it as another method (override headers, a
``_method`` parameter in the query or body) is refused before it leaves."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mcp_keys.gateway.model import parse_rule
from mcp_keys.gateway.proxy import Caller, Denied, Gateway, GatewayRequest
from mcp_keys.gateway.services import ServiceConfig
from tests.conftest import FileKeys
from tests.gateway_upstream import SECRET, Upstream, running_upstream

CALLER = Caller("abcdefghijkl", frozenset({"gateway:*"}))


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with running_upstream() as server:
        yield server


@pytest.fixture
def gateway(tmp_path: Path, upstream: Upstream, manager: FileKeys,
            monkeypatch: pytest.MonkeyPatch) -> Gateway:
    monkeypatch.setenv("GW_SECRET", SECRET)
    manager.init()
    path = tmp_path / "services.toml"
    path.write_text(f'[services.api]\nbase_url = "{upstream.url}/bearer"\nauth = "bearer"\n'
                    'secret = "env:GW_SECRET"\n'
                    'allow = ["* /**"]\n'
                    'deny = ["* /admin/**", "DELETE /v1/users/*", "GET /v1/secrets/*.json",'
                    ' "POST /v1/users/*/Keys/"]\n')
    path.chmod(0o600)
    upstream.seen.clear()
    return Gateway(ServiceConfig(path), audit=manager.audit)


def call(gateway: Gateway, method: str, path: str, **request: Any) -> Any:
    async def go() -> Any:
        try:
            return await gateway.execute(CALLER, GatewayRequest("api", method, path, **request))
        finally:
            await gateway.aclose()

    return asyncio.run(go())


def refused(gateway: Gateway, method: str, path: str, **request: Any) -> Denied:
    try:
        call(gateway, method, path, **request)
    except Denied as exc:
        return exc
    pytest.fail(f"{method} {path} {request} was not refused", pytrace=False)


ROUTED_ALIKE = [
    ("GET", "/ADMIN/users"), ("GET", "/Admin"), ("GET", "/admin/"), ("GET", "/admin;x=1/users"),
    ("GET", "/admin;jsessionid=abc"), ("GET", "/admin.json"), ("GET", "/Admin.JSON/users"),
    ("GET", "/%41dmin/users"), ("GET", "/%2561dmin"), ("GET", "/admin%20/x"),
    ("GET", "/\uff41dmin"), ("PUT", "/admin.php"), ("HEAD", "/admin"),
    ("DELETE", "/v1/users/me.json"), ("DELETE", "/v1/USERS/me/"), ("DELETE", "/v1/users/me;v=2"),
    ("GET", "/v1/secrets/db.yaml"), ("GET", "/v1/secrets/db"), ("HEAD", "/v1/Secrets/db.json"),
    ("POST", "/v1/users/u1/keys"), ("POST", "/v1/users/u1/KEYS.json/"),
]


@pytest.mark.parametrize(("method", "path"), ROUTED_ALIKE,
                         ids=[f"{m} {p}" for m, p in ROUTED_ALIKE])
def test_a_deny_rule_catches_what_the_upstream_would_route_alike(
        gateway: Gateway, upstream: Upstream, manager: FileKeys, method: str,
        path: str) -> None:
    denial = refused(gateway, method, path)
    assert denial.decision == "denied" and "denied by rule" in str(denial), str(denial)
    assert not upstream.seen, f"{method} {path} reached the upstream"
    (line,) = manager.audit.read(event="gateway_call").events
    assert line.detail["decision"] == "denied"
    assert gateway.explain(CALLER, "api", method, path)["allowed"] is False


DOTS = ["/v1/users/..;/../admin", "/v1/..;/admin", "/v1/..;x=1/admin", "/v1/.;/admin",
        "/v1/..%20/admin", "/v1/.../admin", "/v1/%E2%80%A5/admin", "/v1/%EF%BC%8E%EF%BC%8E/admin",
        "/v1%EF%BC%8Fadmin", "/v1/%EF%BC%BCadmin"]


@pytest.mark.parametrize("path", DOTS)
def test_a_segment_an_upstream_reads_as_dots_is_refused(gateway: Gateway, upstream: Upstream,
                                                        path: str) -> None:
    denial = refused(gateway, "GET", path)
    assert denial.decision == "bad_request", f"{path}: {denial.decision}"
    assert not upstream.seen, f"{path} reached the upstream"


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/administrators"), ("GET", "/v1/admin"), ("GET", "/v1/users/me"),
    ("POST", "/v1/users/me"), ("GET", "/v1/secretsx/db.json"), ("POST", "/v1/users/u1/keyring")])
def test_a_deny_rule_stops_at_what_it_names(gateway: Gateway, upstream: Upstream,
                                            method: str, path: str) -> None:
    assert call(gateway, method, path).status == 200
    assert len(upstream.seen) == 1


def test_allow_rules_match_only_what_is_sent() -> None:
    from mcp_keys.gateway.model import loose_path

    rule = parse_rule("GET /v1/charges/*", "allow")
    assert rule.matches("GET", "/v1/charges/ch_1")
    for path in ("/v1/Charges/ch_1", "/V1/charges/ch_1", "/v1/charges;x/ch_1"):
        assert not rule.matches("GET", path), path
    assert not rule.matches("HEAD", "/v1/charges/ch_1")
    assert loose_path("/A;b/c.d.json/") == "/a/c" and loose_path("/.well-known/x") == \
        "/.well-known/x"


OVERRIDES: list[tuple[str, dict[str, Any]]] = [
    ("X-HTTP-Method-Override", {"headers": {"X-HTTP-Method-Override": "DELETE"}}),
    ("x-http-method", {"headers": {"x-http-method": "DELETE"}}),
    ("X-Method-Override", {"headers": {"X-Method-Override": "PUT"}}),
    ("_method in the query", {"query": {"_method": "DELETE"}}),
    ("_METHOD in the query", {"query": [["_METHOD", "DELETE"]]}),
    ("_method in a form body", {"body": "name=x&_method=DELETE"}),
    ("encoded _method in a form body", {"body": "%5Fmethod=DELETE"}),
    ("_method in a JSON body", {"body": '{"a": 1, "_method": "DELETE"}'}),
    ("_method in a multipart body", {"body": '--b\r\nContent-Disposition: form-data; '
                                             'name="_method"\r\n\r\nDELETE\r\n--b--\r\n'}),
    ("X_HTTP_Method_Override (CGI reads _ as -)",
     {"headers": {"X_HTTP_Method_Override": "DELETE"}}),
    ("_method[] in the query", {"query": {"_method[]": "DELETE"}}),
    (".method in the query (PHP reads _method)", {"query": {".method": "DELETE"}}),
    ("_method after a ';' in a form body", {"body": "name=x;_method=DELETE"}),
    (".method in a form body", {"body": "name=x&.method=DELETE"}),
    ("_method[] in a form body", {"body": "_method[]=DELETE"}),
    ("_method in a UTF-16 JSON body", {"body": '{"_method": "DELETE"}'.encode("utf-16")}),
    ("_method in a JSON body with a BOM", {"body": b'\xef\xbb\xbf{"_method": "DELETE"}'}),
    (".method in a multipart body", {"body": '--b\r\nContent-Disposition: form-data; '
                                             'name=".method"\r\n\r\nDELETE\r\n--b--\r\n'}),
    ("name*= _method in a multipart body", {
        "body": "--b\r\nContent-Disposition: form-data; name*=UTF-8''_method\r\n\r\n"
                "DELETE\r\n--b--\r\n"}),
]


@pytest.mark.parametrize(("what", "request_"), OVERRIDES, ids=[o[0] for o in OVERRIDES])
def test_a_method_override_is_refused_before_sending(gateway: Gateway, upstream: Upstream,
                                                     what: str, request_: dict[str, Any]
                                                     ) -> None:
    denial = refused(gateway, "POST", "/v1/users/me", **request_)
    assert denial.decision == "bad_request" and "override" in str(denial), str(denial)
    assert not upstream.seen, f"{what}: the request reached the upstream"


@pytest.mark.parametrize("header", ["X-Original-URL", "x-rewrite-url", "X-Override-URL"])
def test_a_path_override_header_is_refused_before_sending(gateway: Gateway, upstream: Upstream,
                                                          header: str) -> None:
    denial = refused(gateway, "GET", "/v1/users/me", headers={header: "/admin/users"})
    assert denial.decision == "bad_request" and "override the path" in str(denial), str(denial)
    assert not upstream.seen


def test_ordinary_fields_that_mention_method_still_pass(gateway: Gateway) -> None:
    for body in ('{"payment_method": "pm_1", "method": "card"}',
                 "payment_method=pm_1&x_method=2"):
        assert call(gateway, "POST", "/v1/users/me", body=body).status == 200
    assert call(gateway, "GET", "/v1/users/me", query={"payment_method": "x"}).status == 200
