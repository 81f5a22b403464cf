"""``mcp-keys migrate``: copy a store's records and audit history to another backend.

Records are copied in one transaction of the target; a record already there and equal is
skipped, a different record under the same ID stops everything before a row is written.
The audit history is copied line for line when the target's trail is empty (the chain is
preserved: ``audit verify`` on the target checks the source's history too), then a
``migrated`` event is appended that names the source and its last hash. A target whose
trail already holds other events is re-anchored instead: only the ``migrated`` event is
appended. Running it again changes nothing.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from .audit import AuditTrail
from .errors import InvalidState, UsageError
from .manager import KeyManager
from .stores import resolve_location


@dataclass(frozen=True, slots=True)
class MigrationReport:
    """What one migration did."""

    source: str
    target: str
    records: int
    copied: int
    already: int
    audit_events: int
    audit: str  # "preserved", "already migrated", "re-anchored"

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "target": self.target, "records": self.records,
                "copied": self.copied, "already": self.already,
                "audit_events": self.audit_events, "audit": self.audit}


def migrate(source: str | os.PathLike[str] | None, target: str) -> MigrationReport:
    """Copy every record and the audit history from ``source`` to ``target``."""
    src_location, dst_location = resolve_location(source), resolve_location(target)
    if os.path.abspath(src_location) == os.path.abspath(dst_location):
        raise UsageError("--from and --to name the same store")
    src = KeyManager(src_location)
    if not src.store.exists():
        raise InvalidState(f"no store at {src.store.display} to migrate from")
    records = src.store.read()
    dst = KeyManager(dst_location)  # created by the transaction below, without an init event
    copied = already = 0
    with dst.store.transaction(create=True) as txn:
        different = [key_id for key_id, key in records.items()
                     if (found := txn.keys.get(key_id)) is not None and found != key]
        if different:
            raise InvalidState(
                f"{dst.store.display} already holds different records for "
                f"{len(different)} ID(s) ({', '.join(sorted(different)[:5])}); nothing was "
                "copied")
        for key in records.all():
            if key.id in txn.keys:
                already += 1
            else:
                txn.keys[key.id] = key
                copied += 1
    events, mode = _copy_audit(src.audit, dst, src.store.display)
    return MigrationReport(source=src.store.display, target=dst.store.display,
                           records=len(records), copied=copied, already=already,
                           audit_events=events, audit=mode)


def _copy_audit(source: AuditTrail, dst: KeyManager, source_name: str) -> tuple[int, str]:
    head = source.head()
    last_hash = head[1] if head else None
    count = sum(1 for _ in source.lines())
    target = dst.audit
    marker = {"from": source_name, "source_last_hash": last_hash, "source_events": count}
    for item in target.matching(event="migrated"):
        if not isinstance(item, str) and item.detail.get("source_last_hash") == last_hash \
                and item.detail.get("from") == source_name:
            return count, "already migrated"
    if target.head() is None and not any(True for _ in target.lines()) and _chained(source):
        batch: list[bytes] = []
        for _, _, line in source.lines():
            batch.append(line)
            if len(batch) >= 1000:
                _append_lines(target, batch)
                batch = []
        if batch:
            _append_lines(target, batch)
        target.append("migrated", detail={**marker, "audit": "preserved"})
        return count, "preserved"
    target.append("migrated", detail={**marker, "audit": "re-anchored"})
    return count, "re-anchored"


def _chained(trail: AuditTrail) -> bool:
    """Every line carries a ``seq`` (a legacy prefix cannot be copied verbatim)."""
    for _, _, line in trail.lines():
        try:
            if "seq" not in json.loads(line):
                return False
        except ValueError:
            return False
    return True


def _append_lines(trail: AuditTrail, lines: list[bytes]) -> None:
    append = getattr(trail, "append_lines", None)
    if append is None:  # pragma: no cover - both trails have it
        raise InvalidState(f"{trail!r} cannot take copied lines")
    append(lines)
