"""The append-only audit trail: one JSON line per event beside the store.

Each line is written by a single ``write`` on an ``O_APPEND`` descriptor, so concurrent
writers never interleave within a line. No line ever holds a key or a digest.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .errors import warn
from .models import from_iso, to_iso, utcnow

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
)


def current_actor() -> str:
    """The OS user, with ``MCP_KEYS_ACTOR`` in front when automation sets it."""
    import getpass

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid:{os.getuid()}"
    automation = os.environ.get("MCP_KEYS_ACTOR", "").strip()
    return f"{automation} ({user})" if automation else user


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One line of the audit log."""

    ts: datetime
    event: str
    key_id: str | None = None
    name: str | None = None
    actor: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
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
        return cls(
            ts=ts,
            event=data["event"],
            key_id=data.get("key_id"),
            name=data.get("name"),
            actor=str(data.get("actor", "")),
            detail=detail,
        )


@dataclass(frozen=True, slots=True)
class AuditReading:
    """The events that parsed, and a message for each damaged line skipped."""

    events: list[AuditEvent]
    damaged: list[str]


class AuditLog:
    """The audit log file; appends never fail the operation that caused them."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"AuditLog({str(self.path)!r})"

    def append(
        self,
        event: str,
        *,
        key_id: str | None = None,
        name: str | None = None,
        detail: dict[str, Any] | None = None,
        ts: datetime | None = None,
    ) -> bool:
        """Append one event; on an I/O error warn and return ``False`` (the change stands)."""
        record = AuditEvent(
            ts=ts or utcnow(),
            event=event,
            key_id=key_id,
            name=name,
            actor=current_actor(),
            detail=detail or {},
        )
        line = (json.dumps(record.to_dict(), ensure_ascii=True) + "\n").encode("ascii")
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
        except OSError as exc:
            warn("could not write audit log %s: %s", self.path, exc.strerror)
            return False
        return True

    def read(
        self,
        *,
        key_id: str | None = None,
        event: str | None = None,
        since: datetime | None = None,
        limit: int | None = None,
    ) -> AuditReading:
        """Events oldest first (the newest ``limit`` of them), skipping damaged lines."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return AuditReading([], [])
        events: list[AuditEvent] = []
        damaged: list[str] = []
        for number, line in enumerate(raw.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                item = AuditEvent.from_dict(json.loads(line))
            except (ValueError, UnicodeDecodeError):
                damaged.append(f"audit log {self.path} line {number} is damaged; skipped")
                continue
            if key_id is not None and not item.concerns(key_id):
                continue
            if event is not None and item.event != event:
                continue
            if since is not None and item.ts < since:
                continue
            events.append(item)
        if limit is not None:
            events = events[-limit:] if limit > 0 else []
        return AuditReading(events, damaged)
