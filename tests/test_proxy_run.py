"""``mcp-keys run --proxy``: real children (httpx, requests, curl, an MCP stdio server
driven by the official client) behind the real proxy (mitmproxy), a real HTTPS upstream
that accepts only the real credential, and a second listener that must see nothing."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    FileKeys,
    accepting,
    assert_absent,
    mcp_keys_cmd,
    require_proxy_stack,
    run_cli_process,
    wait_for,
)
from tests.gateway_upstream import SECRET, Upstream, issue_certificates, running_upstream

require_proxy_stack()

CHILD = r'''
import json, os, sys
kind, url = sys.argv[1], sys.argv[2]
token = os.environ["UPSTREAM_KEY"]
headers = {"Authorization": f"Bearer {token}"}
try:
    if kind == "httpx":
        import httpx
        reply = httpx.get(url, headers=headers, timeout=15)
        status, body = reply.status_code, reply.text
    else:
        import requests
        reply = requests.get(url, headers=headers, timeout=15)
        status, body = reply.status_code, reply.text
except Exception as exc:
    status, body = -1, type(exc).__name__ + ": " + str(exc)[:300]
print(json.dumps({"status": status, "body": body[:500], "token": token,
                  "env": sorted(os.environ)}))
'''


@pytest.fixture(scope="module")
def https(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Upstream, str]]:
    ca, cert, key = issue_certificates(tmp_path_factory.mktemp("tls"))
    with running_upstream(cert, key) as upstream:
        yield upstream, ca


@pytest.fixture(scope="module")
def bystander() -> Iterator[Upstream]:
    with running_upstream() as other:
        yield other


def proxied_service(manager: FileKeys, upstream: Upstream, ca: str) -> dict[str, Any]:
    """A store with the service ``api`` (bearer to ``upstream``, its secret an env:
    reference, only ``GET /bearer/things/**``) and an agent key for it, the upstream's
    record cleared: the store, key, upstream CA and upstream."""
    manager.init()
    store = str(manager.store.path)
    added = run_cli_process("--store", store, "service", "add", "api", "--base-url",
                            f"{upstream.url}/bearer", "--auth", "bearer", "--secret",
                            "env:GW_SECRET", "--env", "UPSTREAM_KEY", "--allow",
                            "GET /bearer/things/**", "--placeholder", "sk_test_{random}",
                            env={"GW_SECRET": SECRET})
    assert added.returncode == 0, added.stderr
    key = manager.create("proxied", scopes=["gateway:api"])
    upstream.seen.clear()
    return {"store": store, "key": key, "ca": ca, "upstream": upstream}


@pytest.fixture
def setup(manager: FileKeys, https: tuple[Upstream, str], tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "child.py").write_text(CHILD)
    return {**proxied_service(manager, *https), "child": str(tmp_path / "child.py")}


def proxied(setup: dict[str, Any], *command: str, key: str | None = None,
            input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GW_SECRET": SECRET, "MCP_KEYS_STORE": setup["store"],
           "MCP_API_KEY": key or setup["key"].key}
    return subprocess.run(mcp_keys_cmd("run", "--proxy", "--service", "api", "--upstream-ca",
                                       setup["ca"], "--", *command),
                          env=env, capture_output=True, text=True, timeout=timeout,
                          input=input, check=False)


def outcome(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, done.stderr[-1500:]
    for text in (done.stdout, done.stderr):
        assert_absent(SECRET, text, "the child's output")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("client", ["httpx", "requests"])
def test_python_clients_get_the_real_key_only_on_the_allowed_host(
        setup: dict[str, Any], bystander: Upstream, client: str, manager: FileKeys) -> None:
    pytest.importorskip(client)
    upstream: Upstream = setup["upstream"]
    base = f"{upstream.url}/bearer"
    allowed = outcome(proxied(setup, sys.executable, setup["child"], client,
                              f"{base}/things/1"))
    assert allowed["status"] == 200, allowed["body"]
    assert allowed["token"].startswith("sk_test_") and \
        "MCP_API_KEY" not in allowed["env"] and "GW_SECRET" not in allowed["env"], \
        "the child holds a placeholder: no mcp-keys key, no variable an env: reference names"
    (seen,) = upstream.seen
    assert upstream.authorised("bearer", seen), "the upstream saw the real credential"
    denied = outcome(proxied(setup, sys.executable, setup["child"], client, f"{base}/admin"))
    assert denied["status"] == 403 and "no rule allows GET /bearer/admin" in denied["body"]
    other = outcome(proxied(setup, sys.executable, setup["child"], client,
                            f"{bystander.url}/bearer/things/1"))
    assert other["status"] in (403, -1), other
    assert not bystander.seen, "a host that is not a service saw a request"
    events = manager.audit.read().events
    decisions = [(e.event, e.detail.get("decision")) for e in events
                 if e.event in ("gateway_call", "proxy_blocked")]
    assert ("gateway_call", "allowed") in decisions and ("gateway_call", "denied") in decisions
    assert any(e == "proxy_blocked" for e, _ in decisions)
    assert all(e.detail.get("front") == "proxy" for e in events
               if e.event in ("gateway_call", "proxy_blocked"))
    assert_absent(SECRET, b"".join(raw for _, _, raw in manager.audit.lines()), "the audit")


def test_a_bad_key_never_starts_the_child(setup: dict[str, Any]) -> None:
    bad = proxied(setup, sys.executable, "-c", "print('ran')", key="mcpk_notakey")
    assert bad.returncode == 1 and "ran" not in bad.stdout and \
        "valid mcp-keys key" in bad.stderr and bad.stderr.count("\n") == 1


def test_websocket_upgrades_are_refused(setup: dict[str, Any]) -> None:
    pytest.importorskip("httpx")
    upstream: Upstream = setup["upstream"]
    script = ('import httpx, json, os, sys; r = httpx.get(sys.argv[1], headers={'
              '"Authorization": "Bearer " + os.environ["UPSTREAM_KEY"], "Upgrade": "websocket",'
              ' "Connection": "Upgrade"}, timeout=15); '
              'print(json.dumps({"status": r.status_code, "body": r.text}))')
    done = outcome(proxied(setup, sys.executable, "-c", script,
                           f"{upstream.url}/bearer/things/ws"))
    assert done["status"] == 403 and "WebSocket upgrades to api are not allowed" in done["body"]


def test_curl(setup: dict[str, Any]) -> None:
    if shutil.which("curl") is None:
        pytest.skip("no curl")
    upstream: Upstream = setup["upstream"]
    script = ('import os, subprocess, sys; url = sys.argv[1]; r = subprocess.run(["curl", '
              '"-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Authorization: Bearer " '
              '+ os.environ["UPSTREAM_KEY"], url], capture_output=True, text=True); '
              'print(__import__("json").dumps({"status": int(r.stdout or 0)}))')
    done = outcome(proxied(setup, sys.executable, "-c", script,
                           f"{upstream.url}/bearer/things/2"))
    assert done["status"] == 200 and upstream.authorised("bearer", upstream.seen[-1])


@pytest.mark.parametrize("switch", ["revoke", "disable", "rule"])
def test_kill_switches_on_a_running_proxy(setup: dict[str, Any], manager: FileKeys,
                                         switch: str) -> None:
    upstream: Upstream = setup["upstream"]
    script = ('import json, os, sys, time, httpx\n'
              'url, flag = sys.argv[1], sys.argv[2]\n'
              'h = {"Authorization": "Bearer " + os.environ["UPSTREAM_KEY"]}\n'
              'first = httpx.get(url, headers=h, timeout=15).status_code\n'
              'open(flag, "w").write("go")\n'
              'end = time.monotonic() + 10\n'
              'while time.monotonic() < end:\n'
              '    s = httpx.get(url, headers=h, timeout=15).status_code\n'
              '    if s == 403: break\n'
              '    time.sleep(0.05)\n'
              'print(json.dumps({"first": first, "last": s}))\n')
    pytest.importorskip("httpx")
    flag = Path(setup["store"]).parent / "flag"
    env = {**os.environ, "GW_SECRET": SECRET, "MCP_KEYS_STORE": setup["store"],
           "MCP_API_KEY": setup["key"].key}
    child = subprocess.Popen(mcp_keys_cmd("run", "--proxy", "--service", "api",
                                          "--upstream-ca", setup["ca"], "--", sys.executable,
                                          "-c", script, f"{upstream.url}/bearer/things/3",
                                          str(flag)),
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    deadline = time.monotonic() + 30
    while not flag.exists() and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.05)
    pulled = time.monotonic()
    if switch == "revoke":
        manager.revoke(setup["key"].record.id)
    else:
        change = (["service", "disable", "api"] if switch == "disable" else
                  ["service", "edit", "api", "--remove-allow", "GET /bearer/things/**"])
        assert run_cli_process("--store", setup["store"], *change,
                               env={"GW_SECRET": SECRET}).returncode == 0
    out, err = child.communicate(timeout=60)
    result = json.loads(out.strip().splitlines()[-1])
    assert result == {"first": 200, "last": 403}, (result, err[-500:])
    assert time.monotonic() - pulled < 10
    verified = run_cli_process("--store", setup["store"], "audit", "verify")
    assert verified.returncode == 0 and verified.stdout.startswith("OK "), verified.stdout


def text_of(result: Any) -> str:
    return "".join(getattr(part, "text", "") for part in result.content)


def test_an_mcp_stdio_server_behind_the_proxy(setup: dict[str, Any]) -> None:
    import asyncio

    from mcp import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    server = Path(setup["store"]).parent / "vendor_server.py"
    server.write_text(
        "import os, httpx\n"
        "try:\n    from mcp.server.mcpserver import MCPServer\n"
        "except ImportError:\n    from mcp.server.fastmcp import FastMCP as MCPServer\n"
        "app = MCPServer('vendor')\n"
        "@app.tool()\n"
        "def charge(n: int) -> str:\n"
        "    h = {'Authorization': 'Bearer ' + os.environ['UPSTREAM_KEY']}\n"
        f"    return str(httpx.get('{setup['upstream'].url}/bearer/things/' + str(n), "
        "headers=h, timeout=15).status_code)\n"
        "@app.tool()\n"
        "def environment() -> list[str]:\n"
        "    return sorted(k + '=' + v for k, v in os.environ.items())\n"
        "app.run('stdio')\n")
    env = {**os.environ, "GW_SECRET": SECRET, "MCP_KEYS_STORE": setup["store"],
           "MCP_API_KEY": setup["key"].key}

    async def go() -> tuple[str, str]:
        params = StdioServerParameters(
            command=sys.executable, env=env,
            args=["-m", "mcp_keys", "run", "--proxy", "--service", "api", "--upstream-ca",
                  setup["ca"], "--", sys.executable, str(server)])
        async with stdio_client(params) as (read, write), \
                ClientSession(read, write) as session:
            await session.initialize()
            charged = await session.call_tool("charge", {"n": 7})
            listed = await session.call_tool("environment", {})
            return text_of(charged), text_of(listed)

    charged, listed = asyncio.run(go())
    assert charged == "200", charged
    assert_absent(SECRET, listed, "the vendor server's environment")
    assert "UPSTREAM_KEY=sk_test_" in listed
    assert hashlib.sha256(SECRET.encode()).hexdigest() not in listed


NODE_CHILD = r'''
const url = process.argv[2];
const https = require(url.startsWith('https:') ? 'https' : 'http');
const token = process.env.UPSTREAM_KEY;
const viaRequest = () => new Promise((resolve) => {
  https.get(url, { headers: { authorization: `Bearer ${token}` } }, (response) => {
    response.resume(); response.on('end', () => resolve(response.statusCode));
  }).on('error', (error) => resolve(`error: ${error.message}`));
});
const viaFetch = () => fetch(url, { headers: { authorization: `Bearer ${token}` } })
  .then((response) => response.status).catch((error) => `error: ${error.cause || error}`);
(async () => {
  console.log(JSON.stringify({ request: await viaRequest(), fetch: await viaFetch(), token }));
})();
'''


def test_node_https_request_and_fetch(setup: dict[str, Any], bystander: Upstream) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("no node")
    script = Path(setup["store"]).parent / "child.js"
    script.write_text(NODE_CHILD)
    upstream: Upstream = setup["upstream"]
    allowed = outcome(proxied(setup, node, str(script), f"{upstream.url}/bearer/things/9"))
    assert allowed["request"] == 200 and allowed["fetch"] == 200, allowed
    assert allowed["token"].startswith("sk_test_")
    assert sum(upstream.authorised("bearer", s) for s in upstream.seen) == 2
    other = outcome(proxied(setup, node, str(script), f"{bystander.url}/x"))
    assert str(other["request"]).startswith("error") and str(other["fetch"]).startswith(
        "error"), other
    assert not bystander.seen


def test_exit_codes_and_signals_are_the_childs(setup: dict[str, Any]) -> None:
    assert proxied(setup, sys.executable, "-c", "import sys; sys.exit(3)").returncode == 3
    env = {**os.environ, "GW_SECRET": SECRET, "MCP_KEYS_STORE": setup["store"],
           "MCP_API_KEY": setup["key"].key}
    flag = Path(setup["store"]).parent / "ready"
    script = ("import signal, sys, time, pathlib\n"
              "signal.signal(signal.SIGTERM, lambda *a: sys.exit(42))\n"
              f"pathlib.Path({str(flag)!r}).write_text('up')\n"
              "time.sleep(30)\n")
    child = subprocess.Popen(mcp_keys_cmd("run", "--proxy", "--service", "api",
                                          "--upstream-ca", setup["ca"], "--", sys.executable,
                                          "-c", script), env=env)
    deadline = time.monotonic() + 30
    while not flag.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    child.terminate()  # SIGTERM to mcp-keys: forwarded to the server, whose code is ours
    assert child.wait(30) == 42


def test_http2_to_an_http2_upstream(tmp_path: Path, manager: FileKeys) -> None:
    """An upstream that speaks HTTP/2 (hypercorn, ALPN h2) gets HTTP/2 from the proxy when
    the child speaks it, with the credential swapped in as over HTTP/1.1."""
    pytest.importorskip("hypercorn")
    pytest.importorskip("h2")
    import asyncio
    import threading

    from hypercorn.asyncio import serve
    from hypercorn.config import Config


    ca, cert, key = issue_certificates(tmp_path)
    from tests.conftest import free_port

    upstream = Upstream(port=free_port(), scheme="https")
    config = Config()
    config.bind = [f"127.0.0.1:{upstream.port}"]
    config.certfile, config.keyfile = cert, key
    config.alpn_protocols = ["h2", "http/1.1"]
    stop = asyncio.Event()
    loop = asyncio.new_event_loop()

    async def run_server() -> None:
        await serve(upstream, config, shutdown_trigger=stop.wait)

    thread = threading.Thread(target=loop.run_until_complete, args=(run_server(),),
                              daemon=True)
    thread.start()
    try:
        wait_for(lambda: accepting(upstream.port), 20, "hypercorn")
        manager.init()
        store = str(manager.store.path)
        assert run_cli_process("--store", store, "service", "add", "h2api", "--base-url",
                               f"{upstream.url}/bearer", "--auth", "bearer", "--secret",
                               "env:GW_SECRET", "--env", "UPSTREAM_KEY", "--allow", "GET /**",
                               env={"GW_SECRET": SECRET}).returncode == 0
        agent = manager.create("h2", scopes=["gateway:h2api"])
        script = ('import httpx, json, os, sys; c = httpx.Client(http2=True, timeout=15); '
                  'r = c.get(sys.argv[1], headers={"Authorization": "Bearer " + '
                  'os.environ["UPSTREAM_KEY"]}); '
                  'print(json.dumps({"status": r.status_code, "version": r.http_version}))')
        env = {**os.environ, "GW_SECRET": SECRET, "MCP_KEYS_STORE": store,
               "MCP_API_KEY": agent.key}
        done = subprocess.run(mcp_keys_cmd("run", "--proxy", "--service", "h2api",
                                           "--upstream-ca", ca, "--", sys.executable, "-c",
                                           script, f"{upstream.url}/bearer/things/h2"),
                              env=env, capture_output=True, text=True, timeout=60,
                              check=False)
        result = outcome(done)
        assert result == {"status": 200, "version": "HTTP/2"}, result
        (seen,) = upstream.seen
        assert seen.http_version == "2" and upstream.authorised("bearer", seen), seen
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)


def test_upstream_tls_is_verified(setup: dict[str, Any]) -> None:
    """Without --upstream-ca the test upstream's private CA is not trusted: the proxy
    refuses to talk to it, and the credential never leaves."""
    pytest.importorskip("httpx")
    upstream: Upstream = setup["upstream"]
    env = {**os.environ, "GW_SECRET": SECRET, "MCP_KEYS_STORE": setup["store"],
           "MCP_API_KEY": setup["key"].key}
    done = subprocess.run(mcp_keys_cmd("run", "--proxy", "--service", "api", "--",
                                       sys.executable, setup["child"], "httpx",
                                       f"{upstream.url}/bearer/things/1"),
                          env=env, capture_output=True, text=True, timeout=60, check=False)
    result = outcome(done)
    assert result["status"] == 502 or result["status"] == -1, result
    assert not upstream.seen, "the upstream was reached over an unverified connection"
