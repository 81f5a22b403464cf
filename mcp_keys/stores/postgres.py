"""The PostgreSQL store: many hosts, one truth.

Every lifecycle operation is one transaction that first locks the single ``store_state``
row (writers are serialised, so two rotations of one key cannot both succeed), reads and
writes only the rows it names (``SELECT ... FOR UPDATE``, one ``INSERT ... ON CONFLICT``,
one ``DELETE``), records the IDs it changed as the next row of ``key_changes`` (the
change counter) and sends ``NOTIFY`` to wake running validators, which then read
``key_changes`` (``pg_watch``): anyone who can connect may ``NOTIFY``, so a payload is
never believed. The audit trail is the table
``audit_events``, chained exactly like the file log. A password in the URL is never
shown: ``display`` and every error message carry the URL without it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..errors import StoreError, UsageError
from ..models import ApiKey
from .base import DictRecords, Records
from .pg_url import parse_url

if TYPE_CHECKING:
    import psycopg

    from .pg_audit import PgAuditLog

log = logging.getLogger("mcp_keys")
SCHEMA_VERSION = 5  # 2: api_keys.resources (keys bound to MCP server URLs); 3: audit_head
# and the audit append functions (pg_audit); 4: key_changes (the change log); 5:
# audit_inbox, where servers' lines wait so that no server ever holds the audit head
CHANNEL = "mcp_keys"
_COLUMNS = ("id, name, description, digest, scopes, created_at, expires_at, revoked_at, "
            "revoke_reason, rotated_from, rotated_to, expiry_recorded_at, resources")
_NOTIFY_IDS_MAX = 200  # past this a change is recorded as "reload everything"
QUERY_DEADLINE = 30.0  # seconds a lifecycle connection waits for an answer (pg_deadline)
_SCHEMA = """
CREATE TABLE schema_version (version integer NOT NULL);
CREATE TABLE api_keys (
    id text PRIMARY KEY CHECK (id ~ '^[a-z0-9]{12}$'),
    name text NOT NULL,
    description text NOT NULL DEFAULT '',
    digest text NOT NULL UNIQUE CHECK (digest ~ '^[0-9a-f]{64}$'),
    scopes text[] NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL,
    expires_at timestamptz,
    revoked_at timestamptz,
    revoke_reason text,
    rotated_from text,
    rotated_to text,
    expiry_recorded_at timestamptz,
    resources text[] NOT NULL DEFAULT '{}'
);
CREATE INDEX api_keys_id_prefix ON api_keys (id text_pattern_ops);
CREATE INDEX api_keys_rotated_to ON api_keys (rotated_to);
CREATE INDEX api_keys_rotated_from ON api_keys (rotated_from);
CREATE TABLE audit_events (
    seq bigint PRIMARY KEY,
    line text NOT NULL,
    hash text NOT NULL
);
CREATE TABLE store_state (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    change_seq bigint NOT NULL DEFAULT 0,
    audit_seq bigint NOT NULL DEFAULT 0,
    audit_hash text NOT NULL DEFAULT repeat('0', 64)
);
INSERT INTO store_state DEFAULT VALUES;
INSERT INTO schema_version VALUES (2);
"""
# -- the change log (schema 4) --------------------------------------------------------
# What validators believe about changes comes from here, never from a NOTIFY payload:
# writers (not the server role) may insert and prune it. ``ids`` NULL means "reload
# everything". The counter is max(seq).
_CHANGES_SCHEMA = """
CREATE TABLE key_changes (
    seq bigint PRIMARY KEY CHECK (seq > 0),
    ids text[]
);
INSERT INTO key_changes (seq, ids) SELECT change_seq + 1, NULL FROM store_state;
INSERT INTO schema_version VALUES (4);
"""
# -- settings a role may change for its own sessions --------------------------------------
# Any role may ``ALTER ROLE <itself> SET`` a default for its sessions, including the
# sessions of every other server sharing it: a compromised server could point the other
# validators' search_path away from the store (or at tables it made), make their sessions
# read-only (no audit line), time them out or change how times read. Such per-role
# defaults are replaced on every connection; what the URL sets (``options``), the
# database's defaults and the server's configuration stand.
_PINNED = {"search_path": '"$user", public', "default_transaction_read_only": "off",
           "lock_timeout": "0",
           "idle_in_transaction_session_timeout": "0", "idle_session_timeout": "0",
           "transaction_timeout": "0", "default_transaction_isolation": "read committed",
           "DateStyle": "ISO, MDY", "IntervalStyle": "postgres", "TimeZone": "UTC"}
_UNKNOWN_IDLE = 'unrecognized configuration parameter "idle_session_timeout"'
_PIN_SETTINGS = """
SELECT pg_catalog.count(pg_catalog.set_config(s.name, p.value, false))
FROM ROWS FROM (pg_catalog.unnest(%s::pg_catalog.text[]),
               pg_catalog.unnest(%s::pg_catalog.text[])) AS p(name, value)
