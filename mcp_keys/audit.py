"""The audit trail: one hash-chained JSON line per event beside the store, size-bounded.

Each line carries ``seq`` and ``prev`` (the SHA-256 of the previous line's bytes; the
first line of a new trail chains to ``GENESIS``), so an edit, a deletion, an insertion or
a reordering breaks the chain (``audit_verify`` finds where). Appends hold an ``flock`` on
the log itself, so concurrent CLI processes and validators still make one linear chain.
At ``max_bytes`` the log rotates (``audit.log.1`` is the newest old file, ``keep`` of them
kept) and the new file's first line chains to the old file's last. ``audit.log.head``
records the newest ``seq`` and hash, which is how a cut-off tail is noticed. No line ever
holds a key or a digest.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import stat
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from .actor import current_actor
from .errors import UsageError, warn
from .models import from_iso, to_iso, utcnow

GENESIS = "0" * 64
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_KEEP = 5
_TAIL_CHUNK = 8192
_OPEN = os.O_NOFOLLOW | os.O_CLOEXEC

# Every event any writer records, and so every value ``audit --event`` accepts: the one
# list both read (``event_line`` refuses a name missing here).
EVENTS = (
    "init",
    "create",
    "revoke",
    "delete",
    "rotate",
    "expire",
    "purge",
    "env_sync",
    "require",
    "validation_failed",
    "migrated",
    "migrate_schema",
    "gateway_call",
    "gateway_exec",
    "proxy_blocked",
)


def line_hash(line: bytes) -> str:
    """The chain hash of one line (its bytes without the newline)."""
    import hashlib  # deferred: read-only commands never hash

    return hashlib.sha256(line).hexdigest()


def _setting(name: str, default: int, minimum: int) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise UsageError(f"{name}={text!r} must be a whole number of at least {minimum}")
    return value


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One line of the audit log."""

    ts: datetime
    event: str
    key_id: str | None = None
    name: str | None = None
    actor: str = ""
    detail: dict[str, Any] = field(default_factory=dict)
    seq: int | None = None
    prev: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "prev": self.prev,
            "ts": to_iso(self.ts),
            "event": self.event,
            "key_id": self.key_id,
            "name": self.name,
            "actor": self.actor,
            "detail": self.detail,
        }

    def concerns(self, key_id: str) -> bool:
        """Whether this event is about the key with this ID (or prefix); a rotation
        concerns both the new key and the one it replaced."""
        ids = (self.key_id, self.detail.get("rotated_from"))
        return any(isinstance(i, str) and i.startswith(key_id) for i in ids)

    @classmethod
    def from_dict(cls, data: Any) -> AuditEvent:
        if not isinstance(data, dict) or not isinstance(data.get("event"), str):
            raise ValueError("not an audit event")
        ts = from_iso(data.get("ts"))
        if ts is None:
            raise ValueError("no timestamp")
        detail = data.get("detail") or {}
        if not isinstance(detail, dict):
            raise ValueError("detail is not an object")
        seq, prev = data.get("seq"), data.get("prev")
        if seq is not None and (type(seq) is not int or not isinstance(prev, str)):
            raise ValueError("malformed chain fields")
        return cls(
            ts=ts,
            event=data["event"],
            key_id=data.get("key_id") if isinstance(data.get("key_id"), str) else None,
            name=data.get("name") if isinstance(data.get("name"), str) else None,
            actor=str(data.get("actor", "")),
            detail=detail,
            seq=seq,
            prev=prev,
        )


class AuditTrail(Protocol):
    """What KeyManager, the validator, ``audit`` and ``audit verify`` need of a trail: the
    file log below, or the ``audit_events`` table of a PostgreSQL store."""

    def append(self, event: str, *, key_id: str | None = None, name: str | None = None,
               detail: dict[str, Any] | None = None, ts: datetime | None = None) -> bool: ...

    def lines(self) -> Iterator[tuple[str, int, bytes]]: ...

    def head(self) -> tuple[int, str] | None: ...

    def matching(self, *, key_id: str | None = None, event: str | None = None,
                 since: datetime | None = None) -> Iterator[AuditEvent | str]: ...

    def read(self, *, key_id: str | None = None, event: str | None = None,
             since: datetime | None = None, limit: int | None = None) -> AuditReading: ...


