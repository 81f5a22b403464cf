"""How a Validator keeps its in-memory index of a PostgreSQL store current.

A daemon thread holds one connection that ``LISTEN``s on the store's channel. It loads
every record once, then applies each ``NOTIFY`` (the changed IDs) by fetching just those
rows. Every notification carries ``store_state.change_seq``: a gap, or a counter that moved
while the thread was away (checked each second and on every reconnect), means a full
reload, so no change is ever missed. If the connection drops, the thread reconnects with
exponential backoff and jitter; the validator keeps serving its last snapshot for at most
``max_stale`` seconds of lost contact, then refuses (``STORE_ERROR``) until it is back.
"""

from __future__ import annotations

import json
import random
import threading
import time
from typing import TYPE_CHECKING, Any, Protocol

from ..models import ApiKey
from .postgres import _COLUMNS, CHANNEL, PostgresStore, to_record

if TYPE_CHECKING:
    import psycopg

HEARTBEAT = 1.0
MAX_BACKOFF = 5.0


class Sink(Protocol):
    """What the watcher tells the validator."""

    def pg_snapshot(self, records: dict[str, ApiKey]) -> None: ...

    def pg_apply(self, upserts: list[ApiKey], deletes: list[str]) -> None: ...

    def pg_fail(self, message: str) -> None: ...


class PgWatcher:
    """The listening thread of one Validator."""

    def __init__(self, store: PostgresStore, sink: Sink, *, max_stale: float) -> None:
        self.store = store
        self.sink = sink
        self.max_stale = max_stale
        self.loaded = threading.Event()
        self._stop = threading.Event()
        self._seq = -1
        self._last_contact = time.monotonic()
        self._failed = False
        self._lookup_conn: psycopg.Connection[Any] | None = None
        self._lookup_lock = threading.Lock()
        self._apply_lock = threading.RLock()  # the thread and sync() both apply changes
        self._listen_conn: psycopg.Connection[Any] | None = None
        self._thread = threading.Thread(target=self._run, name="mcp-keys-pg-watch", daemon=True)

    def start(self, wait: float) -> None:
        """Start listening; wait up to ``wait`` seconds for the first snapshot."""
        self._thread.start()
        self.loaded.wait(wait)

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        """Stop the thread and close this watcher's connections."""
        self.stop()
        self._thread.join(5)
        with self._lookup_lock:
            if self._lookup_conn is not None:
                self._lookup_conn.close()
                self._lookup_conn = None

    # -- the thread ----------------------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            try:
                self._session()
                backoff = 0.1
            except Exception as exc:  # anything: count it as lost contact, and retry
                away = self._lost(
                    self.store.scrub(" ".join(str(exc).split()) or type(exc).__name__))
                wait = backoff * (0.5 + random.random())
                if not self._failed:  # wake in time to refuse once max_stale has passed
                    wait = min(wait, max(0.05, self.max_stale - away))
                self._stop.wait(wait)
                backoff = min(backoff * 2, MAX_BACKOFF)

    def _session(self) -> None:
        conn = self.store.connect(watch=True)
        self._listen_conn = conn
        try:
            conn.execute(f"LISTEN {CHANNEL}")
            self._reload(conn)
            next_beat = time.monotonic() + HEARTBEAT
            while not self._stop.is_set():
                # Collected first: the generator holds the connection while it waits.
                # stop_after=1: back as soon as one arrives (the rest are then waiting).
                notes = [n.payload for n in conn.notifies(timeout=0.25, stop_after=1)]
                for payload in notes:
                    self._apply(conn, payload)
                self._contact()
                if time.monotonic() >= next_beat:
                    row = conn.execute("SELECT change_seq FROM store_state").fetchone()
                    if row is not None and int(row[0]) != self._seq:
                        self._reload(conn)
                    next_beat = time.monotonic() + HEARTBEAT
        finally:
            self._listen_conn = None
            conn.close()

    def _reload(self, conn: psycopg.Connection[Any]) -> None:
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            self.store.ready(conn)  # a schema this release does not read fails closed
            row = conn.execute("SELECT change_seq FROM store_state").fetchone()
            rows = conn.execute(f"SELECT {_COLUMNS} FROM api_keys").fetchall()
        with self._apply_lock:
            seq = int(row[0]) if row else 0
            if seq < self._seq:
                return  # a newer state was applied meanwhile
            self._seq = seq
            self.sink.pg_snapshot({r[0]: to_record(r) for r in rows})
        self._contact()
        self.loaded.set()

    def _apply(self, conn: psycopg.Connection[Any], payload: str) -> None:
        try:
            note = json.loads(payload)
            seq, ids = int(note["seq"]), note.get("ids")
        except (ValueError, KeyError, TypeError):
            self._reload(conn)
            return
        if seq <= self._seq:
            return  # already part of a reload
        if seq != self._seq + 1 or not isinstance(ids, list):
            self._reload(conn)
            return
        rows = conn.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE id = ANY(%s)",
                            (ids,)).fetchall()
        found = {r[0]: to_record(r) for r in rows}
        with self._apply_lock:
            if seq != self._seq + 1:
                return  # sync() reloaded meanwhile
            self.sink.pg_apply(list(found.values()), [i for i in ids if i not in found])
            self._seq = seq

    def _contact(self) -> None:
        self._last_contact = time.monotonic()
        self._failed = False

    def _lost(self, reason: str) -> float:
        """Past ``max_stale`` of lost contact (or before any load), refuse; returns how long
        contact has been lost."""
        away = time.monotonic() - self._last_contact
        if not self._failed and (away >= self.max_stale or not self.loaded.is_set()):
            self._failed = True
            self.sink.pg_fail(f"lost contact with PostgreSQL store {self.store.display} "
                              f"for {away:.1f}s (max_stale {self.max_stale:g}s): {reason}")
        return away

    # -- lookups for keys the snapshot does not know yet ---------------------------------

    def sync(self) -> None:
        """Bring the snapshot up to the database's latest change now (a reload if the
        counter moved): what a validator with ``refresh_interval=0`` does per call."""
        with self._lookup_lock:
            conn = self._lookup()
            row = conn.execute("SELECT change_seq FROM store_state").fetchone()
            if row is not None and int(row[0]) != self._seq:
                self._reload(conn)

    def _lookup(self) -> psycopg.Connection[Any]:
        if self._lookup_conn is None or self._lookup_conn.closed or self._lookup_conn.broken:
            self._lookup_conn = self.store.connect(watch=True)  # bounded: a lookup never hangs
        return self._lookup_conn

    def lookup(self, key_id: str) -> ApiKey | None:
        """One record fetched now (a key created a moment ago on another host)."""
        with self._lookup_lock:
            row = self._lookup().execute(f"SELECT {_COLUMNS} FROM api_keys WHERE id = %s",
                                         (key_id,)).fetchone()
        return None if row is None else to_record(row)
