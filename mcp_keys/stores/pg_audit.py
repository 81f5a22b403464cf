"""The audit trail of a PostgreSQL store: the table ``audit_events``, one row per line.

Each row keeps a chained JSON line and the SHA-256 of its UTF-8 bytes, so ``audit``,
``audit verify`` and ``migrate`` treat it like the file log. The database, not the client,
chains a new line: ``audit_chain_line`` locks the ``audit_head`` row (the newest ``seq``
and hash), builds the line with ``jsonb_build_object`` (``seq``, ``prev``, ``ts`` and the
writing database ``role`` filled in there), hashes it with ``sha256()`` and moves the head,
so the chain stays linear whichever host writes. Only operators (``audit_append``, with
their own rights) take the head. Servers hold neither ``INSERT`` on the trail nor
``UPDATE`` on the head: they append through ``server_audit_append``, a ``SECURITY
DEFINER`` function that takes only the events a server writes and puts them in
``audit_inbox`` (numbered, stamped with the time and role there), which no server can
lock, read or change. The next operator's append, or an operator's read of the trail,
chains the waiting lines. So a compromised server can neither forge an operator's event,
rewind the head, nor keep an operator's line out of the trail by holding a lock: a
transaction it leaves open holds only its own inbox row, which nobody waits for.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from ..actor import current_actor
from ..audit import TrailReader, line_hash
from ..errors import McpKeysError, warn
from ..models import utcnow

if TYPE_CHECKING:
    import psycopg

_BATCH = 1000

# The events a server (a validator, the gateway, the proxy) writes: the only ones
# ``server_audit_append`` takes. Everything else is an operator's and needs the admin's
# privileges (``audit_append``, which runs with the caller's rights).
SERVER_EVENTS = ("validation_failed", "gateway_call", "gateway_exec", "proxy_blocked")
_VALIDATION_DETAIL = ("reason", "suppressed", "class")
_MAX_DETAIL = 65536  # bytes of a server event's detail: no trail flooding by one call
_LOCK_TIMEOUT = "5s"  # an append waits this long for the head, then fails (and says so)
CHAIN_BATCH = 1000  # servers' waiting lines one operator's append (or read) chains


class _Database(Protocol):
    """What the trail needs of its store (``PostgresStore``), without importing it."""

    @property
    def display(self) -> str: ...

    def connect(self) -> psycopg.Connection[Any]: ...

    def scrub(self, text: str) -> str: ...

    def error(self, exc: BaseException, doing: str) -> McpKeysError: ...


# -- the schema of appends (schema version 3) ---------------------------------------------
# The head moves out of store_state (which every key change locks) into its own row.
_HEAD_TABLE = """
CREATE TABLE audit_head (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    seq bigint NOT NULL,
    hash text NOT NULL
);
INSERT INTO audit_head (seq, hash) SELECT audit_seq, audit_hash FROM store_state;
ALTER TABLE store_state DROP COLUMN IF EXISTS audit_seq, DROP COLUMN IF EXISTS audit_hash;
"""
# Kept apart from postgres.py's tables: the two functions and who may call them. The line
# is built and hashed in the database; ``audit verify`` hashes the stored line's UTF-8
# bytes, which is what ``convert_to(line, 'UTF8')`` hashes here. ``ts`` is written as
# Python's ``isoformat`` writes it (microseconds only when not zero, ``Z`` for UTC).
_APPEND_FUNCTIONS = """
CREATE OR REPLACE FUNCTION audit_chain_line(p_event text, p_key_id text, p_name text,
                                            p_actor text, p_role text, p_detail jsonb,
                                            p_ts timestamptz)
RETURNS bigint LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp
SET lock_timeout = '{lock_timeout}' AS $f$
DECLARE
    v_seq bigint;
    v_prev text;
    v_line text;
    v_hash text;
    v_utc timestamp := p_ts AT TIME ZONE 'UTC';