@dataclass(frozen=True, slots=True)
class AuditReading:
    """The events that parsed, and a message for each damaged line skipped."""

    events: list[AuditEvent]
    damaged: list[str]


def event_line(seq: int, prev: str, event: str, *, key_id: str | None, name: str | None,
               detail: dict[str, Any] | None, ts: datetime | None) -> bytes:
    """The bytes of one chained audit line (no newline), the same for every backend; an
    event not in ``EVENTS`` is a bug, refused so the reader's filter can always find it."""
    if event not in EVENTS:
        raise ValueError(f"audit event {event!r} is not in mcp_keys.audit.EVENTS")
    return json.dumps({"seq": seq, "prev": prev, "ts": to_iso(ts or utcnow()), "event": event,
                       "key_id": key_id, "name": name, "actor": current_actor(),
                       "detail": detail or {}}, ensure_ascii=True).encode("ascii")


class TrailReader:
    """Reading a trail, built on its ``lines()``: parse, filter, keep the newest N."""

    def lines(self) -> Iterator[tuple[str, int, bytes]]:
        raise NotImplementedError

    def events(self) -> Iterator[AuditEvent | str]:
        """Each event, or a message for each damaged line, oldest first."""
        for path, number, line in self.lines():
            if not line.strip():
                continue
            try:
                yield AuditEvent.from_dict(json.loads(line))
            except (ValueError, UnicodeDecodeError):
                yield f"audit log {path} line {number} is damaged; skipped"

    def matching(self, *, key_id: str | None = None, event: str | None = None,
                 since: datetime | None = None) -> Iterator[AuditEvent | str]:
        """The events that match every filter given, and damaged-line messages, streamed."""
        for item in self.events():
            if isinstance(item, str) or not (
                    (key_id is not None and not item.concerns(key_id))
                    or (event is not None and item.event != event)
                    or (since is not None and item.ts < since)):
                yield item

    def read(
        self,
        *,
        key_id: str | None = None,
        event: str | None = None,
        since: datetime | None = None,
        limit: int | None = None,
    ) -> AuditReading:
        """Matching events oldest first (the newest ``limit`` of them, holding no more than
        that in memory), skipping damaged lines."""
        if limit is not None and limit <= 0:
            return AuditReading([], [])
        events: deque[AuditEvent] = deque(maxlen=limit)
        damaged: list[str] = []
        for item in self.matching(key_id=key_id, event=event, since=since):
            if isinstance(item, str):
                damaged.append(item)
            else:
                events.append(item)
        return AuditReading(list(events), damaged)


