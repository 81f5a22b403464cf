"""The gateway as Claude Desktop or an HTTP client would use it: ``mcp-keys gateway
serve`` in a real subprocess, the official MCP SDK client over stdio and streamable
HTTP, a real loopback upstream, and the kill switches on the running gateway."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    FileKeys,
    accepting,
    assert_absent,
    free_port,
    run_cli_process,
    wait_for,
)
from tests.gateway_upstream import SECRET, Upstream, running_upstream
from tests.stack_clients import http_session, is_error, text_of

pytest.importorskip("mcp")


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with running_upstream() as server:
        yield server


@pytest.fixture
def setup(manager: FileKeys, upstream: Upstream, tmp_path: Path) -> dict[str, Any]:
    manager.init()
    store = str(manager.store.path)
    env = {"GW_SECRET": SECRET}
    add = run_cli_process("--store", store, "service", "add", "api", "--base-url",
                          f"{upstream.url}/bearer", "--auth", "bearer", "--secret",
                          "env:GW_SECRET", "--allow", "GET /things/**", "--rate-limit",
                          "1000/min", "--description", "the test API", env=env)
    assert add.returncode == 0, add.stderr
    tight = run_cli_process("--store", store, "service", "add", "tight", "--base-url",
                            f"{upstream.url}/bearer", "--auth", "bearer", "--secret",
                            "env:GW_SECRET", "--allow", "GET /**", "--rate-limit", "1/min",
                            env=env)
    assert tight.returncode == 0, tight.stderr
    for name, base, auth, extra in (
            ("slow", f"{upstream.url}/bearer", "bearer", ["--timeout", "1s"]),
            ("down", "http://127.0.0.1:9", "bearer", []),
            ("inquery", f"{upstream.url}/query", "query:api_key", [])):
        done = run_cli_process("--store", store, "service", "add", name, "--base-url", base,
                               "--auth", auth, "--secret", "env:GW_SECRET", "--allow",
                               "GET /**", *extra, env=env)
        assert done.returncode == 0, done.stderr
    agent = manager.create("agent", scopes=["gateway:api", "gateway:tight", "gateway:slow",
                                            "gateway:down", "gateway:inquery"])
    upstream.seen.clear()
    return {"store": store, "agent": agent, "env": env,
            "services": manager.store.path.parent / "services.toml"}


@asynccontextmanager
async def stdio_session(setup: dict[str, Any], key: str) -> AsyncIterator[Any]:
    from mcp import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    env = {**os.environ, **setup["env"], "MCP_API_KEY": key,
           "MCP_KEYS_STORE": setup["store"]}
    params = StdioServerParameters(command=sys.executable,
                                   args=["-m", "mcp_keys", "gateway", "serve"], env=env)
    with (Path(setup["store"]).parent / "gateway-stderr.log").open("a") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write), \
                ClientSession(read, write) as session:
            await session.initialize()
            yield session


@pytest.fixture
def http_gateway(setup: dict[str, Any], tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, **setup["env"], "MCP_KEYS_STORE": setup["store"]}
    log = (tmp_path / "gateway.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "mcp_keys", "gateway", "serve",
                                "--transport", "http", "--port", str(port),
                                "--rate-limit", "30/min"],
                               env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: accepting(port) or process.poll() is not None, 30,
                 "the HTTP gateway")
        assert process.poll() is None, (tmp_path / "gateway.log").read_text()[-2000:]
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        process.wait(10)
        log.close()


async def exercise(session: Any, upstream: Upstream) -> dict[str, Any]:
    """list_services, an allowed, a denied and a hostile execute, and explain."""
    tools = sorted(t.name for t in (await session.list_tools()).tools)
    listed = await session.call_tool("list_services", {})
    allowed = await session.call_tool("execute", {"service": "api", "method": "GET",
                                                  "path": "/things/1", "reason": "test"})
    denied = await session.call_tool("execute", {"service": "api", "method": "POST",
                                                 "path": "/things/1"})
    hostile = await session.call_tool("execute", {"service": "api", "method": "GET",
                                                  "path": "http://169.254.169.254/"})
    explained = await session.call_tool("explain", {"service": "api", "method": "POST",
                                                    "path": "/things/1"})
    tight = [await session.call_tool("execute", {"service": "tight", "method": "GET",
                                                 "path": "/t"}) for _ in range(2)]
    slow = await session.call_tool("execute", {"service": "slow", "method": "GET",
                                               "path": "/slow"})
    down = await session.call_tool("execute", {"service": "down", "method": "GET",
                                               "path": "/x"})
    return {"tools": tools, "listed": text_of(listed), "allowed": allowed, "denied": denied,
            "hostile": hostile, "explained": text_of(explained), "tight": tight,
            "slow": slow, "down": down}


def check_exercise(found: dict[str, Any], upstream: Upstream) -> None:
    assert found["tools"] == ["exec", "execute", "explain", "list_services", "whoami"]
    assert '"api"' in found["listed"] and "GET /things/**" in found["listed"] and \
        "env:GW_SECRET" not in found["listed"], "list_services shows no reference"
    allowed = text_of(found["allowed"]).replace('"status":200', '"status": 200')
    assert not is_error(found["allowed"]) and '"status": 200' in allowed, allowed
    assert is_error(found["denied"]) and "no rule allows POST /things/1" in \
        text_of(found["denied"])
    assert is_error(found["hostile"]) and "absolute URLs are refused" in \
        text_of(found["hostile"])
    assert "no rule allows" in found["explained"]
    first, second = found["tight"]
    assert not is_error(first) and is_error(second) and \
        "rate limit 1/min reached for this key on tight: retry in" in text_of(second)
    assert is_error(found["slow"]) and "did not answer within 1s" in text_of(found["slow"])
    assert is_error(found["down"]) and "could not reach 127.0.0.1:9" in text_of(found["down"])
    assert [s.path for s in upstream.seen][:3] == ["/bearer/things/1", "/bearer/t",
                                                   "/bearer/slow"], \
        "only the allowed call reached the upstream, with the credential"
    assert upstream.authorised("bearer", upstream.seen[0])
    for value in (text_of(found["allowed"]), text_of(found["denied"]), found["listed"]):
        assert_absent(SECRET, value, "a tool result")


def test_stdio_gateway_with_the_official_client(setup: dict[str, Any],
                                                upstream: Upstream,
                                                manager: FileKeys) -> None:
    async def go() -> dict[str, Any]:
        async with stdio_session(setup, setup["agent"].key) as session:
            found = await exercise(session, upstream)
            query = await session.call_tool("execute", {"service": "inquery", "method": "GET",
                                                        "path": "/things"})
            assert not is_error(query) and '"status": 200' in text_of(query).replace(
                '"status":200', '"status": 200'), text_of(query)
            return found

    check_exercise(asyncio.run(go()), upstream)
    errors = (Path(setup["store"]).parent / "gateway-stderr.log").read_text()
    assert_absent(SECRET, errors, "the gateway's stderr (a query: credential is in the URL)")
    decisions = [e.detail["decision"] for e in
                 manager.audit.read(event="gateway_call").events]
    assert decisions == ["allowed", "denied", "bad_request", "allowed", "rate_limited",
                         "upstream_error", "upstream_error", "allowed"], \
        decisions


def test_http_gateway_with_the_official_client(setup: dict[str, Any], upstream: Upstream,
                                               http_gateway: str, tmp_path: Path) -> None:
    async def go() -> dict[str, Any]:
        async with http_session(http_gateway, setup["agent"].key, timeout=15) as session:
            found = await exercise(session, upstream)
            query = await session.call_tool("execute", {"service": "inquery", "method": "GET",
                                                        "path": "/things"})
            assert not is_error(query), text_of(query)
            return found

    check_exercise(asyncio.run(go()), upstream)
    assert_absent(SECRET, (tmp_path / "gateway.log").read_text(errors="replace"),
                  "the gateway's log (a query: credential is in the URL)")
    import urllib.error
    import urllib.request

    request = urllib.request.Request(http_gateway, data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 401, "no key, no gateway"


def test_http_gateway_answers_429_when_a_key_is_over_its_limit(
        setup: dict[str, Any], http_gateway: str) -> None:
    import urllib.error
    import urllib.request

    statuses = []
    for _ in range(40):
        request = urllib.request.Request(http_gateway, data=b"{}", method="POST", headers={
            "Content-Type": "application/json", "Accept": "application/json, text/event-stream",
            "Authorization": f"Bearer {setup['agent'].key}"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                statuses.append(response.status)
        except urllib.error.HTTPError as error:
            statuses.append(error.code)
            if error.code == 429:
                assert int(error.headers["Retry-After"]) >= 1
                assert "over 30/min on the gateway" in error.read().decode()
                break
    assert statuses[-1] == 429 and 429 not in statuses[:30], statuses


def test_a_stdio_gateway_refuses_to_start_without_a_valid_key(
        setup: dict[str, Any]) -> None:
    env = {**os.environ, **setup["env"], "MCP_KEYS_STORE": setup["store"],
           "MCP_API_KEY": "mcpk_notakey"}
    done = subprocess.run([sys.executable, "-m", "mcp_keys", "gateway", "serve"], env=env,
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and \
        "MCP_API_KEY must hold a valid mcp-keys key" in done.stderr, done.stderr


def test_kill_switches_on_a_running_stdio_gateway(setup: dict[str, Any], upstream: Upstream,
                                                   manager: FileKeys) -> None:
    """Revoke the key, disable the service, remove the rule, SIGHUP after an edit that
    leaves the file's signature alone: each stops calls on the running gateway."""
    store = setup["store"]

    async def status(session: Any) -> str:
        result = await session.call_tool("execute", {"service": "api", "method": "GET",
                                                     "path": "/things/1"})
        return "ok" if not is_error(result) else text_of(result)

    async def until(session: Any, predicate: Callable[[str], bool], what: str) -> None:
        end = time.monotonic() + 5
        while time.monotonic() < end:
            if predicate(await status(session)):
                return
            await asyncio.sleep(0.05)
        pytest.fail(f"timed out waiting for {what}", pytrace=False)

    def cli(*args: str) -> None:
        done = run_cli_process("--store", store, *args, env=setup["env"])
        assert done.returncode == 0, done.stderr

    async def go() -> None:
        key = manager.create("switches", scopes=["gateway:api"])
        async with stdio_session(setup, key.key) as session:
            assert await status(session) == "ok"
            cli("service", "disable", "api")
            await until(session, lambda s: "disabled" in s, "disable to take effect")
            cli("service", "enable", "api")
            await until(session, lambda s: s == "ok", "enable to take effect")
            cli("service", "edit", "api", "--remove-allow", "GET /things/**")
            await until(session, lambda s: "denies everything" in s, "rule removal")
            cli("service", "edit", "api", "--allow", "GET /things/**")
            await until(session, lambda s: s == "ok", "the rule to come back")
            cli("revoke", key.record.id)
            await until(session, lambda s: "no longer valid (REVOKED)" in s, "the revoke")

    asyncio.run(go())