BEGIN
    SELECT seq, hash INTO STRICT v_seq, v_prev FROM {schema}.audit_head FOR UPDATE;
    v_seq := v_seq + 1;
    v_line := jsonb_build_object(
        'seq', v_seq, 'prev', v_prev,
        'ts', to_char(v_utc, 'YYYY-MM-DD"T"HH24:MI:SS')
              || CASE WHEN date_trunc('second', v_utc) = v_utc THEN ''
                      ELSE to_char(v_utc, '.US') END || 'Z',
        'event', p_event, 'key_id', p_key_id, 'name', p_name, 'actor', p_actor,
        'role', p_role, 'detail', coalesce(p_detail, '{{}}'::jsonb))::text;
    v_hash := encode(sha256(convert_to(v_line, 'UTF8')), 'hex');
    INSERT INTO {schema}.audit_events (seq, line, hash) VALUES (v_seq, v_line, v_hash);
    UPDATE {schema}.audit_head SET seq = v_seq, hash = v_hash;
    RETURN v_seq;
END
$f$;
REVOKE ALL ON FUNCTION audit_chain_line(text, text, text, text, text, jsonb, timestamptz)
    FROM PUBLIC;

CREATE OR REPLACE FUNCTION audit_chain(p_limit integer)
RETURNS integer LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp
SET lock_timeout = '{lock_timeout}' AS $f$
DECLARE
    v_rows {schema}.audit_inbox[];
    v_row {schema}.audit_inbox;
BEGIN
    PERFORM 1 FROM {schema}.audit_head FOR UPDATE;
    WITH gone AS (
        DELETE FROM {schema}.audit_inbox WHERE id IN (
            SELECT id FROM {schema}.audit_inbox ORDER BY id LIMIT p_limit)
        RETURNING *)
    SELECT array_agg(gone ORDER BY gone.id) INTO v_rows FROM gone;
    IF v_rows IS NULL THEN
        RETURN 0;
    END IF;
    FOREACH v_row IN ARRAY v_rows LOOP
        PERFORM {schema}.audit_chain_line(v_row.event, v_row.key_id, v_row.name,
                                          v_row.actor, v_row.role, v_row.detail, v_row.ts);
    END LOOP;
    RETURN cardinality(v_rows);
END
$f$;
REVOKE ALL ON FUNCTION audit_chain(integer) FROM PUBLIC;

CREATE OR REPLACE FUNCTION audit_append(p_event text, p_key_id text, p_name text,
                                        p_actor text, p_detail jsonb, p_ts timestamptz)
RETURNS bigint LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp
SET lock_timeout = '{lock_timeout}' AS $f$
BEGIN
    IF p_event IS NULL OR p_actor IS NULL OR p_ts IS NULL
            OR (p_detail IS NOT NULL AND jsonb_typeof(p_detail) <> 'object') THEN
        RAISE EXCEPTION 'mcp-keys: an audit event needs an event, an actor, a time and an '
                        'object for detail' USING ERRCODE = 'check_violation';
    END IF;
    BEGIN  -- servers' lines waiting before this one; whatever fails there (a role without
        -- the grant, a line that cannot be chained) never keeps this line out
        PERFORM {schema}.audit_chain({chain_batch});
    EXCEPTION WHEN OTHERS THEN
        NULL;
    END;
    RETURN {schema}.audit_chain_line(p_event, p_key_id, p_name, p_actor, session_user::text,
                                     p_detail, p_ts);
END
$f$;
REVOKE ALL ON FUNCTION audit_append(text, text, text, text, jsonb, timestamptz) FROM PUBLIC;

CREATE OR REPLACE FUNCTION server_audit_append(p_event text, p_key_id text, p_name text,
                                               p_actor text, p_detail jsonb)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
DECLARE
    v_id bigint;
