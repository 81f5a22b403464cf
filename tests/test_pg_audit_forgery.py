"""A server's database role cannot forge, suppress or rewind the PostgreSQL audit chain.

The roles are made by docs/deployment.md's GRANTs, run as written (role names made unique
per run); then the server role attacks the trail directly and through the functions.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mcp_keys import KeyManager, Reason, Validator
from mcp_keys.audit import line_hash
from mcp_keys.audit_verify import verify
from tests.conftest import postgres_server, wait_for
from tests.test_deployment import block

ROLES = ("mcp_keys_owner", "mcp_keys_admin", "mcp_keys_server")


@dataclass(frozen=True)
class Deployment:
    """The store's URL as the superuser, the admin and the server role."""

    root: str
    admin: str
    server: str
    server_role: str


@pytest.fixture
def deployed(pg_url: str) -> Iterator[Deployment]:
    import psycopg

    sql = block("sql")
    suffix = uuid.uuid4().hex[:8]
    for role in ROLES:
        sql = sql.replace(role, f"{role}_{suffix}")
    KeyManager(pg_url).init()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.encode())
    base, _, database = pg_url.rpartition("/")
    host = base.split("@", 1)[1]
    try:
        yield Deployment(pg_url, f"postgresql://mcp_keys_admin_{suffix}@{host}/{database}",
                         f"postgresql://mcp_keys_server_{suffix}@{host}/{database}",
                         f"mcp_keys_server_{suffix}")
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {', '.join(f'{r}_{suffix}' for r in ROLES)}")
        with psycopg.connect(postgres_server(), autocommit=True) as conn:
            for role in ROLES:
                conn.execute(f"DROP ROLE IF EXISTS {role}_{suffix}")


def refused(url: str, statement: str, params: tuple[Any, ...] = ()) -> str:
    """Run ``statement`` as the role of ``url``; the SQLSTATE it was refused with."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        try:
            conn.execute(statement, params)
        except psycopg.Error as exc:
            return str(exc.sqlstate)
    raise AssertionError(f"not refused: {statement}")


def rows(url: str) -> list[tuple[int, str, str]]:
    """The chained trail, after chaining what servers left waiting (``url`` may)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT audit_chain(100000)")
        return [(int(s), str(line), str(h)) for s, line, h in conn.execute(
            "SELECT seq, line, hash FROM audit_events ORDER BY seq").fetchall()]


def test_the_server_role_cannot_write_the_trail_or_the_head(deployed: Deployment) -> None:
    admin = KeyManager(deployed.admin)
    admin.create("svc")
    before = rows(deployed.root)
    head = before[-1]
    forged = json.dumps({"seq": head[0] + 1, "prev": head[2], "ts": "2026-01-01T00:00:00Z",
                         "event": "create", "key_id": "aaaaaaaaaaaa", "name": "x",
                         "actor": "root", "detail": {}})
    attacks = {
        "insert a chained line": ("INSERT INTO audit_events (seq, line, hash) VALUES "
                                  "(%s, %s, %s)", (head[0] + 1, forged,
                                                   line_hash(forged.encode()))),
        "rewind the head": ("UPDATE audit_head SET seq = 0", ()),
        "lock the head": ("SELECT seq FROM audit_head FOR UPDATE", ()),
        "lock the state": ("SELECT change_seq FROM store_state FOR UPDATE", ()),
        "bump the state": ("UPDATE store_state SET change_seq = change_seq + 1", ()),
        "edit a line": ("UPDATE audit_events SET line = 'x'", ()),
        "delete lines": ("DELETE FROM audit_events", ()),
        "append any event with the admin's function": (
            "SELECT audit_append('revoke', NULL, NULL, 'x', '{}', now())", ()),
        "key-share the head": ("SELECT seq FROM audit_head FOR KEY SHARE", ()),
        "share the head": ("SELECT seq FROM audit_head FOR SHARE", ()),
        "key-share the keys": ("SELECT id FROM api_keys FOR KEY SHARE", ()),
        "key-share the changes": ("SELECT seq FROM key_changes FOR KEY SHARE", ()),
        "read the inbox": ("SELECT * FROM audit_inbox", ()),
        "key-share the inbox": ("SELECT id FROM audit_inbox FOR KEY SHARE", ()),
        "empty the inbox": ("DELETE FROM audit_inbox", ()),
        "chain the inbox": ("SELECT audit_chain(1)", ()),
        "chain a line of its own": (
            "SELECT audit_chain_line('revoke', NULL, NULL, 'x', 'root', '{}', now())", ()),
    }
    for what, (statement, params) in attacks.items():
        assert refused(deployed.server, statement, params) == "42501", what
    assert rows(deployed.root) == before, "the trail is unchanged"