JOIN pg_catalog.pg_settings AS s
  ON pg_catalog.lower(s.name) OPERATOR(pg_catalog.=) pg_catalog.lower(p.name)
WHERE s.source OPERATOR(pg_catalog.=) ANY (ARRAY['user', 'database user']::pg_catalog.text[])
"""  # every name qualified: the search_path in force may be the one being replaced
CHANGES_KEPT = 1000  # a validator further behind than this reloads everything
CHANGE_SEQ = "SELECT coalesce(max(seq), 0) FROM key_changes"


def record_change(conn: psycopg.Connection[Any], ids: list[str] | None) -> int:
    """Append one change (under the ``store_state`` row lock, so writers are serialised)
    and prune what no validator needs; returns the new counter. Listeners are woken by
    ``wake`` once the change is committed, never inside the writer's transaction: any
    role may fill the notification queue (a session that LISTENs and never ends its
    transaction), and a NOTIFY that cannot be queued fails the transaction it is in."""
    row = conn.execute("INSERT INTO key_changes (seq, ids) SELECT coalesce(max(seq), 0) + 1, "
                       "%s FROM key_changes RETURNING seq", (ids,)).fetchone()
    assert row is not None
    seq = int(row[0])
    conn.execute("DELETE FROM key_changes WHERE seq <= %s", (seq - CHANGES_KEPT,))
    return seq


def wake(conn: psycopg.Connection[Any], seq: int) -> None:
    """Wake listening validators after a committed change; if that fails, they still
    read the change on their next heartbeat (``pg_watch.HEARTBEAT``), so it is a warning."""
    driver = require_psycopg()
    try:
        conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, json.dumps({"seq": seq})))
    except driver.Error as exc:
        log.warning("mcp-keys could not wake validators (they read change %d on their next "
                    "heartbeat): %s", seq, " ".join(str(exc).split()) or type(exc).__name__)
# -- end of the change log ------------------------------------------------------------
# Each step takes the schema from the version before it to its own, in the transaction
# that holds the schema lock. An older mcp-keys refuses the newer schema (fail closed).
_MIGRATIONS = {
    2: """
ALTER TABLE api_keys ADD COLUMN resources text[] NOT NULL DEFAULT '{}';
INSERT INTO schema_version VALUES (2);
""",
    4: _CHANGES_SCHEMA,
}


# -- schema 3: audit appends through database functions (pg_audit holds their SQL) -------
def _migrate_to_3(conn: psycopg.Connection[Any]) -> None:
    """The audit head in its own table; servers append only through
    ``server_audit_append``."""
    from .pg_audit import create_audit_head

    create_audit_head(conn)  # the functions come with schema 5, which replaces them
    conn.execute("INSERT INTO schema_version VALUES (3)")


def _migrate_to_5(conn: psycopg.Connection[Any]) -> None:
    """Servers' lines wait in ``audit_inbox``; only operators take the audit head."""
    from .pg_audit import create_audit_inbox, install_append_functions

    create_audit_inbox(conn)
    install_append_functions(conn)
    conn.execute("INSERT INTO schema_version VALUES (5)")


_STEPS: dict[int, Callable[[psycopg.Connection[Any]], None]] = {3: _migrate_to_3,
                                                                5: _migrate_to_5}


def require_psycopg() -> Any:
    """psycopg, or a clear error naming the extra to install."""
    try:
        import psycopg
    except ImportError:
        from ..extras import install_hint

        raise StoreError(f"a postgresql:// store needs psycopg: {install_hint('postgres')}"
                         ) from None
    return psycopg


