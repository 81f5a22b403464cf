"""The store benchmark on PostgreSQL (``bench.py store --backend postgresql``), beside the
JSON file: write latency against store size, validation rate on a 100,000-key store
against the lean bare loop, revoke-to-refusal across processes, 8-process throughput.

Needs a server: ``--postgres URL`` or ``MCP_KEYS_TEST_POSTGRES_URL`` (a role that may
create databases; one is made for each run and dropped after).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path

from mcp_keys import KeyManager, Reason, Validator, tokens

Row = tuple[str, str, str, str]
SIZES = (100, 10_000, 100_000)


@contextlib.contextmanager
def database(server: str) -> Iterator[str]:
    import psycopg

    name = f"mcp_keys_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{server.rpartition('/')[0]}/{name}"
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def seed(url: str, count: int) -> list[str]:
    """``count`` active keys written with COPY; a sample of 1,000 tokens back."""
    import psycopg

    KeyManager(url).init()
    now = datetime.now(UTC)
    sample: list[str] = []
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy("COPY api_keys (id, name, digest, scopes, created_at, expires_at) "
                      "FROM STDIN") as copy:
            for n in range(count):
                token = tokens.generate()
                copy.write_row((token[5:17], f"bench-{n}", tokens.digest(token),
                                ["tools:call"], now, now + timedelta(days=90)))
                if len(sample) < 1000:
                    sample.append(token)
        conn.commit()
    return sample


def write_latency(location: str) -> tuple[float, float]:
    """Median create and revoke latency (20 of each) on the store as it is."""
    manager = KeyManager(location)
    created, creates, revokes = [], [], []
    for n in range(20):
        start = time.perf_counter()
        created.append(manager.create(f"timed-{n}").record.id)
        creates.append(time.perf_counter() - start)
    for key_id in created:
        start = time.perf_counter()
        manager.revoke(key_id)
        revokes.append(time.perf_counter() - start)
    return statistics.median(creates), statistics.median(revokes)


def _revoker(location: str, conn: Connection) -> None:
    """Revoke on request; answer with the wall-clock time the revoke *started*, so the
    figure is an upper bound that includes the revoke's own transaction."""
    manager = KeyManager(location)
    while (key_id := conn.recv()) is not None:
        started = time.time()
        manager.revoke(key_id)
        conn.send(started)


def revoke_to_refusal(location: str, trials: int = 20) -> list[float]:
    """Seconds from a revoke starting in another process to this process's validator
    refusing the key, ``trials`` times."""
    manager = KeyManager(location)
    check = Validator(location, audit_failures=False)
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    helper = context.Process(target=_revoker, args=(location, theirs))
    helper.start()
    delays = []
    try:
        for n in range(trials):
            issued = manager.create(f"r2r-{n}")
            while not check.validate(issued.key):
                time.sleep(0.001)
            time.sleep(random.random())  # a random phase against the validator's schedule
            ours.send(issued.record.id)
            while check.validate(issued.key).reason is not Reason.REVOKED:
                time.sleep(0.0005)
            refused = time.time()
            delays.append(refused - ours.recv())
    finally:
        ours.send(None)
        helper.join(30)
        check.close()
    return delays


def _creator(location: str, count: int) -> None:
    manager = KeyManager(location)
    for n in range(count):
        manager.create(f"c-{os.getpid()}-{n}")


def contention(location: str, processes: int = 8, each: int = 50) -> tuple[float, int]:
    KeyManager(location).init()
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_creator, args=(location, each))
               for _ in range(processes)]
    start = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - start
    return elapsed, len(KeyManager(location).list())


Loops = Callable[[Validator, list[str], dict[str, str]],
                 tuple[Callable[[], int], Callable[[], int]]]


def validate_rate(url: str, sample: list[str],
                  best_rates: Callable[[list[Callable[[], int]]], list[float]],
                  lean_loops: Loops) -> tuple[float, float]:
    import psycopg

    check = Validator(url, audit_failures=False)
    assert all(check.validate(t, ["tools:call"]) for t in sample)
    with psycopg.connect(url) as conn:
        index: dict[str, str] = dict(conn.execute("SELECT id, digest FROM api_keys").fetchall())

    validated, bare = lean_loops(check, sample, index)
    ours, baseline = best_rates([validated, bare])
    check.close()
    return ours, baseline


def bench(server: str, seed_json: Callable[[Path, int], list[str]],
          best_rates: Callable[[list[Callable[[], int]]], list[float]],
          lean_loops: Loops) -> list[Row]:
    rows: list[Row] = []
    latency: dict[tuple[str, int], tuple[float, float]] = {}
    for size in SIZES:
        with database(server) as url:
            seed(url, size)
            latency["postgresql", size] = write_latency(url)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "keys.json"
            seed_json(path, size)
            latency["json", size] = write_latency(str(path))
    for n, op in enumerate(("create", "revoke")):
        for backend in ("postgresql", "json"):
            small, large = latency[backend, 100][n], latency[backend, 100_000][n]
            mid = latency[backend, 10_000][n]
            rows.append((f"store {backend}: {op}",
                         f"{small * 1000:.1f} / {mid * 1000:.1f} / {large * 1000:.1f} ms",
                         "at 100 / 10,000 / 100,000 keys",
                         f"100k = {large / small:.1f}x 100 (target <= 1.5)"))
    with database(server) as url:
        sample = seed(url, 100_000)
        ours, baseline = validate_rate(url, sample, best_rates, lean_loops)
    rows.append(("store postgresql: validate, 100,000 keys", f"{ours:,.0f}/s",
                 f"lean bare loop {baseline:,.0f}/s", f"{baseline / ours:.2f}x (target <= 1.5)"))
    with database(server) as url, tempfile.TemporaryDirectory() as tmp:
        KeyManager(url).init()
        for backend, location in (("postgresql", url), ("json", str(Path(tmp) / "k.json"))):
            delays = revoke_to_refusal(location)
            rows.append((f"store {backend}: revoke-to-refusal, other process",
                         f"median {statistics.median(delays) * 1000:.0f} ms",
                         f"max {max(delays) * 1000:.0f} ms of {len(delays)}",
                         "target max <= 1000 ms"))
    with database(server) as url, tempfile.TemporaryDirectory() as tmp:
        for backend, location in (("postgresql", url), ("json", str(Path(tmp) / "k.json"))):
            elapsed, total = contention(location)
            rows.append((f"store {backend}: 8 processes x 50 creates", f"{elapsed:.2f} s wall",
                         f"{total / elapsed:,.0f} creates/s", f"{total} keys, none lost"))
    return rows
