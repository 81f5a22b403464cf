"""Audit lines that never hold up a validation for long.

A validator of a PostgreSQL store writes its ``validation_failed`` lines on one daemon
thread, in order. The caller waits for its line at most ``AUDIT_WAIT`` (so, with a
healthy database, the line is there when ``validate`` returns); a stalled database
cannot hold a request longer. When ``QUEUE_SIZE`` lines are waiting, new ones are
dropped and counted, and the count is written before the next line.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .pg_audit import PgAuditLog

AUDIT_WAIT = 0.05
QUEUE_SIZE = 1000


@dataclass
class _Line:
    """One append to make, and whether it was made."""

    event: str
    fields: dict[str, Any]
    written: threading.Event = field(default_factory=threading.Event)


class DeferredTrail:
    """``PgAuditLog.append`` on a writer thread; everything else passes through."""

    def __init__(self, trail: PgAuditLog) -> None:
        self.trail = trail
        self._fresh()

    def _fresh(self) -> None:
        self._queue: queue.Queue[_Line | None] = queue.Queue(QUEUE_SIZE)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._dropped = 0

    def append(self, event: str, *, key_id: str | None = None, name: str | None = None,
               detail: dict[str, Any] | None = None) -> bool:
        """Queue the line; ``True`` when it was written within ``AUDIT_WAIT``."""
        line = _Line(event, {"key_id": key_id, "name": name, "detail": detail})
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._write, args=(self._queue,),
                                                name="mcp-keys-audit", daemon=True)
                self._thread.start()
            try:
                self._queue.put_nowait(line)
            except queue.Full:
                self._dropped += 1
                return False
        return line.written.wait(AUDIT_WAIT)

    def _write(self, lines: queue.Queue[_Line | None]) -> None:
        while (line := lines.get()) is not None:
            with self._lock:
                dropped, self._dropped = self._dropped, 0
            if dropped:
                self.trail.append("validation_failed", detail={"dropped": dropped})
            self.trail.append(line.event, **line.fields)
            line.written.set()

    def abandon_connections(self, keep: list[object]) -> None:
        """After a fork: the parent's thread is not here; start afresh."""
        self.trail.abandon_connections(keep)
        self._fresh()

    def close(self) -> None:
        """Stop the writer once the lines before this one are written."""
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        self.trail.close()
