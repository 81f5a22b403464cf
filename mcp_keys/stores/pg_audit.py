"""The audit trail of a PostgreSQL store: the table ``audit_events``, one row per line.

Each row keeps the exact line bytes that the file log would hold and their hash, so
``audit``, ``audit verify`` and ``migrate`` treat both alike. Appends lock the
``store_state`` row, which holds the newest ``seq`` and hash (the head), so the chain stays
linear whichever host writes; deleting rows at the end is seen against that head.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..audit import TrailReader, event_line, line_hash
from ..errors import McpKeysError, warn

if TYPE_CHECKING:
    import psycopg

    from .postgres import PostgresStore

_BATCH = 1000


class PgAuditLog(TrailReader):
    """``audit_events`` of one store; appends never fail the operation behind them."""

    def __init__(self, store: PostgresStore) -> None:
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
                with conn.transaction():
                    row = conn.execute("SELECT audit_seq, audit_hash FROM store_state "
                                       "FOR UPDATE").fetchone()
                    assert row is not None
                    seq, prev = int(row[0]) + 1, str(row[1])
                    line = event_line(seq, prev, event, key_id=key_id, name=name,
                                      detail=detail, ts=ts)
                    self._insert(conn, seq, line)
        except Exception as exc:  # the change stands; say the trail missed it
            message = str(exc) if isinstance(exc, McpKeysError) else self.store.scrub(
                " ".join(str(exc).split()) or type(exc).__name__)
            warn("could not write audit log of %s: %s", self.store.display, message)
            return False
        return True

    @staticmethod
    def _insert(conn: psycopg.Connection[Any], seq: int, line: bytes) -> None:
        digest = line_hash(line)
        conn.execute("INSERT INTO audit_events (seq, line, hash) VALUES (%s, %s, %s)",
                     (seq, line.decode("ascii"), digest))
        conn.execute("UPDATE store_state SET audit_seq = %s, audit_hash = %s", (seq, digest))

    def append_lines(self, lines: list[bytes]) -> int:
        """Copy already-chained lines verbatim (``migrate``), in one transaction."""
        import json

        with self._lock:
            conn = self._connection()
            with conn.transaction():
                conn.execute("SELECT audit_seq FROM store_state FOR UPDATE")
                for line in lines:
                    self._insert(conn, int(json.loads(line)["seq"]), line)
        return len(lines)

    def lines(self) -> Iterator[tuple[str, int, bytes]]:
        """Every row in ``seq`` order, fetched in batches (never the whole trail at once)."""
        with self._lock:
            conn = self._connection()
        last = None
        number = 0
        while True:
            query = "SELECT seq, line FROM audit_events"
            params: tuple[Any, ...] = ()
            if last is not None:
                query += " WHERE seq > %s"
                params = (last,)
            with self._lock:
                rows = conn.execute(query + f" ORDER BY seq LIMIT {_BATCH}", params).fetchall()
            if not rows:
                return
            for seq, line in rows:
                number += 1
                yield "audit_events", number, str(line).encode("utf-8")
                last = seq

    def head(self) -> tuple[int, str] | None:
        with self._lock:
            row = self._connection().execute(
                "SELECT audit_seq, audit_hash FROM store_state").fetchone()
        if row is None or int(row[0]) == 0:
            return None
        return int(row[0]), str(row[1])
