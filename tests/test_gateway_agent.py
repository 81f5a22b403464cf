"""The gateway as an agent meets it in its first hour: ``mcp-keys gateway serve`` in a real
subprocess, the official MCP SDK client (1.x or 2.x, whichever this venv holds) over
stdio and streamable HTTP, and a real loopback upstream that records what it received.

JSON bodies of every shape reach the upstream as sent; every refusal (arguments that do
not fit a tool's schema included) is one JSON object with ``reason``, ``rule`` and
``next_step``, and is audited; ``whoami`` names the key; ``serve --transport http`` says
where it listens, and says a bad or busy port in one line."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest

from mcp_keys.models import to_iso
from tests.conftest import (
    FileKeys,
    assert_absent,
    free_port,
    one_error_line,
    run_cli_process,
    wait_for,
)
from tests.gateway_upstream import SECRET, Seen, Upstream, running_upstream
from tests.stack_clients import http_session, is_error, text_of

pytest.importorskip("mcp")

BAD_VALUE = "sk_live_agentput_9f8e7d6c5b4a"  # what an agent put in a bad argument


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with running_upstream() as server:
        yield server


@pytest.fixture
def setup(manager: FileKeys, upstream: Upstream) -> dict[str, Any]:
    manager.init()
    store = str(manager.store.path)
    env = {"GW_SECRET": SECRET}

    def cli(*args: str) -> None:
        done = run_cli_process("--store", store, *args, env=env)
        assert done.returncode == 0, done.stderr

    cli("service", "add", "api", "--base-url", f"{upstream.url}/bearer", "--auth", "bearer",
        "--secret", "env:GW_SECRET", "--allow", "GET /things/**", "--allow",
        "POST /things/**", "--deny", "GET /things/secret/**", "--rate-limit", "1000/min")
    cli("service", "edit", "api", "--allow", "DELETE /things/**", "--scope", "billing:write")
    cli("service", "add", "tight", "--base-url", f"{upstream.url}/bearer", "--auth", "bearer",
        "--secret", "env:GW_SECRET", "--allow", "GET /**", "--rate-limit", "1/min")
    cli("service", "add", "off", "--base-url", f"{upstream.url}/bearer", "--auth", "bearer",
        "--secret", "env:GW_SECRET", "--allow", "GET /**")
    cli("service", "disable", "off")
    cli("service", "add", "echo", "--exec", "--command", "echo", "--allow-args", "hello *",
        "--secret-env", "TOKEN=env:GW_SECRET")
    agent = manager.create("agent-one", scopes=["gateway:api", "gateway:tight",
                                                "gateway:off", "gateway:echo"])
    upstream.seen.clear()
    return {"store": store, "agent": agent, "env": env, "root": Path(store).parent}


@asynccontextmanager
async def stdio_session(setup: dict[str, Any]) -> AsyncIterator[Any]:
    from mcp import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    env = {**os.environ, **setup["env"], "MCP_API_KEY": setup["agent"].key,
           "MCP_KEYS_STORE": setup["store"]}
    params = StdioServerParameters(command=sys.executable,
                                   args=["-m", "mcp_keys", "gateway", "serve"], env=env)
    with (setup["root"] / "stdio-stderr.log").open("a") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write), \
                ClientSession(read, write) as session:
            await session.initialize()
            yield session


@contextmanager
def running_http_gateway(setup: dict[str, Any], errors: Path, *options: str) -> Iterator[str]:
    """``gateway serve --transport http`` (plus ``options``) on a free loopback port, its
    stderr in ``errors``: its URL once it has printed it; stopped afterwards."""
    port = free_port()
    env = {**os.environ, **setup["env"], "MCP_KEYS_STORE": setup["store"]}
    with errors.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "mcp_keys", "gateway", "serve", "--transport", "http",
             "--port", str(port), *options], env=env, stdout=subprocess.DEVNULL, stderr=log)
        url = f"http://127.0.0.1:{port}/mcp"
        try:
            wait_for(lambda: url in errors.read_text() or process.poll() is not None, 30,
                     "the HTTP gateway to print its URL")
            assert process.poll() is None, errors.read_text()[-2000:]
            yield url
        finally:
            process.terminate()
            process.wait(10)


@pytest.fixture
def http_gateway(setup: dict[str, Any], tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The HTTP gateway, ready once it has printed the URL it serves on stderr."""
    errors = tmp_path / "http-stderr.log"
    with running_http_gateway(setup, errors) as url:
        yield url, errors