BEGIN
    IF p_event IS NULL OR p_event NOT IN ({events}) THEN
        RAISE EXCEPTION 'mcp-keys: a server may append only {names} events'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF (p_key_id IS NOT NULL AND p_key_id !~ '^[a-z0-9]{{12}}$')
            OR (p_name IS NOT NULL AND (length(p_name) > 64 OR p_name ~ '[[:cntrl:]]'))
            OR p_actor IS NULL OR length(p_actor) > 512 OR p_actor ~ '[[:cntrl:]]'
            OR (p_detail IS NOT NULL AND (jsonb_typeof(p_detail) <> 'object'
                                          OR octet_length(p_detail::text) > {max_detail}))
            OR (p_event = 'validation_failed' AND p_detail IS NOT NULL AND EXISTS (
                    SELECT 1 FROM jsonb_object_keys(p_detail) AS k
                    WHERE k NOT IN ({validation_detail}))) THEN
        RAISE EXCEPTION 'mcp-keys: a malformed % event from a server was refused', p_event
            USING ERRCODE = 'check_violation';
    END IF;
    -- Into the inbox, never the head: no lock a caller could keep by leaving its
    -- transaction open. The next operator's append (or read of the trail) chains it.
    INSERT INTO {schema}.audit_inbox (event, key_id, name, actor, role, detail, ts)
    VALUES (p_event, p_key_id, p_name, p_actor, session_user::text,
            coalesce(p_detail, '{{}}'::jsonb), clock_timestamp())
    RETURNING id INTO v_id;
    RETURN v_id;
END
$f$;
REVOKE ALL ON FUNCTION server_audit_append(text, text, text, text, jsonb) FROM PUBLIC;
"""
# -- schema version 5: servers' lines wait in an inbox (no server holds the head) --------
_INBOX_TABLE = """
CREATE TABLE audit_inbox (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event text NOT NULL,
    key_id text,
    name text,
    actor text NOT NULL,
    role text NOT NULL,
    detail jsonb NOT NULL,
    ts timestamptz NOT NULL
);
"""


def create_audit_head(conn: psycopg.Connection[Any]) -> None:
    """Move the audit head from ``store_state`` into ``audit_head`` (schema 3)."""
    conn.execute(_HEAD_TABLE)


def create_audit_inbox(conn: psycopg.Connection[Any]) -> None:
    """The table servers' lines wait in until an operator's append chains them (schema 5)."""
    conn.execute(_INBOX_TABLE)


def install_append_functions(conn: psycopg.Connection[Any]) -> None:
    """Create (or replace) the append functions in the current schema. They name their
    tables with that schema and resolve everything else in ``pg_catalog`` only: a definer
    function must not pick up a function or operator that a caller created."""
    from psycopg import sql

    row = conn.execute("SELECT current_schema()").fetchone()
    if row is None or row[0] is None:
        raise McpKeysError("no current schema to create the audit functions in")

    def listed(names: tuple[str, ...]) -> str:
        return ", ".join(f"'{name}'" for name in names)  # our own constants, never input

    text = _APPEND_FUNCTIONS.format(
        schema=sql.Identifier(row[0]).as_string(conn), events=listed(SERVER_EVENTS),
        names="/".join(SERVER_EVENTS), max_detail=_MAX_DETAIL, lock_timeout=_LOCK_TIMEOUT,
        chain_batch=CHAIN_BATCH,
        validation_detail=listed(_VALIDATION_DETAIL))
    conn.execute(text.encode())


def _storable(value: Any) -> Any:
    """``value`` as PostgreSQL can store it: a NUL or a lone surrogate in a string (which
    ``text`` and ``jsonb`` refuse) becomes U+FFFD, and a NaN or infinity (which JSON has
    not) its name, so what a caller puts in a request cannot make its audit line fail."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace").replace(
            "\x00", "\ufffd")
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {_storable(str(k)): _storable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_storable(v) for v in value]
    return value