def test_sighup_reloads_an_edit_the_signature_misses(setup: dict[str, Any],
                                                     upstream: Upstream,
                                                     tmp_path: Path) -> None:
    services: Path = setup["services"]
    env = {**os.environ, **setup["env"], "MCP_KEYS_STORE": setup["store"],
           "MCP_API_KEY": setup["agent"].key}

    async def go() -> None:
        from mcp import ClientSession
        from mcp.client.stdio import StdioServerParameters, stdio_client

        params = StdioServerParameters(command=sys.executable, env=env, args=[
            "-c", "import os,sys; open(sys.argv[1],'w').write(str(os.getpid())); "
            "from mcp_keys.entry import main; sys.argv=['mcp-keys','gateway','serve']; main()",
            str(tmp_path / "pid")])
        async with stdio_client(params) as (read, write), \
                ClientSession(read, write) as session:
            await session.initialize()
            ok = await session.call_tool("execute", {"service": "api", "method": "GET",
                                                     "path": "/things/1"})
            assert not is_error(ok)
            info = services.stat()
            text = services.read_text()
            edited = text.replace('"GET /things/**"', '"GET /thingz/**"')
            assert len(edited) == len(text)
            with services.open("r+") as handle:  # in place: same inode, size and mtime
                handle.write(edited)
            os.utime(services, ns=(info.st_atime_ns, info.st_mtime_ns))
            await asyncio.sleep(0.6)
            still = await session.call_tool("execute", {"service": "api", "method": "GET",
                                                        "path": "/things/1"})
            assert not is_error(still), "without SIGHUP the unchanged signature hides it"
            os.kill(int((tmp_path / "pid").read_text()), signal.SIGHUP)
            end = time.monotonic() + 5
            while time.monotonic() < end:
                result = await session.call_tool("execute", {
                    "service": "api", "method": "GET", "path": "/things/1"})
                if is_error(result):
                    assert "no rule allows" in text_of(result)
                    return
                await asyncio.sleep(0.05)
            pytest.fail("SIGHUP did not reload the services file", pytrace=False)

    asyncio.run(go())
