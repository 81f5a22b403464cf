"""The PostgreSQL store on a real server: schema versions, no password anywhere, many
processes and hosts, revocation pushed to validators, faults, and migration."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mcp_keys import KeyManager, Reason, Validator
from mcp_keys.audit_verify import verify
from mcp_keys.migrate import migrate
from tests.conftest import (
    Cli,
    assert_absent,
    one_error_line,
    postgres_server,
    run_cli_process,
    state_of,
)

PASSWORD = "pw-" + "s3cr3t" * 4


def with_password(url: str) -> str:
    scheme, _, rest = url.partition("://")
    user, _, host = rest.partition("@")
    return f"{scheme}://{user}:{PASSWORD}@{host}"


def poll(check: Validator, key: str, wanted: Reason, deadline: float = 5.0) -> float:
    """Validate until ``wanted``; return how long it took (fails after ``deadline``)."""
    start = time.monotonic()
    while True:
        reason = check.validate(key).reason
        if reason is wanted:
            return time.monotonic() - start
        assert time.monotonic() - start < deadline, f"still {reason.value}, wanted {wanted.value}"
        time.sleep(0.01)


def pg_ctl(*args: str, check: bool = True) -> int:
    data, bin_dir = os.environ.get("MCP_KEYS_TEST_PGDATA"), os.environ.get("MCP_KEYS_TEST_PGBIN")
    if not data or not bin_dir:
        pytest.skip("needs MCP_KEYS_TEST_PGDATA and _PGBIN (scripts/pg-throwaway.sh)")
    command = [f"{bin_dir}/pg_ctl", "-D", data, "-l", str(Path(data).parent / "log"), *args]
    if os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    return subprocess.run(command, check=check, capture_output=True, timeout=60).returncode


def test_init_creates_a_versioned_schema_and_refuses_a_newer_one(pg_url: str) -> None:
    import psycopg

    run = Cli(Path("unused"), [], pg_url)
    assert run("init").stdout.startswith("Created store")
    assert run("init").stdout.startswith("Store already exists")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert conn.execute("SELECT max(version) FROM schema_version").fetchall() == [(3,)]
        conn.execute("UPDATE schema_version SET version = 99")
    newer = run("create", "svc")
    assert newer.exit_code == 1 and "upgrade mcp-keys" in one_error_line(newer.stderr)
    assert run("init").exit_code == 1


def test_a_password_in_the_url_is_never_shown(pg_url: str, tmp_path: Path) -> None:
    url = with_password(pg_url)
    run = Cli(tmp_path / "unused", [], url)
    key = run("create", "svc", "--scope", "a").stdout.strip()
    run("list")
    run("list", "--json")
    run("show", key[5:17])
    run("verify", key)
    run("audit")
    run("doctor")
    run("--store", url.replace("/t_", "/missing_"), "list")  # a connection error
    manager = KeyManager(url)
    check = Validator(url, refresh_interval=0)
    texts = [*run.outputs, repr(manager), repr(manager.store), repr(check), repr(manager.audit),
             manager.store.display, check.location]
    texts += [line.decode() for _, _, line in manager.audit.lines()]
    for text in texts:
        assert_absent(PASSWORD, text, "output, repr or audit line")
    assert any("***" in text for text in texts)


def test_a_revoke_in_another_process_reaches_a_running_validator(pg_url: str) -> None:
    manager = KeyManager(pg_url)
    issued = manager.create("svc")
    check = Validator(pg_url)  # push mode: the default refresh interval
    assert check.validate(issued.key).valid
    done = run_cli_process("--store", pg_url, "revoke", issued.record.id)
    assert done.returncode == 0, done.stderr
    assert poll(check, issued.key, Reason.REVOKED) < 1.0


def test_a_key_created_by_another_process_is_valid_on_first_use(pg_url: str) -> None:
    KeyManager(pg_url).init()
    check = Validator(pg_url)
    created = run_cli_process("--store", pg_url, "create", "elsewhere")
    assert created.returncode == 0
    result = check.validate(created.stdout.strip())
    assert result.valid, result.reason


def test_no_notification_is_missed_when_the_listener_is_terminated(pg_url: str) -> None:
    import psycopg

    manager = KeyManager(pg_url)
    issued = manager.create("svc")
    check = Validator(pg_url)
    assert check.validate(issued.key).valid
    with psycopg.connect(pg_url, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = "
            "current_database() AND application_name = 'mcp-keys-watch'"
        ).fetchall()
        assert killed, "no listening connection found"
        manager.revoke(issued.record.id)  # while the validator is reconnecting
    poll(check, issued.key, Reason.REVOKED)


def _create_many(url: str, count: int) -> None:
    manager = KeyManager(url)
    for n in range(count):
        manager.create(f"p{os.getpid()}-{n}")


def test_eight_processes_lose_nothing(pg_url: str) -> None:
    KeyManager(pg_url).init()
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_create_many, args=(pg_url, 50)) for _ in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(180)
        assert worker.exitcode == 0
    manager = KeyManager(pg_url)
    assert len(manager.list()) == 400
    creates = manager.audit.read(event="create").events
    assert len(creates) == 400
    verdict = verify(manager.audit)
    assert verdict.ok and verdict.events == 401, verdict.summary()


def _rotate(url: str, key_id: str, results: multiprocessing.Queue[str]) -> None:
    from mcp_keys import McpKeysError

    try:
        results.put(KeyManager(url).rotate(key_id).record.id)
    except McpKeysError as exc:
        results.put(f"error: {exc}")


def test_two_concurrent_rotations_make_exactly_one_successor(pg_url: str) -> None:
    manager = KeyManager(pg_url)
    old = manager.create("svc").record.id
    context = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[str] = context.Queue()
    workers = [context.Process(target=_rotate, args=(pg_url, old, results)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    answers = [results.get(timeout=10) for _ in workers]
    errors = [a for a in answers if a.startswith("error: ")]
    assert len(errors) == 1 and "already rotated" in errors[0], errors
    successors = [k for k in manager.list() if k.rotated_from == old]
    assert len(successors) == 1 and [successors[0].id] == [a for a in answers if a not in errors]


HOLD_TRANSACTION = """
import sys
from datetime import UTC, datetime
from mcp_keys import KeyManager
from mcp_keys.models import ApiKey
manager = KeyManager(sys.argv[1])
with manager.store.transaction() as txn:
    txn.keys["half00000000"] = ApiKey(id="half00000000", name="half", digest="0" * 64,
                                      created_at=datetime.now(UTC), expires_at=None)
    print("inside", flush=True)
    sys.stdin.readline()
