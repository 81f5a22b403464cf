"""The audit trail: one line per operation, none for a failure, never a secret."""

from __future__ import annotations

import json
import multiprocessing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from freezegun import freeze_time

from mcp_keys import McpKeysError
from mcp_keys.audit import AuditLog
from tests.conftest import Cli, FileKeys, assert_absent


def lines(manager: FileKeys) -> list[dict[str, object]]:
    if not manager.audit.path.exists():
        return []
    return [json.loads(line) for line in manager.audit.path.read_text().splitlines()]


def test_every_operation_leaves_exactly_one_line(manager: FileKeys, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_KEYS_ACTOR", "nightly-cron")
    secrets: list[str] = []

    def step(expected: str, action: object) -> None:
        before = len(lines(manager))
        result = action() if callable(action) else None
        key = getattr(result, "key", None)
        if key:
            secrets.append(key)
        after = lines(manager)
        assert [e["event"] for e in after[before:]] == [expected], expected

    step("init", manager.init)
    issued = manager.create("a", scopes=["s"])
    secrets.append(issued.key)
    step("revoke", lambda: manager.revoke(issued.record.id, reason="r"))
    step("delete", lambda: manager.delete(issued.record.id))
    other = manager.create("b")
    secrets.append(other.key)
    step("rotate", lambda: manager.rotate(other.record.id))
    step("require", lambda: manager.set_required(tmp_path / ".env", True))
    with freeze_time(datetime.now(UTC) + timedelta(days=91)):
        step("expire", manager.sweep)
        step("purge", lambda: manager.sweep(purge_after=timedelta(days=30)))
    before = len(lines(manager))
    manager.create("c", env_file=tmp_path / ".env")
    assert [e["event"] for e in lines(manager)[before:]] == ["create", "env_sync"]

    events = lines(manager)
    assert all(e["actor"] == "nightly-cron (" + str(e["actor"]).split("(")[1] for e in events)
    text = manager.audit.path.read_text()
    for secret in secrets:
        assert_absent(secret, text, "the audit log")
    for key in manager.store.read().values():
        assert key.digest not in text


def test_failed_operations_write_nothing(manager: FileKeys) -> None:
    issued = manager.create("a")
    manager.revoke(issued.record.id)
    before = manager.audit.path.read_bytes()
    for action in (lambda: manager.revoke("zzzzzzzzzzzz"), lambda: manager.create("bad\n"),
                   lambda: manager.rotate(issued.record.id), lambda: manager.delete("zzzz")):
        with pytest.raises(McpKeysError):
            action()
    manager.revoke(issued.record.id)  # a no-op: no event either
    assert manager.audit.path.read_bytes() == before


def test_damaged_lines_are_reported_and_skipped(manager: FileKeys) -> None:
    manager.create("a")
    with manager.audit.path.open("a") as log:
        log.write('{"ts": "2026-12-01T00:00:00Z", "event": "crea')
    reading = manager.audit.read()
    assert [e.event for e in reading.events] == ["create"]
    assert len(reading.damaged) == 1 and "line 2" in reading.damaged[0]


def _append_many(path: str, worker: int) -> None:
    log = AuditLog(path)
    for n in range(200):
        log.append("create", key_id=f"w{worker}n{n:03d}".ljust(12, "0"), name="x" * 300,
                   detail={"worker": worker, "n": n})


def test_four_processes_never_interleave(tmp_path: Path) -> None:
    path = str(tmp_path / "audit.log")
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_append_many, args=(path, w)) for w in range(4)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(60)
        assert process.exitcode == 0
    raw = Path(path).read_text().splitlines()
    assert len(raw) == 800
    parsed = [json.loads(line) for line in raw]
    assert sorted((p["detail"]["worker"], p["detail"]["n"]) for p in parsed) == [
        (w, n) for w in range(4) for n in range(200)]


def test_cli_audit_filters(run: Cli) -> None:
    with freeze_time(datetime(2026, 12, 1, tzinfo=UTC)) as frozen:
        first = json.loads(run("create", "a", "--json").stdout)["record"]["id"]
        frozen.tick(3 * 86400)
        second = json.loads(run("create", "b", "--json").stdout)["record"]["id"]
        run("revoke", second)
        by_key = json.loads(run("audit", "--key", second[:5], "--json").stdout)
        assert [(e["event"], e["key_id"]) for e in by_key] == [("create", second),
                                                               ("revoke", second)]
        recent = json.loads(run("audit", "--since", "1d", "--json").stdout)
        assert first not in {e["key_id"] for e in recent}
        assert [e["event"] for e in json.loads(run("audit", "--event", "revoke",
                                                   "--json").stdout)] == ["revoke"]
        newest = json.loads(run("audit", "--limit", "1", "--json").stdout)
        assert [e["event"] for e in newest] == ["revoke"]
        rotated = json.loads(run("rotate", first, "--json").stdout)["record"]["id"]
        about_first = json.loads(run("audit", "--key", first, "--json").stdout)
        assert [(e["event"], e["key_id"]) for e in about_first] == [("create", first),
                                                                    ("rotate", rotated)]
        table = run("audit")
        assert table.exit_code == 0 and "revoke" in table.stdout and "rotated_from=" in table.stdout
        assert run("audit", "--event", "bogus").exit_code == 2