class PgAuditLog(TrailReader):
    """``audit_events`` of one store; appends never fail the operation behind them."""

    def __init__(self, store: _Database) -> None:
        self.store = store
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"PgAuditLog({self.store.display!r})"

    def abandon_connections(self, keep: list[object]) -> None:
        """After a fork: drop the parent's connection without closing it."""
        if self._conn is not None:
            keep.append(self._conn)
            self._conn = None
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = self.store.connect()
        return self._conn

    def append(self, event: str, *, key_id: str | None = None, name: str | None = None,
               detail: dict[str, Any] | None = None, ts: datetime | None = None) -> bool:
        try:
            with self._lock:
                conn = self._connection()
                self._call(conn, event, key_id, name, detail, ts)
        except Exception as exc:  # the change stands; say the trail missed it
            message = str(exc) if isinstance(exc, McpKeysError) else self.store.scrub(
                " ".join(str(exc).split()) or type(exc).__name__)
            warn("could not write audit log of %s: %s", self.store.display, message)
            return False
        return True

    @staticmethod
    def _call(conn: psycopg.Connection[Any], event: str, key_id: str | None,
              name: str | None, detail: dict[str, Any] | None, ts: datetime | None) -> None:
        """One database call chains the event: a server's through the definer function
        (the database's clock), an operator's with the caller's own rights."""
        from psycopg.types.json import Jsonb

        values: tuple[Any, ...] = (event, _storable(key_id), _storable(name),
                                   _storable(current_actor()), Jsonb(_storable(detail or {})))
        if event in SERVER_EVENTS:
            conn.execute("SELECT server_audit_append(%s, %s, %s, %s, %s)", values)
        else:
            conn.execute("SELECT audit_append(%s, %s, %s, %s, %s, %s)",
                         (*values, ts or utcnow()))

    @staticmethod
    def _insert(conn: psycopg.Connection[Any], seq: int, line: bytes) -> None:
        digest = line_hash(line)
        conn.execute("INSERT INTO audit_events (seq, line, hash) VALUES (%s, %s, %s)",
                     (seq, line.decode("utf-8"), digest))
        conn.execute("UPDATE audit_head SET seq = %s, hash = %s", (seq, digest))

    def append_lines(self, lines: list[bytes]) -> int:
        """Copy already-chained lines verbatim (``migrate``), in one transaction."""
        import json

        with self._lock:
            conn = self._connection()
            with conn.transaction():
                conn.execute("SELECT seq FROM audit_head FOR UPDATE")
                for line in lines:
                    self._insert(conn, int(json.loads(line)["seq"]), line)
        return len(lines)

    def _query(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """The rows of one read; a database failure is the store's one-line error."""
        import psycopg

        with self._lock:
            try:
                return self._connection().execute(query, params).fetchall()
            except psycopg.Error as exc:
                failure = self.store.error(exc, "read the audit trail")
        raise failure  # outside the handler: the driver's exception is not its context

    def chain_waiting(self) -> None:
        """Chain the servers' lines waiting in ``audit_inbox`` (schema 5), if this role may
        (an operator's); a server role reads the trail as chained so far."""
        import psycopg

        with self._lock:
            try:
                conn = self._connection()
                while conn.execute("SELECT audit_chain(%s)", (CHAIN_BATCH,)).fetchone() == (
                        CHAIN_BATCH,):
                    pass
            except psycopg.Error:
                pass  # not allowed to (a server role) or unreachable: _query says which

    def lines(self) -> Iterator[tuple[str, int, bytes]]:
        """Every row in ``seq`` order, fetched in batches (never the whole trail at once),
        after chaining the lines servers left waiting."""
        self.chain_waiting()
        last = None
        number = 0
        while True:
            query = "SELECT seq, line FROM audit_events"
            params: tuple[Any, ...] = ()
            if last is not None:
                query += " WHERE seq > %s"
                params = (last,)
            rows = self._query(query + f" ORDER BY seq LIMIT {_BATCH}", params)
            if not rows:
                return
            for seq, line in rows:
                number += 1
                yield "audit_events", number, str(line).encode("utf-8")
                last = seq

    def head(self) -> tuple[int, str] | None:
        """The newest chained line (not chaining: ``verify`` reads it after ``lines``)."""
        rows = self._query("SELECT seq, hash FROM audit_head")
        if not rows or int(rows[0][0]) == 0:
            return None
        return int(rows[0][0]), str(rows[0][1])
