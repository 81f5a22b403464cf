"""A database whose TCP port is open but silent: validators refuse, they never hang.

Two kinds of silence: a loopback proxy in front of the real server that stops passing
bytes (the kernel still accepts and acknowledges, as with a hung host), and ``SIGSTOP`` on
the real server's processes. Each call that could hang runs under ``bounded``, so a hang
fails the test instead of stalling the suite."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import pytest

from mcp_keys import KeyManager, Reason, Validator
from mcp_keys.errors import StoreError
from mcp_keys.models import ValidationResult
from tests.conftest import free_port, wait_for

T = TypeVar("T")
LOOKUP_LIMIT = 1.0  # the documented bound is 0.25 s; this leaves room for a busy machine


def bounded(work: Callable[[], T], seconds: float, what: str) -> T:
    """``work()``, or fail if it has not returned within ``seconds`` (it hung)."""
    box: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            box.append(work())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"{what} still blocked after {seconds:g}s", pytrace=False)
    if errors:
        raise errors[0]
    return box[0]


def unknown_key() -> str:
    """A well-formed key that no store holds."""
    from mcp_keys import tokens

    return tokens.generate()


class Gate:
    """A loopback TCP proxy to the real server that can fall silent: while closed, it
    accepts connections and the kernel acknowledges what is sent, but no byte passes."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.open = threading.Event()
        self.open.set()
        self.listener = socket.create_server(("127.0.0.1", free_port()))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            self.sockets += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                self.open.wait()
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.open.set()
        self.listener.close()
        for sock in self.sockets:
            sock.close()


@pytest.fixture
def gate(pg_url: str) -> Iterator[tuple[Gate, str]]:
    """The gate, and the store URL through it."""
    parts = urlsplit(pg_url)
    assert parts.hostname is not None and parts.port is not None
    proxy = Gate((parts.hostname, parts.port))
    try:
        yield proxy, pg_url.replace(f"{parts.hostname}:{parts.port}",
                                    f"127.0.0.1:{proxy.port}")
    finally:
        proxy.close()


def test_a_silent_server_from_the_start_refuses_in_bounded_time() -> None:
    """A port that accepts and never answers: the validator refuses and the CLI's
    operations fail with a clear error, neither hangs."""
    silent = socket.create_server(("127.0.0.1", free_port()))
    held: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                held.append(silent.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    url = f"postgresql://nobody@127.0.0.1:{silent.getsockname()[1]}/db?connect_timeout=2"
    try:
        check = bounded(lambda: Validator(url, max_stale=0), 15, "a validator's start")
        result = bounded(lambda: check.validate(unknown_key()), 5, "a validation")
        assert result.reason is Reason.STORE_ERROR, result.reason.value
        with pytest.raises(StoreError) as caught:
            bounded(lambda: KeyManager(url).list(), 15, "a lifecycle operation")
        assert "cannot connect" in str(caught.value) or "timeout" in str(caught.value)
    finally:
        silent.close()
        for sock in held:
            sock.close()


@pytest.mark.parametrize("step", ["query", "commit"])
def test_every_wait_on_a_silent_store_has_a_deadline(gate: tuple[Gate, str],
                                                     step: str) -> None:
    """The connections of lifecycle commands and audit appends: a query, and a COMMIT,
    fail with a clear error once the deadline passes; a new connection then works."""
    from mcp_keys.stores.pg_deadline import NoAnswer
    from mcp_keys.stores.postgres import PostgresStore

    proxy, url = gate
    store = PostgresStore(url)
    conn = store.connect(deadline=1)
    if step == "commit":
        conn.autocommit = False
        conn.execute("SELECT 1")
    wait: Callable[[], object] = (conn.commit if step == "commit"
                                  else lambda: conn.execute("SELECT 1"))
    proxy.open.clear()
    try:
        with pytest.raises(NoAnswer, match="no answer from the server within 1s"):
            bounded(wait, 10, step)
        assert conn.broken, "a connection that missed its deadline is not reused"
    finally:
        proxy.open.set()
        conn.close()
    fresh = store.connect(deadline=1)
    assert fresh.execute("SELECT 1").fetchone() == (1,)
    fresh.close()


def test_a_store_that_falls_silent_refuses_after_max_stale(
        gate: tuple[Gate, str], pg_url: str) -> None:
    proxy, url = gate
    manager = KeyManager(pg_url)
    issued = manager.create("svc")
    check = Validator(url, max_stale=1)
    assert check.validate(issued.key).valid
    proxy.open.clear()
    manager.revoke(issued.record.id)  # the validator cannot hear of it
    wait_for(lambda: bounded(lambda: check.validate(issued.key), 5, "a validation").reason
             is Reason.STORE_ERROR, 10, "the silent store to be refused")
    proxy.open.set()
    wait_for(lambda: check.validate(issued.key).reason is Reason.REVOKED, 20,
             "the revoke once the store answers again")


def test_an_unknown_key_never_waits_on_a_silent_store(
        gate: tuple[Gate, str], pg_url: str) -> None:
    proxy, url = gate
    manager = KeyManager(pg_url)
    issued = manager.create("svc")
    check = Validator(url, max_stale=30)
    assert check.validate(unknown_key()).reason is Reason.UNKNOWN  # the look-up works
    proxy.open.clear()
    try:
        for _ in range(3):  # the first look-up is stuck: the next ones must not queue
            start = time.monotonic()
            result = bounded(lambda: check.validate(unknown_key()), 10, "an unknown key")
            assert result.reason is Reason.UNKNOWN, result.reason.value
            assert time.monotonic() - start < LOOKUP_LIMIT, "the look-up was not bounded"
            time.sleep(0.06)  # past the 50 ms between look-ups, so each one looks
        assert check.validate(issued.key).valid, "a known key is served within max_stale"
    finally:
        proxy.open.set()


def front_door(kind: str, validator: Validator) -> Callable[[str], Awaitable[bool]]:
    """Whether a front door that runs on the event loop admits a key."""
    if kind == "sdk":
        pytest.importorskip("mcp.server.auth.provider")
        from mcp_keys.integrations.mcp import McpKeysTokenVerifier

        sdk = McpKeysTokenVerifier(validator=validator)
        return lambda key: _admitted(sdk.verify_token(key))
    if kind == "fastmcp":
        pytest.importorskip("fastmcp")
        from mcp_keys.integrations.fastmcp import McpKeysVerifier

        fast = McpKeysVerifier(validator=validator)
        return lambda key: _admitted(fast.verify_token(key))
    from mcp_keys.integrations.mcp import ApiKeyMiddleware
    from mcp_keys.integrations.refusal import Message, Receive, Scope, Send

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    middleware = ApiKeyMiddleware(inner, validator=validator)

    async def call(key: str) -> bool:
        sent: list[Message] = []

        async def receive() -> Message:
            return {"type": "http.request", "body": b""}

        async def send(message: Message) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "GET", "path": "/", "headers":
                 [(b"host", b"127.0.0.1:8000"), (b"authorization", f"Bearer {key}".encode())]}
        await middleware(scope, receive, send)
        return bool(sent[0]["status"] == 200)

    return call