@pytest.mark.parametrize(("event", "key_id", "name", "detail"), [
    ("revoke", "aaaaaaaaaaaa", "svc", "{}"),
    ("create", None, None, "{}"),
    ("rotate", None, None, "{}"),
    ("delete", None, None, "{}"),
    ("migrated", None, None, "{}"),
    ("init", None, None, "{}"),
    (None, None, None, "{}"),
    ("validation_failed", "not-a-key-id", None, "{}"),
    ("validation_failed", None, "a\nforged line", "{}"),
    ("validation_failed", None, None, "[1, 2]"),
    ("validation_failed", None, None, '{"reason": "VALID", "event": "revoke"}'),
    ("gateway_call", None, None, json.dumps({"pad": "x" * 70000})),
])
def test_the_server_function_takes_only_well_formed_server_events(
        deployed: Deployment, event: str | None, key_id: str | None, name: str | None,
        detail: str) -> None:
    KeyManager(deployed.admin).create("svc")
    before = rows(deployed.root)
    state = refused(deployed.server, "SELECT server_audit_append(%s, %s, %s, %s, %s::jsonb)",
                    (event, key_id, name, "server", detail))
    assert state in ("42501", "23514"), state
    assert rows(deployed.root) == before


def test_the_server_cannot_choose_seq_prev_or_time(deployed: Deployment) -> None:
    for statement in (
            "SELECT server_audit_append('validation_failed', NULL, NULL, 'x', '{}', now())",
            "SELECT server_audit_append(99, repeat('0', 64), 'validation_failed', NULL, "
            "NULL, 'x', '{}')"):
        assert refused(deployed.server, statement) == "42883", "no such signature"


def test_server_appends_are_chained_by_the_database_and_verify(
        deployed: Deployment) -> None:
    import psycopg

    admin = KeyManager(deployed.admin)
    issued = admin.create("ключ-é ☃", scopes=["tools:call"])
    check = Validator(deployed.server, refresh_interval=0)
    admin.revoke(issued.record.id, reason="left — the team")
    assert check.validate(issued.key).reason is Reason.REVOKED
    with psycopg.connect(deployed.server, autocommit=True) as conn:
        conn.execute("SELECT server_audit_append('gateway_call', NULL, NULL, 'x', %s)",
                     (json.dumps({"path": "/v1/ünïcode", "ms": 1.5, "n": 10**20}),))
    # The operator's revoke after the server's lines is kept, and the chain holds.
    admin.revoke(admin.create("later").record.id)
    check.close()
    trail = rows(deployed.root)
    events = [json.loads(line) for _, line, _ in trail]
    names = [e["event"] for e in events]
    assert names[-5:] == ["revoke", "validation_failed", "gateway_call", "create", "revoke"], \
        names
    server_lines = [e for e in events if e["event"] in ("validation_failed", "gateway_call")]
    assert {e["role"] for e in server_lines} == {deployed.server_role}, \
        "the database names the role that wrote each server line"
    for seq, line, digest in trail:
        assert digest == line_hash(line.encode("utf-8")), f"seq {seq}: the database's hash"
    verdict = verify(KeyManager(deployed.admin).audit)
    assert verdict.ok and verdict.events == len(trail), verdict.summary()


