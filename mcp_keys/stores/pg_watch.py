"""How a Validator keeps its in-memory index of a PostgreSQL store current.

A daemon thread holds one connection that ``LISTEN``s on the store's channel. It loads
every record once, then catches up with the table ``key_changes`` (the change counter
and the IDs each write changed, which only writers can modify) whenever a notification
wakes it and on a heartbeat (every ``HEARTBEAT``). A notification is only a wake-up: any
role that can connect may ``NOTIFY``, so its payload is never believed (a malformed one
is logged and ignored). A gap in the changes, or a counter that went back, means a full
reload, and a reload always installs the database's state.

Every query has a client-side deadline (``pg_deadline``). Contact is proven only by an
answer: the validator refuses (``STORE_ERROR``) once the last answer is older than
``max_stale`` plus ``LOST_AFTER``, checked when validating, so a thread stuck on a
silent server cannot keep a revoked key valid. If the connection drops, the thread
reconnects with exponential backoff and jitter, and reloads everything.

A key the snapshot does not know is looked up on a short-lived thread: the caller waits
at most ``LOOKUP_BOUND`` for it, whatever the database does.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ..models import ApiKey
from .postgres import _COLUMNS, CHANGE_SEQ, CHANNEL, PostgresStore, to_record

if TYPE_CHECKING:
    from collections.abc import Callable

    import psycopg

T = TypeVar("T")
log = logging.getLogger("mcp_keys")
POLL = 0.25  # how long one wait for a notification lasts
HEARTBEAT = 0.25  # the counter is read at least this often (an index lookup)
LOST_AFTER = 1.0  # no answer for this long is lost contact (four heartbeats)
WATCH_DEADLINE = 5.0  # seconds the listening connection waits for any answer
LOOKUP_DEADLINE = 2.0  # ... and the look-up connection
LOOKUP_BOUND = 0.2  # seconds a caller waits for a look-up (with the audit line: 0.25)
MAX_LOOKUPS = 4  # look-ups still waiting for the database before new ones are refused
MAX_BACKOFF = 5.0
MALFORMED_LOG_INTERVAL = 60.0


def _now() -> float:
    """The monotonic clock, read so that a test's frozen clock (freezegun patches
    ``time.monotonic`` for some threads only) cannot make contact look lost."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


class Sink(Protocol):
    """What the watcher tells the validator."""

    def pg_snapshot(self, records: dict[str, ApiKey]) -> None: ...

    def pg_apply(self, upserts: list[ApiKey], deletes: list[str]) -> None: ...

    def pg_fail(self, message: str) -> None: ...

    def pg_contact(self, fresh_for: float) -> None: ...


def well_formed(payload: str) -> bool:
    """What writers send: ``{"seq": N}`` with a whole N > 0 (informative only)."""
    try:
        note = json.loads(payload)
    except ValueError:
        return False
    seq = note.get("seq") if isinstance(note, dict) else None
    return type(seq) is int and seq > 0