def for_each_transport(setup: dict[str, Any], url: str, calls: Any) -> list[Any]:
    """Run ``calls(session)`` over stdio, then over streamable HTTP."""
    async def go() -> list[Any]:
        async with stdio_session(setup) as session:
            first = await calls(session)
        async with http_session(url, setup["agent"].key, timeout=15) as session:
            second = await calls(session)
        return [first, second]

    return asyncio.run(go())


def refusal_of(result: Any) -> dict[str, Any]:
    """The structured refusal in an error result's text."""
    assert is_error(result), text_of(result)[:300]
    data: dict[str, Any] = json.loads(text_of(result))
    assert {"error", "reason", "rule", "next_step"} <= set(data), data
    return data


# -- 1. JSON bodies ------------------------------------------------------------------------

BODIES: list[tuple[str, Any, dict[str, str] | None, bytes | Any, str | None]] = [
    # name, body sent, headers sent, what the upstream must parse (or bytes), content type
    ("object", {"amount": 100, "currency": "usd"}, None,
     {"amount": 100, "currency": "usd"}, "application/json"),
    ("array", [1, "two", {"three": 3}], None, [1, "two", {"three": 3}], "application/json"),
    ("nested object with its own type", {"data": {"type": "charge"}},
     {"Content-Type": "application/vnd.api+json"}, {"data": {"type": "charge"}},
     "application/vnd.api+json"),
    ("JSON text", '{"amount": 100}', {"Content-Type": "application/json"},
     {"amount": 100}, "application/json"),
    ("plain text", "amount=100&currency=usd", {"Content-Type":
                                               "application/x-www-form-urlencoded"},
     b"amount=100&currency=usd", "application/x-www-form-urlencoded"),
    ("number", 100, None, b"100", None),
    ("words", "just words", None, b"just words", None),
]


def test_every_json_body_shape_reaches_the_upstream(setup: dict[str, Any],
                                                    upstream: Upstream,
                                                    http_gateway: tuple[str, Path]) -> None:
    async def calls(session: Any) -> list[Any]:
        results = []
        for name, body, headers, _, _ in BODIES:
            arguments: dict[str, Any] = {"service": "api", "method": "POST",
                                         "path": f"/things/{name.replace(' ', '-')}",
                                         "body": body}
            if headers:
                arguments["headers"] = headers
            results.append(await session.call_tool("execute", arguments))
        return results

    outcomes = for_each_transport(setup, http_gateway[0], calls)
    posts = [s for s in upstream.seen if s.method == "POST"]
    assert len(posts) == 2 * len(BODIES), [s.path for s in upstream.seen]
    for transport, results in zip(("stdio", "HTTP"), outcomes, strict=True):
        received: list[Seen] = posts[:len(BODIES)] if transport == "stdio" \
            else posts[len(BODIES):]
        for (name, _, _, expected, kind), result, seen in zip(BODIES, results, received,
                                                              strict=True):
            assert not is_error(result), f"{transport} {name}: {text_of(result)[:300]}"
            got = seen.body if isinstance(expected, bytes) else json.loads(seen.body)
            assert got == expected, f"{transport} {name}: upstream got {seen.body[:200]!r}"
            assert seen.headers.get("content-type") == kind, \
                f"{transport} {name}: content-type {seen.headers.get('content-type')}"
            assert upstream.authorised("bearer", seen), f"{transport} {name}"


def test_a_json_looking_reason_is_kept_as_text(setup: dict[str, Any], manager: FileKeys,
                                               http_gateway: tuple[str, Path]) -> None:
    reasons = ['{"ticket": 42}', "true", "[1, 2]"]

    async def calls(session: Any) -> list[Any]:
        return [await session.call_tool("execute", {"service": "api", "method": "GET",
                                                    "path": "/things/1", "reason": reason})
                for reason in reasons]

    for results in for_each_transport(setup, http_gateway[0], calls):
        for result in results:
            assert not is_error(result), text_of(result)[:300]
    logged = [str(e.detail.get("reason")) for e in
              manager.audit.read(event="gateway_call").events]
    assert [json.loads(r) for r in logged] == [json.loads(r) for r in reasons] * 2, logged


# -- 2 and 4. every refusal is structured, and audited --------------------------------------