class AuditLog(TrailReader):
    """The audit log and its rotated files; appends never fail the operation behind them."""

    def __init__(self, path: str | os.PathLike[str], *, max_bytes: int | None = None,
                 keep: int | None = None) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes if max_bytes is not None else _setting(
            "MCP_KEYS_AUDIT_MAX_BYTES", DEFAULT_MAX_BYTES, 1024)
        self.keep = keep if keep is not None else _setting("MCP_KEYS_AUDIT_KEEP", DEFAULT_KEEP, 1)

    def __repr__(self) -> str:
        return f"AuditLog({str(self.path)!r})"

    @property
    def head_path(self) -> Path:
        return self.path.with_name(self.path.name + ".head")

    def files(self) -> list[Path]:
        """The log's files, oldest first (rotated ones, then the current one)."""
        old = [self.path.with_name(f"{self.path.name}.{n}") for n in range(self.keep, 0, -1)]
        return [p for p in old if p.exists()] + [self.path]

    # -- writing -------------------------------------------------------------------------

    def append(
        self,
        event: str,
        *,
        key_id: str | None = None,
        name: str | None = None,
        detail: dict[str, Any] | None = None,
        ts: datetime | None = None,
    ) -> bool:
        """Append one chained event; on an I/O error warn and return ``False`` (the change
        it records stands)."""
        try:
            with self._locked() as fd:
                seq, prev = self._last(fd)
                data = event_line(seq + 1, prev, event, key_id=key_id, name=name,
                                  detail=detail, ts=ts)
                os.write(fd, data + b"\n")
                self._write_head(seq + 1, line_hash(data))
        except OSError as exc:
            warn("could not write audit log %s: %s", self.path,
                 exc.strerror or type(exc).__name__)
            return False
        return True

    def append_lines(self, lines: list[bytes]) -> int:
        """Copy already-chained lines verbatim (``migrate``), under the lock."""
        if not lines:
            return 0
        with self._locked() as fd:
            os.write(fd, b"".join(line + b"\n" for line in lines))
            last = json.loads(lines[-1])
            self._write_head(int(last["seq"]), line_hash(lines[-1]))
        return len(lines)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[int]:
        """The current log file, open for appending and exclusively locked; rotated first
        when full. A writer that locked a file someone else just rotated away retries."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | _OPEN, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                held = os.fstat(fd)
                try:
                    now = os.stat(self.path, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if (held.st_dev, held.st_ino) != (now.st_dev, now.st_ino):
                    continue
                if not stat.S_ISREG(held.st_mode):
                    raise OSError(errno.EINVAL, "not a regular file")
                if held.st_size >= self.max_bytes > 0 and held.st_size > 0:
                    self._rotate()
                    continue
                yield fd
                return
            finally:
                os.close(fd)

    def _rotate(self) -> None:
        """Under the lock of the full file: shift ``.N`` names up, the oldest dropped."""
        name = self.path.name
        oldest = self.path.with_name(f"{name}.{self.keep}")
        with contextlib.suppress(FileNotFoundError):
            oldest.unlink()
        for n in range(self.keep - 1, 0, -1):
            with contextlib.suppress(FileNotFoundError):
                os.rename(self.path.with_name(f"{name}.{n}"),
                          self.path.with_name(f"{name}.{n + 1}"))
        os.rename(self.path, self.path.with_name(f"{name}.1"))

    def _last(self, fd: int) -> tuple[int, str]:
        """The ``seq`` and hash that the next line chains to."""
        size = os.fstat(fd).st_size
        if size == 0:
            head = self.head()
            return head if head is not None else (0, GENESIS)
        line = _last_line(fd, size)
        if not line.endswith(b"\n"):
            os.write(fd, b"\n")  # a torn line from a crash: keep it (verify reports it)
        line = line.rstrip(b"\n")
        try:
            seq = json.loads(line).get("seq")
        except (ValueError, AttributeError, UnicodeDecodeError):
            seq = None
        if type(seq) is not int:
            head = self.head()
            seq = head[0] if head is not None else 0
        return seq, line_hash(line)

    def _write_head(self, seq: int, digest: str) -> None:
        data = json.dumps({"seq": seq, "hash": digest}).encode() + b"\n"
        fd = os.open(self.head_path, os.O_WRONLY | os.O_CREAT | _OPEN, 0o600)
        try:
            os.pwrite(fd, data, 0)
            os.ftruncate(fd, len(data))
        finally:
            os.close(fd)

    def head(self) -> tuple[int, str] | None:
        """The newest ``(seq, hash)`` recorded beside the log, if any."""
        try:
            fd = os.open(self.head_path, os.O_RDONLY | os.O_NONBLOCK | _OPEN)
        except FileNotFoundError:
            return None
        try:
            data = json.loads(os.read(fd, 256))
            seq, digest = data["seq"], data["hash"]
            if type(seq) is int and isinstance(digest, str):
                return seq, digest
            return None
        except (ValueError, KeyError, TypeError, OSError):
            return None
        finally:
            os.close(fd)

    def lines(self) -> Iterator[tuple[str, int, bytes]]:
        """Every line of every file, oldest first, streamed: ``(file name, number, bytes)``
        with the newline removed (a final line without one keeps its bytes as they are)."""
        for path in self.files():
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | _OPEN)
            except FileNotFoundError:
                continue
            with os.fdopen(fd, "rb") as handle:
                for number, raw in enumerate(handle, start=1):
                    yield path.name, number, raw[:-1] if raw.endswith(b"\n") else raw


def _last_line(fd: int, size: int) -> bytes:
    """The file's last line (with its newline, if it has one), read backwards."""
    end = size
    tail = b""
    while end > 0:
        start = max(0, end - _TAIL_CHUNK)
        tail = os.pread(fd, end - start, start) + tail
        end = start
        cut = tail.rfind(b"\n", 0, len(tail) - 1)
        if cut >= 0:
            return tail[cut + 1:]
    return tail
