"""The audit trail's hash chain: one linear chain from concurrent writers, every kind of
tampering found and named by ``audit verify``, a legacy prefix accepted, and rotation at a
size bound with the chain carried across files."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from mcp_keys import KeyManager, tokens
from mcp_keys.audit import GENESIS, AuditLog, line_hash
from mcp_keys.audit_verify import verify
from tests.conftest import Cli


def write_events(log: AuditLog, count: int) -> list[bytes]:
    for n in range(count):
        log.append("create", key_id=f"k{n:011d}", name=f"key {n}")
    return log.path.read_bytes().splitlines()


def test_lines_chain_from_genesis(tmp_path: Path) -> None:
    lines = write_events(AuditLog(tmp_path / "audit.log"), 3)
    parsed = [json.loads(line) for line in lines]
    assert [p["seq"] for p in parsed] == [1, 2, 3]
    assert parsed[0]["prev"] == GENESIS
    assert parsed[1]["prev"] == line_hash(lines[0]) and parsed[2]["prev"] == line_hash(lines[1])
    verdict = verify(AuditLog(tmp_path / "audit.log"))
    assert verdict.ok and verdict.events == 3 and verdict.summary() == "OK 3 events"


def tamper(path: Path, change: str) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    if change == "edited":
        lines[2] = lines[2].replace(b"key 2", b"key X")
    elif change == "deleted":
        del lines[2]
    elif change == "inserted":
        lines.insert(3, lines[2])
    elif change == "reordered":
        lines[2], lines[3] = lines[3], lines[2]
    elif change == "truncated tail":
        lines = lines[:-2]
    elif change == "unchained insert":
        lines.insert(2, b'{"ts": "2026-12-01T00:00:00Z", "event": "create"}\n')
    elif change == "last line edited":
        lines[-1] = lines[-1].replace(b"key 5", b"key Y")
    path.write_bytes(b"".join(lines))


@pytest.mark.parametrize(("change", "seq", "words"), [
    ("edited", 3, "edited"),
    ("deleted", 3, "deleted"),
    ("inserted", 3, "inserted"),
    ("reordered", 3, "reordered"),
    ("truncated tail", 5, "truncated"),
    ("unchained insert", 3, "inserted"),
    ("last line edited", 6, "edited"),
])
def test_verify_names_the_first_break(run: Cli, change: str, seq: int, words: str) -> None:
    log = AuditLog(run.store.parent / "audit.log")
    run.store.parent.mkdir(mode=0o700)
    write_events(log, 6)
    tamper(log.path, change)
    verdict = verify(log)
    assert not verdict.ok and verdict.broken_seq == seq, (change, verdict)
    assert words in (verdict.problem or ""), (change, verdict.problem)
    result = run("audit", "verify")
    assert result.exit_code == 1 and result.stdout.startswith(f"BROKEN at seq {seq}: ")
    assert json.loads(run("audit", "verify", "--json").stdout)["broken_seq"] == seq


def test_a_legacy_prefix_is_accepted_and_said(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    legacy = b'{"ts": "2026-01-01T00:00:00Z", "event": "init", "detail": {}}\n' * 2
    path.write_bytes(legacy)
    log = AuditLog(path)
    log.append("create", key_id="a" * 12)
    first = json.loads(path.read_bytes().splitlines()[2])
    assert first["seq"] == 1 and first["prev"] == line_hash(legacy.splitlines()[1])
    verdict = verify(log)
    assert verdict.ok and verdict.legacy == 2
    assert verdict.summary() == "OK 3 events (2 legacy lines without a chain come first)"
    assert [e.event for e in log.read().events] == ["init", "init", "create"]


def test_a_torn_last_line_is_kept_and_reported(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.log")
    write_events(log, 2)
    with log.path.open("ab") as handle:
        handle.write(b'{"seq": 3, "prev": "')  # a crash mid-write
    log.append("revoke", key_id="b" * 12)
    lines = log.path.read_bytes().splitlines()
    assert len(lines) == 4 and json.loads(lines[3])["seq"] == 3
    verdict = verify(log)
    assert not verdict.ok and "not valid JSON" in (verdict.problem or "")


def _writer(store: str, worker: int, count: int) -> None:
    from mcp_keys import Validator

    manager = KeyManager(store, lock_timeout=60)
    validator = Validator(store, refresh_interval=0)
    for n in range(count):
        issued = manager.create(f"w{worker}-{n}")
        manager.revoke(issued.record.id)
        validator.validate(issued.key)  # a REVOKED line from a validator, interleaved
        validator.validate(tokens.generate())


def test_eight_concurrent_processes_make_one_valid_chain(store_path: Path) -> None:
    KeyManager(store_path).init()
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_writer, args=(str(store_path), w, 10)) for w in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    log = AuditLog(store_path.parent / "audit.log")
    verdict = verify(log)
    events = log.read().events
    assert verdict.ok, verdict.summary()
    assert verdict.events == len(events) >= 1 + 8 * 10 * 3
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


def test_rotation_keeps_the_chain_and_the_bound(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.log", max_bytes=2048, keep=3)
    write_events(log, 120)
    files = log.files()
    assert [p.name for p in files] == ["audit.log.3", "audit.log.2", "audit.log.1", "audit.log"]
    assert all(p.stat().st_size <= 2048 + 400 for p in files)
    firsts = [json.loads(p.read_bytes().splitlines()[0]) for p in files[1:]]
    lasts = [p.read_bytes().splitlines()[-1] for p in files[:-1]]
    assert [f["prev"] for f in firsts] == [line_hash(last) for last in lasts]
    verdict = verify(log)
    assert verdict.ok and not verdict.anchored and verdict.events < 120
    assert "rotated away" in verdict.summary()
    seqs = [e.seq or 0 for e in log.read().events]
    assert seqs == list(range(seqs[0], 121))
    assert [e.seq for e in log.read(limit=5).events] == [116, 117, 118, 119, 120]


def test_rotation_settings_from_the_environment(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_KEYS_AUDIT_MAX_BYTES", "4096")
    monkeypatch.setenv("MCP_KEYS_AUDIT_KEEP", "2")
    log = AuditLog(tmp_path / "audit.log")
    assert (log.max_bytes, log.keep) == (4096, 2)
    monkeypatch.setenv("MCP_KEYS_AUDIT_KEEP", "zero")
    from mcp_keys import UsageError

    with pytest.raises(UsageError):
        AuditLog(tmp_path / "audit.log")


def test_cli_reads_across_rotated_files(run: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_KEYS_AUDIT_MAX_BYTES", "2048")
    for n in range(15):
        assert run("create", f"k{n}").exit_code == 0
    directory = run.store.parent
    assert (directory / "audit.log.1").exists()
    listed = json.loads(run("audit", "--json").stdout)
    assert [e["event"] for e in listed] == ["create"] * 15
    assert run("audit", "verify").stdout.strip() == "OK 15 events"
    table = run("audit", "--limit", "3")
    assert table.exit_code == 0 and "k14" in table.stdout and "k11" not in table.stdout
