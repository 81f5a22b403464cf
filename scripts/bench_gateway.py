"""``bench.py gateway``: (a) the direct request with a pooled client, (b) a bare forwarding
MCP tool on the same SDK and transport, (c) the gateway's ``execute``; p50/p99 over stdio
and streamable HTTP, calls/s with 8 concurrent HTTP clients, and spawn-to-first-call over
stdio (process start, initialize and one call, the bare tool's and the gateway's spawns
alternating). All on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

Row = tuple[str, str, str, str]
HERE = Path(__file__).resolve().parent
SECRET = "sk_bench_upstream_credential_0123"
BODY = json.dumps({"id": "ch_1", "amount": 1200, "currency": "usd"}).encode()


async def upstream_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(BODY)).encode())]})
    await send({"type": "http.response.body", "body": BODY})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def start_upstream() -> tuple[str, Any]:
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(upstream_app, host="127.0.0.1", port=port,
                                           log_level="error", lifespan="off"))
    threading.Thread(target=server.run, daemon=True).start()
    wait_port(port)
    return f"http://127.0.0.1:{port}", server


def prepare_store(root: Path, upstream: str) -> tuple[str, str]:
    env = dict(os.environ, MCP_KEYS_STORE=str(root / "keys.json"), BENCH_SECRET=SECRET)
    cli = [sys.executable, "-m", "mcp_keys"]
    subprocess.run([*cli, "init"], env=env, check=True, capture_output=True, cwd=root)
    subprocess.run([*cli, "service", "add", "up", "--base-url", upstream, "--auth", "bearer",
                    "--secret", "env:BENCH_SECRET", "--allow", "GET /**"], env=env,
                   check=True, capture_output=True, cwd=root)
    key = subprocess.run([*cli, "create", "bench", "--scope", "gateway:up"], env=env,
                         check=True, capture_output=True, text=True, cwd=root).stdout.strip()
    return str(root / "keys.json"), key


@asynccontextmanager
async def stdio(command: list[str], env: dict[str, str]) -> AsyncIterator[Any]:
    from mcp import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    params = StdioServerParameters(command=command[0], args=command[1:], env=env)
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


@asynccontextmanager
async def http(url: str, key: str | None) -> AsyncIterator[Any]:
    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as client, \
            streamable_http_client(url, http_client=client) as (read, write), \
            ClientSession(read, write) as session:
        await session.initialize()
        yield session


def caller(session: Any, gateway: bool) -> Callable[[], Awaitable[Any]]:
    if gateway:
        return lambda: session.call_tool("execute", {"service": "up", "method": "GET",
                                                     "path": "/v1/charges/ch_1"})
    return lambda: session.call_tool("forward", {"path": "/v1/charges/ch_1"})


async def timed(call: Callable[[], Awaitable[Any]], count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        result = await call()
        samples.append((time.perf_counter() - started) * 1000)
        error = getattr(result, "is_error", None) or getattr(result, "isError", False)
        if error:
            raise RuntimeError("a benchmark call failed: " + str(result.content)[:200])
    return samples


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def direct(upstream: str, count: int) -> list[float]:
    import httpx2

    async with httpx2.AsyncClient(trust_env=False) as client:
        for _ in range(20):
            await client.get(upstream + "/v1/charges/ch_1")
        samples = []
        for _ in range(count):
            started = time.perf_counter()
            await client.get(upstream + "/v1/charges/ch_1")
            samples.append((time.perf_counter() - started) * 1000)
    return samples


async def interleaved(bare: Any, gate: Any, rounds: int = 6, each: int = 100
                      ) -> tuple[list[float], list[float]]:
    b_call, g_call = caller(bare, False), caller(gate, True)
    await timed(b_call, 30)
    await timed(g_call, 30)
    b: list[float] = []
    g: list[float] = []
    for _ in range(rounds):
        b += await timed(b_call, each)
        g += await timed(g_call, each)
    return b, g


async def throughput(url: str, key: str | None, gateway: bool, clients: int = 8,
                     seconds: float = 4.0) -> float:
    done = 0

    async def one() -> None:
        nonlocal done
        async with http(url, key) as session:
            call = caller(session, gateway)
            await call()
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                await call()
                done += 1

    started = time.monotonic()
    await asyncio.gather(*(one() for _ in range(clients)))
    return done / (time.monotonic() - started)


def spawn_http(command: list[str], env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    wait_port(port)
    return process


def bench() -> list[Row]:
    upstream, server = start_upstream()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        store, key = prepare_store(Path(tmp), upstream)
        env = dict(os.environ, MCP_KEYS_STORE=store, BENCH_SECRET=SECRET, MCP_API_KEY=key)
        gateway_cmd = [sys.executable, "-m", "mcp_keys", "gateway", "serve"]
        bare_cmd = [sys.executable, str(HERE / "bare_forwarder.py"), upstream]

        async def over_stdio() -> tuple[list[float], list[float], list[float]]:
            async with stdio([*bare_cmd, "stdio"], env) as bare, \
                    stdio(gateway_cmd, env) as gate:
                b, g = await interleaved(bare, gate)
            return await direct(upstream, 600), b, g

        a, b, c = asyncio.run(over_stdio())
        rows += _rows("stdio", a, b, c)
        rows.append(spawn_row([*bare_cmd, "stdio"], gateway_cmd, env))
        rows += asyncio.run(kill_switches(gateway_cmd, env, store))

        bare_port, gate_port = free_port(), free_port()
        bare = spawn_http([*bare_cmd, "http", str(bare_port)], env, bare_port)
        gate = spawn_http([*gateway_cmd, "--transport", "http", "--port", str(gate_port)],
                          env, gate_port)
        try:
            bare_url = f"http://127.0.0.1:{bare_port}/mcp"
            gate_url = f"http://127.0.0.1:{gate_port}/mcp"

            async def over_http() -> tuple[list[float], list[float], float, float]:
                async with http(bare_url, None) as b_session, http(gate_url, key) as g_session:
                    b_samples, g_samples = await interleaved(b_session, g_session)
                b_rate = g_rate = 0.0
                for _ in range(3):  # alternating rounds, the best of each
                    b_rate = max(b_rate, await throughput(bare_url, None, False))
                    g_rate = max(g_rate, await throughput(gate_url, key, True))
                return b_samples, g_samples, b_rate, g_rate

            b, c, b_rate, c_rate = asyncio.run(over_http())
            rows += _rows("streamable HTTP", a, b, c)
            rows.append(("gateway execute, 8 HTTP clients", f"{c_rate:,.0f} calls/s",
                         f"bare tool {b_rate:,.0f} calls/s",
                         f"{c_rate / b_rate:.2f}x (target >= 0.8)"))
        finally:
            for process in (bare, gate):
                process.terminate()
                process.wait(10)
    server.should_exit = True
    return rows


async def kill_switches(gateway_cmd: list[str], env: dict[str, str], store: str
                        ) -> list[Row]:
    """From the start of the command that pulls the plug to the first refused call on a
    running stdio gateway (an upper bound: the CLI's own start-up is included)."""
    cli = [sys.executable, "-m", "mcp_keys", "--store", store]
    rows = []
    async with stdio(gateway_cmd, env) as gate:
        call = caller(gate, True)
        for label, off, on in (
                ("service disable", ["service", "disable", "up"], ["service", "enable", "up"]),
                ("rule removal", ["service", "edit", "up", "--remove-allow", "GET /**"],
                 ["service", "edit", "up", "--allow", "GET /**"])):
            started = time.perf_counter()
            subprocess.run([*cli, *off], env=env, check=True, capture_output=True)
            while True:
                result = await call()
                if getattr(result, "is_error", None) or getattr(result, "isError", False):
                    break
            rows.append((f"kill switch: {label} -> refused", "",
                         f"{(time.perf_counter() - started) * 1000:.0f} ms",
                         "target <= 1000 ms"))
            subprocess.run([*cli, *on], env=env, check=True, capture_output=True)
            while True:
                result = await call()
                if not (getattr(result, "is_error", None) or getattr(result, "isError", False)):
                    break
    return rows


async def first_call(command: list[str], env: dict[str, str], gateway: bool) -> float:
    """Milliseconds from spawning ``command`` to the answer of its first tool call."""
    started = time.perf_counter()
    async with stdio(command, env) as session:
        await timed(caller(session, gateway), 1)
        return (time.perf_counter() - started) * 1000


def spawn_row(bare_cmd: list[str], gateway_cmd: list[str], env: dict[str, str],
              rounds: int = 7) -> Row:
    """Spawn-to-first-call, median of ``rounds`` alternating spawns of each."""
    bare: list[float] = []
    gate: list[float] = []
    for _ in range(rounds):
        bare.append(asyncio.run(first_call(bare_cmd, env, False)))
        gate.append(asyncio.run(first_call(gateway_cmd, env, True)))
    b, g = pct(bare, 0.5), pct(gate, 0.5)
    return ("gateway spawn to first call over stdio, median", f"{g:.0f} ms",
            f"bare tool {b:.0f} ms", f"{g / b:.2f}x bare (target <= 1.0)")


def _rows(transport: str, a: list[float], b: list[float], c: list[float]) -> list[Row]:
    rows = []
    for label, q, target in (("p50", 0.5, 1.05), ("p99", 0.99, 1.25)):
        rows.append((f"gateway execute over {transport}, {label}", f"{pct(c, q):.2f} ms",
                     f"bare tool {pct(b, q):.2f} ms, direct {pct(a, q):.2f} ms",
                     f"{pct(c, q) / pct(b, q):.2f}x bare (target <= {target})"))
    return rows


if __name__ == "__main__":
    for row in bench():
        print("  ".join(row))