"""


def test_a_writer_killed_mid_transaction_leaves_no_partial_record(pg_url: str) -> None:
    manager = KeyManager(pg_url)
    manager.create("before")
    before = state_of(manager)
    writer = subprocess.Popen([sys.executable, "-c", HOLD_TRANSACTION, pg_url],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None and writer.stdout.readline().strip() == "inside"
    writer.send_signal(signal.SIGKILL)
    writer.wait(10)
    assert state_of(manager) == before
    assert manager.create("after").record.name == "after"  # the lock was released


def test_max_stale_zero_refuses_at_once(pg_url: str) -> None:
    import psycopg

    manager = KeyManager(pg_url)
    issued = manager.create("svc")
    check = Validator(pg_url, max_stale=0)
    assert check.validate(issued.key).valid
    database = pg_url.rsplit("/", 1)[1]
    with psycopg.connect(postgres_server(), autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        try:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                          "datname = %s", (database,))
            poll(check, issued.key, Reason.STORE_ERROR)
        finally:
            admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
    poll(check, issued.key, Reason.VALID, deadline=15)


@pytest.fixture
def restartable(pg_url: str) -> Iterator[str]:
    yield pg_url
    if pg_ctl("status", check=False) != 0:  # whatever the test did, leave the server running
        pg_ctl("-w", "-t", "60", "start")


def test_a_server_outage_serves_until_max_stale_then_refuses_then_recovers(
        restartable: str) -> None:
    url = restartable
    manager = KeyManager(url)
    issued = manager.create("svc")
    check = Validator(url, max_stale=2)
    assert check.validate(issued.key).valid
    pg_ctl("-m", "immediate", "-w", "stop")
    stopped = time.monotonic()
    while time.monotonic() - stopped < 1.5:  # within max_stale: still served
        result = check.validate(issued.key)
        assert result.valid, result.reason
        time.sleep(0.05)
    poll(check, issued.key, Reason.STORE_ERROR, deadline=10)
    # Served for max_stale after the last contact, which was at most a poll (0.25 s) before.
    assert time.monotonic() - stopped >= 1.5
    pg_ctl("-w", "-t", "60", "start")
    KeyManager(url).revoke(issued.record.id)  # made while the validator is away
    poll(check, issued.key, Reason.REVOKED, deadline=20)


def test_doctor_on_postgresql(pg_url: str) -> None:
    run = Cli(Path("unused"), [], pg_url)
    run("init")
    result = run("doctor", "--json")
    checks = {c["check"]: c for c in json.loads(result.stdout)}
    assert checks["database"]["outcome"] == "pass" and checks["schema"]["outcome"] == "pass"
    assert checks["role privileges"]["outcome"] == "warn"  # the test role is a superuser
    assert "superuser" in checks["role privileges"]["message"]
    assert checks["audit chain"]["outcome"] == "pass"


def test_migrate_both_ways_is_idempotent_and_keeps_the_chain(pg_url: str,
                                                             tmp_path: Path) -> None:
    source = tmp_path / "keys" / "keys.json"
    files = KeyManager(source)
    keys = [files.create(f"k{n}", scopes=["a"]) for n in range(3)]
    files.revoke(keys[0].record.id)
    first = migrate(str(source), pg_url)
    assert (first.records, first.copied, first.already, first.audit) == (3, 3, 0, "preserved")
    assert first.audit_events == 4  # three creates and a revoke
    again = migrate(str(source), pg_url)
    assert (again.copied, again.already, again.audit) == (0, 3, "already migrated")
    target = KeyManager(pg_url)
    assert {k.id: k for k in target.list()} == {k.id: k for k in files.list()}
    verdict = verify(target.audit)
    assert verdict.ok and verdict.events == 5, verdict.summary()  # and "migrated"
    check = Validator(pg_url, refresh_interval=0)
    assert check.validate(keys[1].key).valid
    assert check.validate(keys[0].key).reason is Reason.REVOKED
    back = tmp_path / "back" / "keys.json"
    result = Cli(back, [])("migrate", "--from", pg_url, "--to", str(back), "--json")
    assert json.loads(result.stdout)["copied"] == 3
    assert verify(KeyManager(back).audit).ok


def test_migrate_refuses_different_records_under_the_same_ids(pg_url: str,
                                                              tmp_path: Path) -> None:
    source = tmp_path / "keys" / "keys.json"
    files = KeyManager(source)
    issued = files.create("k")
    migrate(str(source), pg_url)
    files.revoke(issued.record.id)
    target = KeyManager(pg_url)
    before = state_of(target)
    result = Cli(source, [])("migrate", "--to", pg_url)
    assert result.exit_code == 1 and "different records" in one_error_line(result.stderr)
    assert state_of(target) == before


def test_migrate_re_anchors_onto_a_target_with_history(pg_url: str, tmp_path: Path) -> None:
    target = KeyManager(pg_url)
    target.create("already-here")
    source = tmp_path / "keys" / "keys.json"
    KeyManager(source).create("k")
    report = migrate(str(source), pg_url)
    assert report.audit == "re-anchored"
    (event,) = target.audit.read(event="migrated").events
    head = KeyManager(source).audit.head()
    assert head is not None and event.detail["source_last_hash"] == head[1]
    assert verify(target.audit).ok


def test_the_core_never_imports_psycopg_and_says_which_extra(tmp_path: Path) -> None:
    code = ("import sys; import mcp_keys.cli, mcp_keys.manager, mcp_keys.validator, "
            "mcp_keys.stores; assert 'psycopg' not in sys.modules, 'psycopg imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    missing = ("import sys; sys.modules['psycopg'] = None\n"
               "from mcp_keys import KeyManager, McpKeysError\n"
               "try:\n    KeyManager('postgresql://x@127.0.0.1:1/db').list()\n"
               "except McpKeysError as exc:\n    print(exc)\n")
    said = subprocess.run([sys.executable, "-c", missing], capture_output=True, text=True,
                          check=True, timeout=60).stdout
    assert "pip install 'mcp-keys[postgres]'" in said


def test_a_forked_worker_watches_on_its_own(pg_url: str) -> None:
    from tests.conftest import in_child

    manager = KeyManager(pg_url)
    issued = manager.create("svc")
    check = Validator(pg_url)
    assert check.validate(issued.key).valid
    key = issued.key

    def in_worker() -> str:
        first = check.validate(key).reason.value
        manager_in_child = KeyManager(pg_url)
        manager_in_child.revoke(issued.record.id)
        poll(check, key, Reason.REVOKED)
        return first

    assert in_child(in_worker, timeout=30) == "VALID"
    assert check.validate(issued.key).reason in (Reason.VALID, Reason.REVOKED)
    poll(check, issued.key, Reason.REVOKED)  # the parent's own watcher still works