def test_a_rewound_head_cannot_drop_the_operators_revoke(deployed: Deployment) -> None:
    admin = KeyManager(deployed.admin)
    for n in range(3):
        admin.create(f"svc{n}")
    assert refused(deployed.server, "UPDATE audit_head SET seq = seq - 2, "
                   "hash = repeat('0', 64)") == "42501"
    target = admin.create("to-revoke").record
    admin.revoke(target.id, reason="compromised")
    revokes = admin.audit.read(event="revoke").events
    assert [e.key_id for e in revokes] == [target.id], "the revoke is in the trail"
    assert verify(admin.audit).ok


def test_what_a_caller_sends_cannot_make_a_server_line_fail(deployed: Deployment) -> None:
    """A NUL, a lone surrogate or a NaN in a request's detail (which PostgreSQL's text and
    jsonb refuse) would otherwise suppress the line that records the request."""
    from mcp_keys.stores.postgres import PostgresStore

    trail = PostgresStore(deployed.server).audit_log()
    try:
        assert trail.append("gateway_call", name="a\x00b", detail={
            "path": "/x\x00y", "odd": "\ud800", "ms": float("nan"), "n": [float("inf")]})
    finally:
        trail.close()
    (line,) = [json.loads(text) for _, text, _ in rows(deployed.root)[-1:]]
    assert line["event"] == "gateway_call" and line["detail"]["ms"] == "nan", line
    assert verify(KeyManager(deployed.admin).audit).ok


def test_a_function_the_server_creates_cannot_change_the_definers_line(
        deployed: Deployment) -> None:
    """Even a server role allowed to create objects in the store's schema cannot plant an
    overload (here ``convert_to(text, text)``, a better match for the literal than the
    built-in) that the definer function would call with the owner's rights."""
    import psycopg

    with psycopg.connect(deployed.root, autocommit=True) as conn:
        conn.execute(f"GRANT CREATE ON SCHEMA public TO {deployed.server_role}")
    with psycopg.connect(deployed.server, autocommit=True) as conn:
        conn.execute("CREATE FUNCTION public.convert_to(text, text) RETURNS bytea "
                     "LANGUAGE sql AS $$ SELECT '\\x00'::bytea $$")
        conn.execute("SELECT server_audit_append('validation_failed', NULL, NULL, 'x', "
                     "'{\"reason\": \"UNKNOWN\"}')")
    for seq, line, digest in rows(deployed.root):
        assert digest == line_hash(line.encode("utf-8")), f"seq {seq}: a planted hash"
    assert verify(KeyManager(deployed.admin).audit).ok


def test_lines_the_database_wrote_migrate_both_ways(pg_url: str, tmp_path: Path) -> None:
    """The database writes Unicode as UTF-8 (not ``\\u`` escapes): such lines copy to a
    file and on to another database with their chain intact."""
    import psycopg

    from mcp_keys.migrate import migrate

    KeyManager(pg_url).create("ключ ☃", description="é")
    file = tmp_path / "keys.json"
    migrate(pg_url, str(file))
    assert verify(KeyManager(file).audit).ok
    server = postgres_server()
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        second = f"{server.rpartition('/')[0]}/{name}"
        migrate(str(file), second)
        verdict = verify(KeyManager(second).audit)
        assert verdict.ok and verdict.events >= 3, verdict.summary()
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_role_that_cannot_read_the_trail_gets_one_line(deployed: Deployment) -> None:
    import psycopg
    from click.testing import CliRunner

    from mcp_keys.cli import cli

    with psycopg.connect(deployed.root, autocommit=True) as conn:
        conn.execute(f"REVOKE SELECT ON audit_events FROM {deployed.server_role}")
    for argv in (["audit"], ["audit", "verify"]):
        result = CliRunner().invoke(cli, ["--store", deployed.server, *argv])
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), argv
        assert "cannot read the audit trail" in result.stderr, result.stderr