def to_record(row: tuple[Any, ...]) -> ApiKey:
    """A row of ``api_keys`` (in ``_COLUMNS`` order) as a record."""
    (key_id, name, description, digest, scopes, created, expires, revoked, reason,
     rotated_from, rotated_to, recorded, resources) = row
    return ApiKey(id=key_id, name=name, digest=digest, created_at=_utc(created),
                  expires_at=_utc(expires), description=description, scopes=tuple(scopes),
                  revoked_at=_utc(revoked), revoke_reason=reason, rotated_from=rotated_from,
                  rotated_to=rotated_to, expiry_recorded_at=_utc(recorded),
                  resources=tuple(resources))


def _utc(moment: datetime | None) -> Any:
    return None if moment is None else moment.astimezone(UTC)


def _row(key: ApiKey) -> tuple[Any, ...]:
    return (key.id, key.name, key.description, key.digest, list(key.scopes), key.created_at,
            key.expires_at, key.revoked_at, key.revoke_reason, key.rotated_from,
            key.rotated_to, key.expiry_recorded_at, list(key.resources))


class PostgresStore:
    """A store in a PostgreSQL database, named by a libpq URL."""

    kind = "postgresql"

    def __init__(self, url: str) -> None:
        self.url = url
        self._parsed = parse_url(url)
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()
        self.migrated_from: int | None = None  # set by initialize() when it migrated

    def __repr__(self) -> str:
        return f"PostgresStore({self.display!r})"

    @property
    def display(self) -> str:
        """The URL without its password (all of it hidden when it does not parse)."""
        return self._parsed.display

    @property
    def problem(self) -> str | None:
        """Why the URL cannot be used (it is then hidden whole), or ``None``."""
        return self._parsed.problem

    def scrub(self, text: str) -> str:
        """``text`` with the URL's password (if any) replaced."""
        return self._parsed.scrub(text)

    def error(self, exc: BaseException, doing: str) -> StoreError:
        """A one-line StoreError for a database failure, never carrying the password."""
        detail = " ".join(str(exc).split()) or type(exc).__name__
        return StoreError(self.scrub(f"PostgreSQL store {self.display}: cannot {doing}: "
                                     f"{detail}"))

    # -- connections ---------------------------------------------------------------------

    def connect(self, *, watch: bool = False,
                deadline: float = QUERY_DEADLINE) -> psycopg.Connection[Any]:
        """A new autocommit connection (the caller closes it) on which every wait for the
        server fails after ``deadline`` seconds of silence (``pg_deadline``); connecting
        gives up after ``connect_timeout`` (10 s unless the URL says otherwise). ``watch``
        adds TCP keepalives and a user timeout, so a dead peer is noticed in seconds."""
        driver = require_psycopg()
        if self.problem is not None:
            raise UsageError(self.problem)
        from .pg_deadline import DeadlineConnection

        failure: Exception | None = None
        for idle_pin in (True, False):  # idle_session_timeout is PostgreSQL 14+
            try:
                conn = DeadlineConnection.connect(
                    self.url, autocommit=True, **self._startup(watch, deadline, idle_pin))
                conn.deadline = deadline
            except driver.ProgrammingError as exc:
                failure = UsageError(self.scrub(f"invalid PostgreSQL URL {self.display}: "
                                                f"{' '.join(str(exc).split())}"))
            except driver.Error as exc:
                failure = self.error(exc, "connect")
                if idle_pin and _UNKNOWN_IDLE in str(exc):
                    continue
            else:
                try:
                    conn.execute(_PIN_SETTINGS, (list(_PINNED), list(_PINNED.values())))
                except driver.Error as exc:
                    conn.close()
                    failure = self.error(exc, "connect")
                else:
                    connected: psycopg.Connection[Any] = conn
                    return connected
            break
        assert failure is not None
        raise failure  # outside the handler: the driver's exception is not its context

    def _startup(self, watch: bool, deadline: float, idle_pin: bool) -> dict[str, Any]:
        """Connection parameters beyond the URL's. The settings a role's own defaults must
        not decide before the first query (its timeouts, the encoding) are set at startup,
        after the URL's own ``options`` (a schema), never instead of them."""
        from psycopg.conninfo import conninfo_to_dict

        named = conninfo_to_dict(self.url)
        extra: dict[str, Any] = {}
        if "connect_timeout" not in named:
            extra["connect_timeout"] = max(2, min(10, round(deadline)))
        if "client_encoding" not in named:
            extra["client_encoding"] = "UTF8"
        pinned = f"-c statement_timeout={5000 if watch else 0}"
        if idle_pin:
            pinned += " -c idle_session_timeout=0"
        own = named.get("options")
        extra["options"] = f"{own} {pinned}" if own else pinned
        if watch:
            extra |= {"application_name": "mcp-keys-watch", "keepalives": 1,
                      "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 2,
                      "tcp_user_timeout": 10000}
        return extra

    @contextlib.contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        """This store's connection, opened on first use and reopened if it broke."""
        driver = require_psycopg()
        with self._lock:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._conn = self.connect()
            try:
                yield self._conn
            except driver.Error as exc:
                failure = self.error(exc, "complete the operation")
            else:
                return
            raise failure from None

    def abandon_connections(self, keep: list[object]) -> None:
        """After a fork: drop the parent's connection without closing it (closing would
        end the parent's session); ``keep`` holds it so it is never collected."""
        if self._conn is not None:
            keep.append(self._conn)
            self._conn = None
        self._lock = threading.Lock()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- schema --------------------------------------------------------------------------

    def schema_version(self, conn: psycopg.Connection[Any]) -> int | None:
        found = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
        if not found or not found[0]:
            return None
        row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def exists(self) -> bool:
        with self._connection() as conn:
            return self.schema_version(conn) is not None

    def initialize(self) -> bool:
        """Create the schema, or migrate an older one, under an advisory lock; ``True``
        when it was created. A newer schema is refused. The current schema is left alone
        without taking the lock: any role that can connect may hold an advisory lock, and
        ``create`` comes here on every call."""
        with self._connection() as conn:
            if self.schema_version(conn) == SCHEMA_VERSION:
                return False
        with self._connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('mcp_keys_schema'))")
            version = self.schema_version(conn)
            created = version is None
            if version is None:
                conn.execute(_SCHEMA)
                version = 2
            if version > SCHEMA_VERSION:
                self._check_version(version)
            for step in range(version + 1, SCHEMA_VERSION + 1):
                if step in _STEPS:
                    _STEPS[step](conn)
                else:
                    conn.execute(_MIGRATIONS[step])
            if created:
                return True
            if version < SCHEMA_VERSION:
                self.migrated_from = version
                seq: int | None = record_change(conn, None)
            else:
                seq = None
        if seq is not None:
            with self._connection() as conn:
                wake(conn, seq)
        return False

    def _check_version(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise StoreError(f"PostgreSQL store {self.display} has schema version {version}; "
                             f"this mcp-keys knows version {SCHEMA_VERSION}: upgrade mcp-keys")
        if version < SCHEMA_VERSION:
            raise StoreError(f"PostgreSQL store {self.display} has schema version {version}: "
                             "run 'mcp-keys init' to migrate it")

    def ready(self, conn: psycopg.Connection[Any]) -> None:
        version = self.schema_version(conn)
        if version is None:
            raise StoreError(f"no mcp-keys schema in {self.display}: run "
                             "'mcp-keys --store URL init' first")
        self._check_version(version)

    # -- the KeyStore interface ----------------------------------------------------------

    def check_trusted(self, *, reader: bool = False) -> None:
        """Nothing to check on disk: the database's roles decide who may write."""

    def read(self) -> DictRecords:
        with self._connection() as conn:
            version = self.schema_version(conn)
            if version is None:
                return DictRecords()
            self._check_version(version)
            rows = conn.execute(f"SELECT {_COLUMNS} FROM api_keys").fetchall()
        return DictRecords({row[0]: to_record(row) for row in rows})

    @contextlib.contextmanager
    def transaction(self, *, create: bool = False) -> Iterator[PgTransaction]:
        if create:
            self.initialize()
        with self._connection() as conn:
            with conn.transaction():
                self.ready(conn)
                conn.execute("SELECT change_seq FROM store_state FOR UPDATE")
                txn = PgTransaction(conn)
                yield txn
                txn.announce()
            if txn.seq is not None:
                wake(conn, txn.seq)

    def audit_log(self) -> PgAuditLog:
        from .pg_audit import PgAuditLog

        return PgAuditLog(self)

    def health(self) -> list[tuple[str, Any, str]]:
        """doctor's rows: connection, schema version, and a role that can do too much."""
        try:
            with self._connection() as conn:
                server = conn.info.server_version
                version = self.schema_version(conn)
                role = conn.execute(
                    "SELECT current_user, rolsuper, rolcreaterole, rolcreatedb FROM pg_roles "
                    "WHERE rolname = current_user").fetchone()
                owner = conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = "
                                     "'api_keys' AND schemaname = current_schema()").fetchone()
        except StoreError as exc:
            return [("database", "fail", str(exc))]
        rows: list[tuple[str, Any, str]] = [
            ("database", "pass", f"connected to {self.display} (server {server // 10000})")]
        if version is None:
            rows.append(("schema", "fail", "no mcp-keys schema: run 'mcp-keys init'"))
        elif version != SCHEMA_VERSION:
            rows.append(("schema", "fail", f"schema version {version}, expected "
                         f"{SCHEMA_VERSION}"))
        else:
            rows.append(("schema", "pass", f"schema version {version}"))
        assert role is not None
        name, superuser, createrole, createdb = role
        powers = [p for p, held in (("superuser", superuser), ("CREATEROLE", createrole),
                                    ("CREATEDB", createdb)) if held]
        if owner is not None and owner[0] == name:
            powers.append("owns the tables (can ALTER or DROP them)")
        if powers:
            rows.append(("role privileges", "warn", f"role {name} can do more than the tables "
                         f"need: {', '.join(powers)}; see docs/deployment.md for the GRANTs"))
        else:
            rows.append(("role privileges", "pass", f"role {name} holds no more than it needs"))
        return rows


