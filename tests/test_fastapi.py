"""``Depends(require_key(...))`` in a real FastAPI app over a real ASGI transport: the
result on success, the middleware's status, headers and (with ``install``) body on
refusal."""

from typing import Annotated, Any

import pytest

from mcp_keys import ValidationResult, Validator
from tests.conftest import FileKeys, assert_absent
from tests.test_middleware import echo_app, request

pytest.importorskip("fastapi")

import fastapi

from mcp_keys.integrations.fastapi import KeyRefused, install, require_key
from mcp_keys.integrations.mcp import ApiKeyMiddleware


def build(validator: Validator, *, exact: bool) -> fastapi.FastAPI:
    app = fastapi.FastAPI()
    if exact:
        install(app)
    caller = require_key(["tools:call"], validator=validator)

    @app.post("/mcp")
    def whoami(key: Annotated[ValidationResult, fastapi.Depends(caller)]) -> dict[str, Any]:
        return {"key_id": key.key_id}

    return app


def test_same_refusals_as_the_middleware(manager: FileKeys) -> None:
    good = manager.create("good", scopes=["tools:call"])
    weak = manager.create("weak")
    gone = manager.create("gone", scopes=["tools:call"])
    manager.revoke(gone.record.id)
    validator = Validator(manager.store.path, refresh_interval=0)
    exact = build(validator, exact=True)
    plain = build(validator, exact=False)
    middleware = ApiKeyMiddleware(echo_app, scopes=["tools:call"], validator=validator)
    ok = request(exact, {"Authorization": f"Bearer {good.key}"})
    assert ok.status_code == 200 and ok.json() == {"key_id": good.record.id}
    assert request(exact, {"X-API-Key": good.key}).status_code == 200
    cases = [{}, {"Authorization": "Bearer garbage"}, {"Authorization": f"Bearer {gone.key}"},
             {"Authorization": f"Bearer {weak.key}"}]
    for headers in cases:
        mine = request(middleware, headers)
        theirs = request(exact, headers)
        assert (theirs.status_code, theirs.headers["www-authenticate"], theirs.json()) == \
            (mine.status_code, mine.headers["www-authenticate"], mine.json()), \
            f"FastAPI and the middleware differ for {sorted(headers)}"
        bare = request(plain, headers)
        assert bare.status_code == mine.status_code and \
            bare.headers["www-authenticate"] == mine.headers["www-authenticate"] and \
            bare.json() == {"detail": mine.json()["error_description"]}, \
            "without install(), FastAPI's own body carries the same words"
        for key in (good.key, weak.key, gone.key):
            assert_absent(key, theirs.text + str(theirs.headers), "a FastAPI refusal")


def test_store_error_is_503(manager: FileKeys) -> None:
    good = manager.create("good", scopes=["tools:call"])
    validator = Validator(manager.store.path, refresh_interval=0)
    app = build(validator, exact=True)
    manager.store.path.write_text("{")
    assert request(app, {"Authorization": f"Bearer {good.key}"}).status_code == 503


def test_key_refused_is_an_http_exception() -> None:
    from mcp_keys.integrations.refusal import refusal
    from mcp_keys.models import Reason

    refused = KeyRefused(refusal(ValidationResult(Reason.MISSING), token_sent=False))
    assert isinstance(refused, fastapi.HTTPException) and refused.status_code == 401