@pytest.mark.parametrize("hold", ["open transaction", "one long statement"])
def test_a_server_holding_its_append_open_cannot_keep_a_revoke_out_of_the_trail(
        deployed: Deployment, hold: str) -> None:
    """A server that appends and then keeps its transaction open (or its statement
    running) holds nothing an operator waits for: the revoke's line is chained at once,
    with no warning, and the server's line is chained after it once it commits."""
    import threading

    import psycopg

    from mcp_keys.errors import set_warning_sink

    admin = KeyManager(deployed.admin)
    issued = admin.create("svc")
    warnings: list[str] = []
    set_warning_sink(warnings.append)
    holder = psycopg.connect(deployed.server)  # not autocommit: the transaction stays open
    append = ("SELECT server_audit_append('validation_failed', %s, NULL, 'x', "
              "'{\"reason\": \"UNKNOWN\"}')")
    sleeper: threading.Thread | None = None
    try:
        if hold == "open transaction":
            holder.execute(append, (issued.record.id,))
        else:  # the append and a sleep in one statement, ended by cancelling it
            holder.autocommit = True
            statement = append.replace("')", "'), pg_sleep(600)", 1)
            sleeper = threading.Thread(target=quietly, args=(holder, statement,
                                                             issued.record.id), daemon=True)
            sleeper.start()
            wait_for(lambda: sleeping(deployed.root, deployed.server_role), 10,
                     "the server's statement to sleep after its append")
        admin.revoke(issued.record.id, reason="compromised")
        revokes = admin.audit.read(event="revoke").events
        assert [e.key_id for e in revokes] == [issued.record.id], "the revoke is chained"
        assert not warnings, warnings
    finally:
        set_warning_sink(None)
        if sleeper is not None:
            holder.cancel()
            sleeper.join(10)
        else:
            holder.commit()
        holder.close()
    trail = [json.loads(line)["event"] for _, line, _ in rows(deployed.root)]
    if hold == "open transaction":
        assert trail[-2:] == ["revoke", "validation_failed"], trail
    assert verify(admin.audit).ok


def quietly(conn: Any, statement: str, key_id: str) -> None:
    """Run ``statement`` until it is cancelled."""
    import psycopg

    with contextlib.suppress(psycopg.Error):
        conn.execute(statement, (key_id,))


def sleeping(root: str, role: str) -> bool:
    """Whether a session of ``role`` sleeps in ``pg_sleep`` (its append made before)."""
    import psycopg

    with psycopg.connect(root, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s AND "
                            "wait_event = 'PgSleep'", (role,)).fetchone() == (1,)


def test_an_admin_without_the_inbox_grants_still_chains_its_own_lines(
        deployed: Deployment) -> None:
    """A store migrated to schema 5 before the new GRANTs ran: the operator's lines are
    still written; the servers' lines wait until a role that may chain them does."""
    import psycopg

    from mcp_keys.errors import set_warning_sink

    admin_role = deployed.server_role.replace("server", "admin")
    with psycopg.connect(deployed.root, autocommit=True) as conn:
        conn.execute(f"REVOKE ALL ON audit_inbox FROM {admin_role}")
        conn.execute(f"REVOKE ALL ON FUNCTION audit_chain(integer) FROM {admin_role}")
    with psycopg.connect(deployed.server, autocommit=True) as conn:
        conn.execute("SELECT server_audit_append('gateway_call', NULL, NULL, 'x', '{}')")
    warnings: list[str] = []
    set_warning_sink(warnings.append)
    try:
        admin = KeyManager(deployed.admin)
        issued = admin.create("svc")
        admin.revoke(issued.record.id)
        assert [e.event for e in admin.audit.read().events][-2:] == ["create", "revoke"]
    finally:
        set_warning_sink(None)
    assert not warnings, warnings
    assert [json.loads(line)["event"] for _, line, _ in rows(deployed.root)][-1] == \
        "gateway_call", "chained by a role that may"
    assert verify(KeyManager(deployed.admin).audit).ok