class PgRecords(Records):
    """The rows of ``api_keys``, read and written one statement at a time."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn
        self.changed: set[str] = set()

    def __getitem__(self, key_id: str) -> ApiKey:
        row = self._conn.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE id = %s FOR UPDATE",
                                 (key_id,)).fetchone()
        if row is None:
            raise KeyError(key_id)
        return to_record(row)

    def __setitem__(self, key_id: str, record: ApiKey) -> None:
        assert key_id == record.id
        names = _COLUMNS.split(", ")
        updates = ", ".join(f"{n} = EXCLUDED.{n}" for n in names[1:])
        self._conn.execute(
            f"INSERT INTO api_keys ({_COLUMNS}) VALUES ({', '.join(['%s'] * len(names))}) "
            f"ON CONFLICT (id) DO UPDATE SET {updates}", _row(record))
        self.changed.add(key_id)

    def __delitem__(self, key_id: str) -> None:
        if self._conn.execute("DELETE FROM api_keys WHERE id = %s", (key_id,)).rowcount == 0:
            raise KeyError(key_id)
        self.changed.add(key_id)

    def __iter__(self) -> Iterator[str]:
        return iter([row[0] for row in
                     self._conn.execute("SELECT id FROM api_keys ORDER BY id").fetchall()])

    def __len__(self) -> int:
        row = self._conn.execute("SELECT count(*) FROM api_keys").fetchone()
        return int(row[0]) if row else 0

    def __contains__(self, key_id: object) -> bool:
        return self._conn.execute("SELECT 1 FROM api_keys WHERE id = %s",
                                  (key_id,)).fetchone() is not None

    def all(self) -> list[ApiKey]:
        return [to_record(row) for row in self._conn.execute(
            f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at, id FOR UPDATE").fetchall()]

    def with_prefix(self, prefix: str) -> list[str]:
        return [row[0] for row in self._conn.execute(
            "SELECT id FROM api_keys WHERE id LIKE %s ORDER BY id",
            (prefix.replace("%", "").replace("_", "") + "%",)).fetchall()]

    def linked_to(self, key_id: str) -> list[ApiKey]:
        return [to_record(row) for row in self._conn.execute(
            f"SELECT {_COLUMNS} FROM api_keys WHERE rotated_to = %s OR rotated_from = %s "
            "FOR UPDATE", (key_id, key_id)).fetchall()]


class PgTransaction:
    """One database transaction of lifecycle work."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn
        self.keys = PgRecords(conn)
        self.seq: int | None = None  # the change this transaction recorded, if any

    def commit_with(self, action: Callable[[], None]) -> None:
        """Run ``action`` before the transaction commits: if it fails, nothing commits."""
        action()

    def announce(self) -> None:
        """Record what changed in ``key_changes`` (``wake`` follows the commit)."""
        changed = sorted(self.keys.changed)
        if changed:
            self.seq = record_change(self._conn,
                                     changed if len(changed) <= _NOTIFY_IDS_MAX else None)
