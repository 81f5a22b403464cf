"""ApiKeyMiddleware and McpKeysTokenVerifier in-process, over a real ASGI transport."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

try:
    import httpx2 as httpx  # the client the MCP SDK 2.x uses
except ImportError:  # SDK 1.x environments have httpx
    import httpx  # type: ignore[no-redef, import-not-found, unused-ignore]

from mcp_keys import Validator, tokens
from mcp_keys.integrations.mcp import (
    SCOPE_KEY,
    ApiKeyMiddleware,
    McpKeysTokenVerifier,
    mcp_auth,
)
from mcp_keys.integrations.refusal import Receive, Scope, Send
from tests.conftest import FileKeys, assert_absent


async def echo_app(scope: Scope, receive: Receive, send: Send) -> None:
    result = scope.get(SCOPE_KEY)
    body = json.dumps({"key_id": result.key_id if result else None}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def request(app: Any, headers: dict[str, str]) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        # a loopback name: the Host/Origin guard refuses hosts it was not told of
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000"
                                     ) as client:
            return await client.post("/mcp", headers=headers, content=b"{}")

    return asyncio.run(go())


@pytest.fixture
def keys(manager: FileKeys) -> dict[str, str]:
    good = manager.create("good", scopes=["tools:call"])
    weak = manager.create("weak")
    gone = manager.create("gone", scopes=["tools:call"])
    manager.revoke(gone.record.id)
    return {"good": good.key, "weak": weak.key, "gone": gone.key, "id": good.record.id}


def middleware(manager: FileKeys, **kwargs: Any) -> ApiKeyMiddleware:
    validator = Validator(manager.store.path, refresh_interval=0)
    return ApiKeyMiddleware(echo_app, scopes=["tools:call"], validator=validator, **kwargs)


def test_statuses_and_headers(manager: FileKeys, keys: dict[str, str]) -> None:
    app = middleware(manager)
    ok = request(app, {"Authorization": f"Bearer {keys['good']}"})
    assert ok.status_code == 200 and ok.json() == {"key_id": keys["id"]}
    assert request(app, {"X-API-Key": keys["good"]}).status_code == 200
    assert request(app, {"authorization": f"bearer {keys['good']}"}).status_code == 200

    missing = request(app, {})
    assert missing.status_code == 401, "no key"
    assert missing.headers["www-authenticate"] == 'Bearer scope="tools:call"', \
        "RFC 6750 §3.1: no error code without a token, and the scope to ask for"
    assert "error" not in missing.json() and \
        "Authorization: Bearer mcpk_" in missing.json()["error_description"]
    for token in ("garbage", keys["gone"], tokens.generate()):
        denied = request(app, {"Authorization": f"Bearer {token}"})
        assert denied.status_code == 401
        challenge = denied.headers["www-authenticate"]
        assert challenge.startswith('Bearer error="invalid_token", error_description="') and \
            challenge.endswith(', scope="tools:call"'), challenge
        assert denied.json()["error"] == "invalid_token"
        assert_absent(token, denied.text + str(denied.headers), "a 401 response")
    assert "revoked" in request(app, {"Authorization": f"Bearer {keys['gone']}"}).text
    weak = request(app, {"Authorization": f"Bearer {keys['weak']}"})
    assert weak.status_code == 403
    assert weak.headers["www-authenticate"].startswith('Bearer error="insufficient_scope"')
    assert 'scope="tools:call"' in weak.headers["www-authenticate"]
    assert_absent(keys["weak"], weak.text + str(weak.headers), "a 403 response")


def test_store_error_is_503_not_open(manager: FileKeys, keys: dict[str, str]) -> None:
    app = middleware(manager)
    manager.store.path.write_text("{")
    failed = request(app, {"Authorization": f"Bearer {keys['good']}"})
    assert failed.status_code == 503 and failed.headers["retry-after"] == "5"


def test_api_key_required_false_admits_keyless_calls_only(
        manager: FileKeys, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("API_KEY_REQUIRED", "false")
    with caplog.at_level(logging.WARNING, logger="mcp_keys"):
        app = middleware(manager)
    assert any("API_KEY_REQUIRED=false" in r.getMessage() for r in caplog.records)
    assert request(app, {}).status_code == 200
    assert request(app, {"X-API-Key": "garbage"}).status_code == 401
    assert mcp_auth("http://127.0.0.1:1/mcp") == {}


def test_token_verifier_maps_the_key(manager: FileKeys, keys: dict[str, str]) -> None:
    verifier = McpKeysTokenVerifier(validator=Validator(manager.store.path, refresh_interval=0))
    access = asyncio.run(verifier.verify_token(keys["good"]))
    assert access is not None
    assert access.client_id == keys["id"] and access.scopes == ["tools:call"]
    record = manager.get(keys["id"])
    assert record.expires_at is not None
    assert access.expires_at == int(record.expires_at.timestamp())
    assert_absent(keys["good"], repr(access) + access.model_dump_json(), "the AccessToken")
    assert asyncio.run(verifier.verify_token(keys["gone"])) is None
    assert asyncio.run(verifier.verify_token("garbage")) is None
    gated = McpKeysTokenVerifier(required_scopes=["admin"],
                                 validator=Validator(manager.store.path, refresh_interval=0))
    assert asyncio.run(gated.verify_token(keys["good"])) is None


def test_verifier_binds_to_its_server_and_fills_the_resource(manager: FileKeys) -> None:
    here, there = "http://127.0.0.1:8000/mcp", "https://other.example.com/mcp"
    bound = manager.create("bound", resources=[here])
    elsewhere = manager.create("elsewhere", resources=[there])
    anywhere = manager.create("anywhere")
    validator = Validator(manager.store.path, refresh_interval=0)
    verifier = McpKeysTokenVerifier(validator=validator, resource_server_url=here + "/")
    for issued in (bound, anywhere):
        access = asyncio.run(verifier.verify_token(issued.key))
        assert access is not None and access.resource == here, \
            "AccessToken.resource is this server, so validate_token_resource=True works"
    assert asyncio.run(verifier.verify_token(elsewhere.key)) is None, "bound elsewhere"
    unaware = McpKeysTokenVerifier(validator=validator)
    access = asyncio.run(unaware.verify_token(bound.key))
    assert access is not None and access.resource == here, "the one bound server"
    middleware_app = ApiKeyMiddleware(echo_app, validator=validator, resource_server_url=here)
    assert request(middleware_app, {"X-API-Key": elsewhere.key}).status_code == 401
    assert request(middleware_app, {"X-API-Key": bound.key}).status_code == 200


def test_auth_settings_advertise_no_authorization_server_by_default() -> None:
    verifier = McpKeysTokenVerifier(resource_server_url="http://127.0.0.1:8000/mcp")
    settings = verifier.auth_settings(required_scopes=["tools:call"])
    assert settings.resource_server_url is None, \
        "no resource_server_url: the SDK serves no metadata naming a fake issuer"
    assert settings.required_scopes == ["tools:call"]
    real = verifier.auth_settings("https://auth.example.com")
    assert str(real.issuer_url).rstrip("/") == "https://auth.example.com" and \
        str(real.resource_server_url) == "http://127.0.0.1:8000/mcp"


def test_missing_sdk_is_a_clear_error_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "mcp.server.auth.provider", None)  # import fails
    with pytest.raises(ImportError) as info:
        McpKeysTokenVerifier()
    assert "pip install 'mcp-keys[mcp]'" in str(info.value)


def test_the_sdks_own_resource_check_accepts_mcp_keys_keys(manager: FileKeys) -> None:
    """SDK 2.x with ``validate_token_resource=True`` compares ``AccessToken.resource`` with
    its ``resource_server_url``: keys bound to this server, and unbound ones, pass."""
    mcpserver = pytest.importorskip("mcp.server.mcpserver")
    from mcp.server.auth.settings import AuthSettings

    here = "http://127.0.0.1:8000/mcp"
    bound = manager.create("bound", resources=[here])
    anywhere = manager.create("anywhere")
    elsewhere = manager.create("elsewhere", resources=["https://other.example.com/mcp"])
    validator = Validator(manager.store.path, refresh_interval=0)
    verifier = McpKeysTokenVerifier(validator=validator, resource_server_url=here)
    server = mcpserver.MCPServer("checked", token_verifier=verifier, auth=AuthSettings(
        issuer_url="https://auth.example.com", resource_server_url=here,  # type: ignore[arg-type]
        validate_token_resource=True))
    app = server.streamable_http_app()
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "t", "version": "1"}}}

    async def statuses(*keys: str) -> list[int]:
        found = []
        async with server.session_manager.run():
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000"
                                         ) as client:
                for key in keys:
                    response = await client.post("/mcp", json=init, headers={
                        "Authorization": f"Bearer {key}",
                        "Accept": "application/json, text/event-stream"})
                    found.append(response.status_code)
        return found

    assert asyncio.run(statuses(bound.key, anywhere.key, elsewhere.key)) == [200, 200, 401], \
        "bound here and unbound pass the SDK's own check; bound elsewhere does not"
