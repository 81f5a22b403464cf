"""End to end: the example MCP server under uvicorn, the official MCP client, real HTTP."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import FileKeys, assert_absent, run_cli_process

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "protected_server.py"
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "test", "version": "1"}}}
HEADERS = {"Accept": "application/json, text/event-stream"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: object, deadline: float, what: str) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}", pytrace=False)


def accepting(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@pytest.fixture
def server(manager: FileKeys, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    manager.init()
    port = free_port()
    log = tmp_path / "server.log"
    env = dict(os.environ, MCP_KEYS_STORE=str(manager.store.path))
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, str(EXAMPLE), "--port", str(port)], env=env,
                                   stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: accepting(port) or process.poll() is not None, 30, "the server")
            assert process.poll() is None, log.read_text()
            yield f"http://127.0.0.1:{port}/mcp", log
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


BODIES: list[str] = []


def status(url: str, headers: dict[str, str]) -> int:
    response = httpx2.post(url, json=INIT, headers={**HEADERS, **headers}, timeout=10)
    if response.status_code != 200:  # a 200 is an SSE stream left open; errors are small
        BODIES.append(response.text + str(response.headers))
    return response.status_code


async def use_tools(url: str, key: str) -> tuple[list[str], str]:
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"},
                                  timeout=10) as http, \
            streamable_http_client(url, http_client=http) as (read, write), \
            ClientSession(read, write) as session:
        await session.initialize()
        tools = await session.list_tools()
        result = await session.call_tool("add", {"a": 2, "b": 3})
        text = "".join(getattr(part, "text", "") for part in result.content)
        return [tool.name for tool in tools.tools], text


def test_protected_server_end_to_end(server: tuple[str, Path], manager: FileKeys) -> None:
    url, log = server
    store = str(manager.store.path)
    good = manager.create("client", scopes=["tools:call"])
    weak = manager.create("no-scope")
    doomed = manager.create("doomed", scopes=["tools:call"])
    brief = manager.create("brief", scopes=["tools:call"], expires_in=None)

    names, text = asyncio.run(use_tools(url, good.key))
    assert names == ["add"] and text == "5"

    assert status(url, {}) == 401
    assert status(url, {"Authorization": "Bearer mcpk_notakey"}) == 401
    typo = good.key[:-1] + ("X" if good.key[-1] != "X" else "Y")
    assert status(url, {"Authorization": f"Bearer {typo}"}) == 401
    assert status(url, {"Authorization": f"Bearer {weak.key}"}) == 403

    assert status(url, {"Authorization": f"Bearer {doomed.key}"}) == 200
    revoked = run_cli_process("--store", store, "revoke", doomed.record.id)
    assert revoked.returncode == 0
    wait_for(lambda: status(url, {"Authorization": f"Bearer {doomed.key}"}) == 401, 5,
             "the revoke to reach the server")

    # A key that expires one second after it is made, created by the CLI in another process.
    created = run_cli_process("--store", store, "create", "one-second", "--scope", "tools:call",
                              "--expires-in", "1s")
    short = created.stdout.strip()
    short_id = short[5:17]

    def server_saw_it_expire() -> bool:
        status(url, {"Authorization": f"Bearer {short}"})
        return any(e.key_id == short_id and e.detail.get("reason") == "EXPIRED"
                   for e in manager.audit.read(event="validation_failed").events)

    wait_for(server_saw_it_expire, 10, "the server to reject the one-second key as expired")
    assert status(url, {"Authorization": f"Bearer {short}"}) == 401

    assert status(url, {"Authorization": f"Bearer {brief.key}"}) == 200
    served = log.read_text(errors="replace")
    assert BODIES, "error responses were collected"
    for key in (good.key, weak.key, doomed.key, brief.key, short):
        assert_absent(key, served, "the server log")
        for body in BODIES:
            assert_absent(key, body, "an error response")
