"""Real processes racing on one store: no lost update, no torn read."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

from mcp_keys import KeyManager, Reason, Validator
from tests.conftest import mcp_keys_cmd

PROCESSES = 8
PER_PROCESS = 50
CONTEXT = multiprocessing.get_context("spawn")


def _cli_creator(store: str, worker: int) -> list[str]:
    created = []
    env = dict(os.environ, MCP_KEYS_STORE=store, MCP_KEYS_LOCK_TIMEOUT="60")
    for n in range(PER_PROCESS):
        result = subprocess.run(mcp_keys_cmd("create", f"cli-{worker}-{n}", "--json"), env=env,
                                capture_output=True, text=True, check=False, timeout=120)
        assert result.returncode == 0, result.stderr
        created.append(json.loads(result.stdout)["record"]["id"])
    return created


def _api_creator(store: str, worker: int, out: Any) -> None:
    manager = KeyManager(store, lock_timeout=60)
    out.put([manager.create(f"api-{worker}-{n}").record.id for n in range(PER_PROCESS)])


def check_final(store: Path, expected: set[str]) -> None:
    keys = KeyManager(store).store.read()
    assert set(keys) == expected
    creates = [line for line in (store.parent / "audit.log").read_text().splitlines()
               if json.loads(line)["event"] == "create"]
    assert len(creates) == len(expected)


def test_eight_cli_processes_fifty_creates_each(tmp_path: Path) -> None:
    store = tmp_path / "s" / "keys.json"
    with ThreadPoolExecutor(PROCESSES) as pool:
        batches = list(pool.map(lambda w: _cli_creator(str(store), w), range(PROCESSES)))
    ids = [key_id for batch in batches for key_id in batch]
    assert len(ids) == len(set(ids)) == PROCESSES * PER_PROCESS
    check_final(store, set(ids))


def test_eight_api_processes_fifty_creates_each(tmp_path: Path) -> None:
    store = tmp_path / "s" / "keys.json"
    queue = CONTEXT.Queue()
    workers = [CONTEXT.Process(target=_api_creator, args=(str(store), w, queue))
               for w in range(PROCESSES)]
    for process in workers:
        process.start()
    batches = [queue.get(timeout=120) for _ in workers]
    for process in workers:
        process.join(30)
        assert process.exitcode == 0
    ids = [key_id for batch in batches for key_id in batch]
    assert len(ids) == len(set(ids)) == PROCESSES * PER_PROCESS
    check_final(store, set(ids))


def _mixed_creator(store: str, out: Any) -> None:
    manager = KeyManager(store, lock_timeout=60)
    out.put(("created", [manager.create(f"m-{n}", expires_in=timedelta(days=1)).record.id
                         for n in range(40)]))


def _mixed_revoker(store: str, targets: list[str], out: Any) -> None:
    manager = KeyManager(store, lock_timeout=60)
    for key_id in targets:
        manager.revoke(key_id, reason="stress")
    out.put(("revoked", targets))


def _mixed_sweeper(store: str, stop: Any, out: Any) -> None:
    manager = KeyManager(store, lock_timeout=60)
    sweeps = 0
    while not stop.is_set():
        manager.sweep()
        sweeps += 1
    out.put(("swept", sweeps))


def test_mixed_load_loses_nothing(tmp_path: Path) -> None:
    store = tmp_path / "s" / "keys.json"
    manager = KeyManager(store)
    targets = [manager.create(f"t-{n}").record.id for n in range(60)]
    short = [manager.create(f"short-{n}", expires_in=timedelta(seconds=1)).record.id
             for n in range(5)]
    random.Random(7).shuffle(targets)
    queue, stop = CONTEXT.Queue(), CONTEXT.Event()
    sweeper = CONTEXT.Process(target=_mixed_sweeper, args=(str(store), stop, queue))
    workers = [CONTEXT.Process(target=_mixed_creator, args=(str(store), queue)) for _ in range(3)]
    workers += [CONTEXT.Process(target=_mixed_revoker, args=(str(store), targets[i::3], queue))
                for i in range(3)]
    sweeper.start()
    for process in workers:
        process.start()
    reports = [queue.get(timeout=120) for _ in workers]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(
            k.expiry_recorded_at is None for k in manager.store.read().values() if k.id in short):
        time.sleep(0.05)
    stop.set()
    reports.append(queue.get(timeout=60))
    for process in [*workers, sweeper]:
        process.join(30)
        assert process.exitcode == 0
    final = manager.store.read()
    created = [i for kind, ids in reports if kind == "created" for i in ids]
    revoked = [i for kind, ids in reports if kind == "revoked" for i in ids]
    assert len(created) == 120 and sorted(revoked) == sorted(targets)
    assert all(i in final for i in created)
    assert all(final[i].revoked_at is not None and final[i].revoke_reason == "stress"
               for i in revoked)
    assert all(final[i].expiry_recorded_at is not None for i in short)
    assert [kind for kind, _ in reports].count("swept") == 1


def _writer(store: str, count: int) -> None:
    manager = KeyManager(store, lock_timeout=60)
    for n in range(count):
        issued = manager.create(f"w-{n}", description="x" * 200)
        if n % 3 == 0:
            manager.revoke(issued.record.id)


def test_reader_never_sees_a_partial_store(tmp_path: Path) -> None:
    store = tmp_path / "s" / "keys.json"
    manager = KeyManager(store)
    for n in range(300):  # a store large enough that a torn write would show
        manager.create(f"seed-{n}", description="y" * 200)
    good = manager.create("good")
    validator = Validator(store, refresh_interval=0, audit_failures=False)
    writers = [CONTEXT.Process(target=_writer, args=(str(store), 40)) for _ in range(3)]
    for process in writers:
        process.start()
    reasons: dict[Reason, int] = {}
    reloads = set()
    while any(p.is_alive() for p in writers):
        reason = validator.validate(good.key).reason
        reasons[reason] = reasons.get(reason, 0) + 1
        reloads.add(validator._signature)
    for process in writers:
        process.join(30)
        assert process.exitcode == 0
    assert set(reasons) == {Reason.VALID}, reasons
    assert len(reloads) > 10  # it really did reload while the writers ran
    assert len(manager.store.read()) == 301 + 120