def test_bad_arguments_are_refused_in_form_and_audited(setup: dict[str, Any],
                                                       manager: FileKeys,
                                                       http_gateway: tuple[str, Path]) -> None:
    async def calls(session: Any) -> list[Any]:
        return [
            await session.call_tool("execute", {"service": "api", "method": "GET",
                                                "path": "/things/1",
                                                "query": {"token": 12345},
                                                "headers": {"X-Key": [BAD_VALUE]}}),
            await session.call_tool("execute", {"service": "api", "method": "GET"}),
            await session.call_tool("exec", {"service": "echo", "args": BAD_VALUE}),
        ]

    outcomes = for_each_transport(setup, http_gateway[0], calls)
    for results in outcomes:
        wrong_type, missing, exec_args = (refusal_of(r) for r in results)
        for found, tool in ((wrong_type, "execute"), (missing, "execute"),
                            (exec_args, "exec")):
            assert found["reason"] == "bad_request", found
            assert found["rule"] == f"{tool} tool input schema", found
            assert "fix the arguments" in found["next_step"], found
            assert_absent(BAD_VALUE, json.dumps(found), "a refusal")
        assert "query" in wrong_type["error"] and "headers" in wrong_type["error"]
        assert "path" in missing["error"]
    lines = manager.audit.read().events
    refused = [e for e in lines if e.detail.get("decision") == "bad_request"]
    assert [(e.event, e.detail.get("tool")) for e in refused] == [
        ("gateway_call", "execute"), ("gateway_call", "execute"), ("gateway_exec", "exec")] * 2
    assert all(e.key_id == setup["agent"].record.id for e in refused)
    assert refused[0].detail["path"] == "/things/1" and refused[0].detail["service"] == "api"
    for event in refused:
        assert_absent(BAD_VALUE, json.dumps(event.detail), "an audit line")
    assert_absent(SECRET, (setup["root"] / "audit.log").read_text(), "the audit log")


def test_every_denial_names_its_rule_and_next_step(setup: dict[str, Any],
                                                  manager: FileKeys,
                                                  http_gateway: tuple[str, Path]) -> None:
    async def calls(session: Any) -> dict[str, Any]:
        def execute(service: str, method: str, path: str) -> Any:
            return session.call_tool("execute", {"service": service, "method": method,
                                                 "path": path})
        return {
            "deny": await execute("api", "GET", "/things/secret/plans"),
            "unmatched": await execute("api", "PUT", "/v1/charges"),
            "scope": await execute("api", "DELETE", "/things/1"),
            "service": await execute("stripe", "GET", "/v1/charges"),
            "disabled": await execute("off", "GET", "/x"),
            "hygiene": await execute("api", "GET", "http://169.254.169.254/"),
            "kind": await execute("echo", "GET", "/x"),
            "args": await session.call_tool("exec", {"service": "echo",
                                                     "args": ["goodbye", "world"]}),
            "limit": [await execute("tight", "GET", "/t") for _ in range(2)][1],
            "explain": await session.call_tool("explain", {"service": "api",
                                                           "method": "PUT",
                                                           "path": "/v1/charges"}),
        }

    for found in for_each_transport(setup, http_gateway[0], calls):
        got = {name: refusal_of(result) for name, result in found.items() if name != "explain"}
        assert got["deny"]["reason"] == "denied", got["deny"]
        assert got["deny"]["rule"] == "deny GET /things/secret/**", got["deny"]
        assert "--remove-deny" in got["deny"]["next_step"]
        assert got["unmatched"]["rule"] == "no allow rule matches"
        assert "add --allow 'PUT /v1/charges'" in got["unmatched"]["next_step"], \
            got["unmatched"]
        assert got["scope"]["rule"] == "scope billing:write missing", got["scope"]
        assert "key with scope billing:write" in got["scope"]["next_step"]
        assert got["service"]["rule"] == "scope gateway:stripe missing", got["service"]
        assert "list_services" in got["service"]["next_step"]
        assert (got["disabled"]["reason"], got["disabled"]["rule"]) == (
            "disabled", "service off disabled")
        assert "mcp-keys service enable off" in got["disabled"]["next_step"]
        assert (got["hygiene"]["reason"], got["hygiene"]["rule"]) == (
            "bad_request", "path check (before any rule)"), got["hygiene"]
        assert "call the exec tool" in got["kind"]["next_step"]
        assert got["args"]["rule"] == "no args rule matches", got["args"]
        assert "--allow-args" in got["args"]["next_step"]
        assert (got["limit"]["reason"], got["limit"]["rule"]) == (
            "rate_limited", "rate limit 1/min"), got["limit"]
        assert got["limit"]["next_step"].startswith("retry in ") and \
            got["limit"]["retry_after"] > 0
        explained = json.loads(text_of(found["explain"]))
        assert explained["allowed"] is False and \
            explained["rule"] == "no allow rule matches", explained
        for data in got.values():
            assert_absent(SECRET, json.dumps(data), "a refusal")
    decisions = [e.detail for e in manager.audit.read(event="gateway_call").events
                 if e.detail.get("decision") == "denied"]
    assert decisions and all("why" in d and "service" in d for d in decisions), \
        "the audit keeps its fields"