class PgWatcher:
    """The listening thread of one Validator."""

    def __init__(self, store: PostgresStore, sink: Sink, *, max_stale: float) -> None:
        self.store = store
        self.sink = sink
        self.max_stale = max_stale
        self.loaded = threading.Event()
        self._stop = threading.Event()
        self._seq = -1
        self._last_contact = _now()
        self._failed = False
        self._lookup_conn: psycopg.Connection[Any] | None = None
        self._lookup_lock = threading.Lock()
        self._apply_lock = threading.RLock()  # the thread and sync() both apply changes
        self._flights = 0  # look-ups under way
        self._flights_lock = threading.Lock()
        self._malformed = 0
        self._malformed_logged = float("-inf")
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
        self._thread.join(WATCH_DEADLINE + 1)
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
                    self.store.scrub(" ".join(str(exc).split()) or type(exc).__name__),
                    self.max_stale)
                wait = backoff * (0.5 + random.random())
                if not self._failed:  # wake in time to refuse once max_stale has passed
                    wait = min(wait, max(0.05, self.max_stale - away))
                self._stop.wait(wait)
                backoff = min(backoff * 2, MAX_BACKOFF)

    def _session(self) -> None:
        conn = self.store.connect(watch=True, deadline=WATCH_DEADLINE)
        try:
            conn.execute(f"LISTEN {CHANNEL}")
            self._reload(conn)
            next_beat = _now() + HEARTBEAT
            while not self._stop.is_set():
                # Collected first: the generator holds the connection while it waits.
                # stop_after=1: back as soon as one arrives; then take what else is queued.
                notes = [n.payload for n in conn.notifies(timeout=POLL, stop_after=1)]
                if notes:
                    notes += [n.payload for n in conn.notifies(timeout=0)]
                woken = self._woken(notes)
                if woken or self._failed or _now() >= next_beat:
                    self._catch_up(conn)
                    next_beat = _now() + HEARTBEAT
        finally:
            conn.close()

    def _woken(self, payloads: list[str]) -> bool:
        """Whether any notification asks for a read; malformed ones (which no writer
        sends) are ignored and logged, at most once a minute with a count."""
        woken = False
        for payload in payloads:
            if well_formed(payload):
                woken = True
            else:
                self._malformed += 1
        now = _now()
        if self._malformed and now - self._malformed_logged >= MALFORMED_LOG_INTERVAL:
            log.warning("mcp-keys ignored %d malformed notification(s) on channel %r of %s: "
                        "a role that can connect sent them (notifications are only a wake-up)",
                        self._malformed, CHANNEL, self.store.display)
            self._malformed, self._malformed_logged = 0, now
        return woken

    def _reload(self, conn: psycopg.Connection[Any]) -> None:
        """Install the database's state, whatever this watcher believed before."""
        with self._apply_lock:
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                self.store.ready(conn)  # a schema this release does not read fails closed
                row = conn.execute(CHANGE_SEQ).fetchone()
                rows = conn.execute(f"SELECT {_COLUMNS} FROM api_keys").fetchall()
            self._seq = int(row[0]) if row else 0
            self.sink.pg_snapshot({r[0]: to_record(r) for r in rows})
            self._failed = False
        self._contact()
        self.loaded.set()

    def _catch_up(self, conn: psycopg.Connection[Any]) -> None:
        """Read the counter; apply the changes since ours, or reload when they cannot be
        applied one by one (a gap, "everything", a counter that went back, a failure)."""
        with self._apply_lock:
            row = conn.execute(CHANGE_SEQ).fetchone()
            seq = int(row[0]) if row else 0
            if self._failed or seq < self._seq:
                self._reload(conn)
                return
            if seq > self._seq:
                changes = conn.execute("SELECT seq, ids FROM key_changes WHERE seq > %s AND "
                                       "seq <= %s ORDER BY seq", (self._seq, seq)).fetchall()
                numbers = [int(c[0]) for c in changes]
                if (numbers != list(range(self._seq + 1, seq + 1))
                        or any(c[1] is None for c in changes)):
                    self._reload(conn)
                    return
                ids = sorted({i for c in changes for i in c[1]})
                rows = conn.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE id = ANY(%s)",
                                    (ids,)).fetchall()
                found = {r[0]: to_record(r) for r in rows}
                self.sink.pg_apply(list(found.values()), [i for i in ids if i not in found])
                self._seq = seq
        self._contact()

    def _contact(self) -> None:
        """The database answered: contact is proven now, and stays so for ``max_stale``
        plus ``LOST_AFTER`` (until when validations need not ask ``check_fresh``)."""
        self._last_contact = _now()
        self.sink.pg_contact(self.max_stale + LOST_AFTER)

    def _lost(self, reason: str, allowed: float) -> float:
        """Past ``allowed`` seconds without an answer (or before any load), refuse;
        returns how long contact has been lost."""
        away = _now() - self._last_contact
        if not self._failed and (away >= allowed or not self.loaded.is_set()):
            self._failed = True
            self.sink.pg_fail(f"lost contact with PostgreSQL store {self.store.display} "
                              f"for {away:.1f}s (max_stale {self.max_stale:g}s): {reason}")
        return away

    def check_fresh(self) -> None:
        """Called when validating: no answer for ``max_stale`` (plus ``LOST_AFTER`` for a
        heartbeat to be late) refuses, even while the thread is stuck waiting."""
        if _now() - self._last_contact > self.max_stale + LOST_AFTER:
            self._lost("the database stopped answering", self.max_stale + LOST_AFTER)

    # -- lookups for keys the snapshot does not know yet ---------------------------------

    def bounded(self, work: Callable[[], T], bound: float = LOOKUP_BOUND) -> T:
        """``work()`` on its own daemon thread; the caller waits at most ``bound`` seconds
        (``TimeoutError`` then, and the work finishes or fails within its deadline)."""
        with self._flights_lock:
            if self._flights >= MAX_LOOKUPS:
                raise TimeoutError("earlier look-ups are still waiting for the database")
            self._flights += 1
        future: Future[T] = Future()

        def run() -> None:
            try:
                future.set_result(work())
            except BaseException as exc:  # handed to the caller, if it still waits
                future.set_exception(exc)
            finally:
                with self._flights_lock:
                    self._flights -= 1

        threading.Thread(target=run, name="mcp-keys-pg-lookup", daemon=True).start()
        return future.result(timeout=bound)

    def sync(self) -> None:
        """Bring the snapshot up to the database's latest change now: what a validator
        with ``refresh_interval=0`` does per call (waiting at most ``LOOKUP_BOUND``)."""
        self.bounded(self._sync)

    def _sync(self) -> None:
        with self._lookup_lock:
            self._catch_up(self._lookup())

    def _lookup(self) -> psycopg.Connection[Any]:
        if self._lookup_conn is None or self._lookup_conn.closed or self._lookup_conn.broken:
            self._lookup_conn = self.store.connect(watch=True, deadline=LOOKUP_DEADLINE)
        return self._lookup_conn

    def lookup(self, key_id: str) -> ApiKey | None:
        """One record fetched now (a key created a moment ago on another host), waiting
        at most ``LOOKUP_BOUND``."""
        return self.bounded(lambda: self._fetch(key_id))

    def _fetch(self, key_id: str) -> ApiKey | None:
        with self._lookup_lock:
            row = self._lookup().execute(f"SELECT {_COLUMNS} FROM api_keys WHERE id = %s",
                                         (key_id,)).fetchone()
        return None if row is None else to_record(row)
