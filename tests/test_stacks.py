"""Every stack's example under a real server process, driven by real MCP clients: the
official SDK's client (1.x or 2.x) and FastMCP's, plus plain HTTP for the refusals.

Each stack answers alike: tools work with a valid key; no key, a malformed, revoked,
expired or wrongly bound key get 401; a key without the server's scope gets 403; a
write tool refuses a key without ``notes:write``; no OAuth metadata is served; a revoke
from another process reaches the running server; no key appears in any output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import pytest

from tests.conftest import (
    FileKeys,
    accepting,
    assert_absent,
    free_port,
    run_cli_process,
    wait_for,
)
from tests.stack_clients import call, sdk_major

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "test", "version": "1"}}}


def _have(module: str) -> bool:
    try:
        return find_spec(module) is not None
    except ModuleNotFoundError:
        return False


@dataclass(frozen=True)
class Stack:
    name: str
    example: str
    clients: tuple[str, ...]
    available: Callable[[], bool]


STACKS = [
    Stack("sdk2", "sdk2_server.py", ("sdk",), lambda: sdk_major() == 2),
    Stack("sdk1", "sdk1_server.py", ("sdk",), lambda: sdk_major() == 1),
    Stack("fastmcp", "fastmcp_server.py", ("fastmcp", "sdk"), lambda: _have("fastmcp")),
    Stack("fastapi", "fastapi_server.py", ("sdk",),
          lambda: sdk_major() == 2 and _have("fastapi")),
    Stack("asgi", "asgi_server.py", ("sdk",), lambda: sdk_major() == 2),
]


def required_stacks() -> set[str]:
    """``MCP_KEYS_REQUIRE_STACKS`` (CI) names stacks that must run here, not skip."""
    return {s for s in os.environ.get("MCP_KEYS_REQUIRE_STACKS", "").split(",") if s}


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: str


SEEN: list[str] = []  # every refusal's headers and body, searched for keys at the end


def post(url: str, headers: dict[str, str], payload: object = INIT) -> Reply:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json",
                                              "Accept": "application/json, text/event-stream",
                                              **headers})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return Reply(response.status, {k.lower(): v for k, v in response.headers.items()}, "")
    except urllib.error.HTTPError as error:
        reply = Reply(error.code, {k.lower(): v for k, v in error.headers.items()},
                      error.read().decode(errors="replace"))
        SEEN.append(json.dumps(reply.headers) + reply.body)
        return reply


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


@pytest.fixture(params=STACKS, ids=lambda s: s.name)
def stack(request: pytest.FixtureRequest) -> Stack:
    chosen: Stack = request.param
    if not chosen.available():
        if chosen.name in required_stacks():
            pytest.fail(f"stack {chosen.name} is required here but its packages are missing")
        pytest.skip(f"stack {chosen.name} is not installed in this environment")
    return chosen


@contextmanager
def running_example(chosen: Stack, env: dict[str, str], log: Path) -> Iterator[int]:
    """The stack's example under uvicorn on a free loopback port (its port), with ``env``
    and its output in ``log``; stopped afterwards."""
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, str(EXAMPLES / chosen.example),
                                    "--port", str(port)],
                                   env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: accepting(port) or process.poll() is not None, 60, "the server")
            assert process.poll() is None, f"the {chosen.name} example exited"
            yield port
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def served(stack: Stack, manager: FileKeys, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    manager.init()
    log = tmp_path / "server.log"
    env = dict(os.environ, MCP_KEYS_STORE=str(manager.store.path))
    with running_example(stack, env, log) as port:
        yield f"http://127.0.0.1:{port}/mcp", log


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_stack_end_to_end(stack: Stack, served: tuple[str, Path], manager: FileKeys) -> None:
    url, log = served
    store = str(manager.store.path)
    reader = manager.create("reader", scopes=["tools:call"])
    writer = manager.create("writer", scopes=["tools:call", "notes:write"])
    weak = manager.create("no-scope")
    doomed = manager.create("doomed", scopes=["tools:call"])
    here = manager.create("here", scopes=["tools:call"], resources=[url])
    elsewhere = manager.create("elsewhere", scopes=["tools:call"],
                               resources=["https://other.example.com/mcp"])
    secrets = [reader.key, writer.key, weak.key, doomed.key, here.key, elsewhere.key]
    write_tool = "append_note" if stack.name == "fastmcp" else "write_note"

    for client in stack.clients:
        done = call(client, url, writer.key, write_tool, {"name": client, "text": "hi"})
        assert not done.is_error and done.text in ("saved", "appended"), \
            f"{client}: a writer's write failed: {done.text}"
        read = call(client, url, reader.key, "read_note", {"name": client})
        assert "read_note" in read.tools and not read.is_error and read.text == "hi", \
            f"{client}: a reader could not read: {read.text}"
        refused = call(client, url, reader.key, write_tool, {"name": client, "text": "x"})
        assert refused.is_error and "notes:write" in refused.text, \
            f"{client}: a reader's write was not refused clearly: {refused.text}"
        assert call(client, url, here.key, "read_note", {"name": client}).text == "hi", \
            f"{client}: a key bound to this server was refused"
    if stack.name == "fastmcp":
        assert "write_note" not in read.tools, "FastMCP's own require_scopes hides the tool"

    missing = post(url, {})
    assert missing.status == 401, f"no key: {missing.status}"
    challenge = missing.headers.get("www-authenticate", "")
    assert challenge == 'Bearer scope="tools:call"', \
        f"no key: the challenge must name the scope and carry no error code: {challenge}"
    assert "Authorization: Bearer mcpk_" in json.loads(missing.body)["error_description"], \
        "the 401 body says how to send a key"
    typo = reader.key[:-1] + ("X" if reader.key[-1] != "X" else "Y")
    for token in ("mcpk_notakey", typo, elsewhere.key):
        bad = post(url, bearer(token))
        assert bad.status == 401, f"a bad key: {bad.status}"
        assert bad.headers["www-authenticate"].startswith('Bearer error="invalid_token"') and \
            'scope="tools:call"' in bad.headers["www-authenticate"], bad.headers
        assert "resource_metadata" not in bad.headers["www-authenticate"]
    assert "bound to other MCP servers" in post(url, bearer(elsewhere.key)).body
    scoped = post(url, bearer(weak.key))
    assert scoped.status == 403 and 'error="insufficient_scope"' in \
        scoped.headers["www-authenticate"] and 'scope="tools:call"' in \
        scoped.headers["www-authenticate"], f"no scope: {scoped.status} {scoped.headers}"

    base = url.rsplit("/", 1)[0]
    if stack.name == "fastapi":  # the app's own route, behind Depends(require_key(...))
        request = urllib.request.Request(base + "/api/whoami", headers=bearer(reader.key))
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.loads(response.read())["key_id"] == reader.record.id
        try:
            urllib.request.urlopen(base + "/api/whoami", timeout=10)
            pytest.fail("the FastAPI route admitted a request without a key", pytrace=False)
        except urllib.error.HTTPError as error:
            assert error.code == 401 and \
                error.headers["www-authenticate"] == 'Bearer scope="tools:call"', \
                "the route refuses exactly as the MCP endpoint does"

    for path in ("/.well-known/oauth-protected-resource",
                 "/.well-known/oauth-protected-resource/mcp",
                 "/.well-known/oauth-authorization-server"):
        assert get(base + path) in (401, 404), \
            f"{path} is served, but no authorization server exists"

    assert post(url, bearer(doomed.key)).status == 200
    assert run_cli_process("--store", store, "revoke", doomed.record.id).returncode == 0
    wait_for(lambda: post(url, bearer(doomed.key)).status == 401, 5,
             "the revoke to reach the server")

    created = run_cli_process("--store", store, "create", "one-second", "--scope", "tools:call",
                              "--expires-in", "1s")
    short = created.stdout.strip()
    secrets.append(short)

    def server_saw_it_expire() -> bool:
        post(url, bearer(short))
        return any(e.key_id == short[5:17] and e.detail.get("reason") == "EXPIRED"
                   for e in manager.audit.read(event="validation_failed").events)

    wait_for(server_saw_it_expire, 10, "the server to refuse the one-second key as expired")
    assert post(url, bearer(short)).status == 401

    served_log = log.read_text(errors="replace")
    assert SEEN, "refusals were collected"
    for key in secrets:
        assert_absent(key, served_log, "the server log")
        for seen in SEEN:
            assert_absent(key, seen, "a refusal")