def test_whoami_names_the_key_and_its_services(setup: dict[str, Any],
                                              http_gateway: tuple[str, Path]) -> None:
    async def calls(session: Any) -> Any:
        tools = sorted(t.name for t in (await session.list_tools()).tools)
        assert "whoami" in tools, tools
        return await session.call_tool("whoami", {})

    record = setup["agent"].record
    for result in for_each_transport(setup, http_gateway[0], calls):
        assert not is_error(result), text_of(result)
        found = json.loads(text_of(result))
        assert found["key_id"] == record.id and found["name"] == "agent-one", found
        assert found["scopes"] == sorted(record.scopes)
        assert found["expires_at"] == to_iso(record.expires_at) and found["expires_at"]
        assert [s["name"] for s in found["services"]] == ["api", "echo", "tight"], found
        assert_absent(setup["agent"].key, text_of(result), "whoami")
        assert_absent(SECRET, text_of(result), "whoami")


# -- 5. gateway serve --transport http ----------------------------------------------------

def test_http_serve_prints_its_url_and_keeps_stderr_for_the_operator(
        setup: dict[str, Any], http_gateway: tuple[str, Path]) -> None:
    url, errors = http_gateway

    async def go() -> None:
        async with http_session(url, setup["agent"].key, timeout=15) as session:
            for path in ("/things/secret/x", "/v1/nothing"):
                await session.call_tool("execute", {"service": "api", "method": "GET",
                                                    "path": path})
            await session.call_tool("execute", {"service": "api"})
            await session.call_tool("whoami", {})

    asyncio.run(go())
    lines = [line for line in errors.read_text().splitlines() if line.strip()]
    assert lines == [f"mcp-keys gateway: serving {url} (Ctrl-C stops it)"], lines


def test_stdio_serve_writes_nothing_on_stderr_for_refused_calls(
        setup: dict[str, Any]) -> None:
    async def go() -> None:
        async with stdio_session(setup) as session:
            await session.call_tool("execute", {"service": "api", "method": "GET",
                                                "path": "/things/secret/x"})
            await session.call_tool("execute", {"service": "api"})

    asyncio.run(go())
    text = (setup["root"] / "stdio-stderr.log").read_text()
    assert not text.strip(), text[:500]


@pytest.mark.parametrize("port", ["0", "-1", "65536", "99999999999"])
def test_a_bad_port_is_a_usage_error(setup: dict[str, Any], port: str) -> None:
    done = run_cli_process("--store", setup["store"], "gateway", "serve", "--transport",
                           "http", "--port", port, env=setup["env"], timeout=30)
    assert done.returncode == 2, (done.returncode, done.stderr[-500:])
    assert "--port" in one_error_line(done.stderr)


def test_a_port_in_use_is_one_line_and_exit_1(setup: dict[str, Any]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        done = run_cli_process("--store", setup["store"], "gateway", "serve", "--transport",
                               "http", "--port", str(port), env=setup["env"], timeout=30)
    assert done.returncode == 1, (done.returncode, done.stderr[-500:])
    line = one_error_line(done.stderr)
    assert f"port {port} on 127.0.0.1 is in use" in line and "--port" in line, line


def test_the_per_key_429_names_its_rule_and_next_step(setup: dict[str, Any],
                                                      tmp_path: Path) -> None:
    import urllib.error
    import urllib.request

    with running_http_gateway(setup, tmp_path / "limited.log", "--rate-limit", "3/min") as url:
        found: dict[str, Any] = {}
        for _ in range(10):
            request = urllib.request.Request(
                url, data=b"{}", method="POST", headers={
                    "Content-Type": "application/json",
                    "Accept": "application/json, text/event-stream",
                    "Authorization": f"Bearer {setup['agent'].key}"})
            try:
                urllib.request.urlopen(request, timeout=10).close()
            except urllib.error.HTTPError as error:
                if error.code == 429:
                    found = json.loads(error.read())
                    break
    assert found.get("reason") == "rate_limited", found
    assert found["rule"] == "rate limit 3/min per key", found
    assert found["next_step"].startswith("retry in "), found