async def _admitted(verified: Awaitable[object]) -> bool:
    return await verified is not None


@pytest.mark.parametrize("kind", ["sdk", "fastmcp", "middleware"])
def test_front_doors_never_block_the_event_loop(
        gate: tuple[Gate, str], pg_url: str, kind: str) -> None:
    proxy, url = gate
    issued = KeyManager(pg_url).create("svc")
    admits = front_door(kind, Validator(url, max_stale=30))

    async def scenario() -> tuple[bool, bool, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.005)

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        before = ticks
        unknown = await admits(unknown_key())
        during = ticks - before
        known = await admits(issued.key)
        task.cancel()
        return unknown, known, during

    proxy.open.clear()
    try:
        unknown, known, during = bounded(lambda: asyncio.run(scenario()), 10,
                                         "the event loop")
    finally:
        proxy.open.set()
    assert not unknown and known, "an unknown key refused, a known one admitted"
    assert during > 0, "the loop ran nothing while the look-up waited for the database"


# -- SIGSTOP on the real server ---------------------------------------------------------


def server_pids() -> list[int]:
    """The throwaway cluster's postmaster and every process it started."""
    data = os.environ.get("MCP_KEYS_TEST_PGDATA")
    if not data:
        pytest.skip("needs MCP_KEYS_TEST_PGDATA (scripts/pg-throwaway.sh)")
    postmaster = int((Path(data) / "postmaster.pid").read_text().split()[0])
    children = Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split()
    return [postmaster, *map(int, children)]


def test_a_stopped_server_is_refused_and_recovered(pg_url: str) -> None:
    manager = KeyManager(pg_url)
    issued = manager.create("svc")
    check = Validator(pg_url, max_stale=1)
    assert check.validate(issued.key).valid
    stopped = server_pids()
    try:
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
        start = time.monotonic()
        result: ValidationResult = bounded(lambda: check.validate(unknown_key()), 5,
                                           "an unknown key")
        assert result.reason in (Reason.UNKNOWN, Reason.STORE_ERROR), result.reason.value
        assert time.monotonic() - start < LOOKUP_LIMIT, "the look-up was not bounded"
        wait_for(lambda: bounded(lambda: check.validate(issued.key), 5, "a validation")
                 .reason is Reason.STORE_ERROR, 10, "the stopped store to be refused")
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
    wait_for(lambda: check.validate(issued.key).valid, 20, "recovery after SIGCONT")
