"""``mcp-keys audit verify``: walk the whole hash chain, streaming, and name the first break.

A break is described by what explains it: a line whose hash no longer matches what the
next line recorded was **edited**; a gap in ``seq`` is a **deletion** (or, when the missing
line comes next, a **reordering**); a ``seq`` that goes back or repeats, or an unchained
line after the chain began, is an **insertion**; a log that ends before the ``seq``
recorded in ``audit.log.head`` lost its **tail**. Lines written before the chain existed
are accepted as a legacy prefix and counted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .audit import GENESIS, AuditTrail, line_hash


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome: ``ok``, how many events were checked, and the first problem if any."""

    ok: bool
    events: int
    legacy: int = 0
    first_seq: int | None = None
    broken_seq: int | None = None
    problem: str | None = None
    where: str | None = None
    anchored: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "events": self.events, "legacy": self.legacy,
                "first_seq": self.first_seq, "broken_seq": self.broken_seq,
                "problem": self.problem, "where": self.where, "anchored": self.anchored}

    def summary(self) -> str:
        if not self.ok:
            return f"BROKEN at seq {self.broken_seq}: {self.problem} ({self.where})"
        notes = []
        if self.legacy:
            notes.append(f"{self.legacy} legacy lines without a chain come first")
        if not self.anchored:
            notes.append(f"older files were rotated away; the chain starts at seq "
                         f"{self.first_seq}")
        return f"OK {self.events} events" + (f" ({'; '.join(notes)})" if notes else "")


class _Broken(Exception):
    def __init__(self, seq: int | None, problem: str, where: str) -> None:
        self.seq, self.problem, self.where = seq, problem, where


def verify(log: AuditTrail) -> Verdict:
    """Check every line of every file of ``log``, oldest first, in constant memory."""
    walk = _Walk()
    try:
        for path, number, line in log.lines():
            walk.step(path, number, line)
        walk.finish(log.head())
    except _Broken as broken:
        return Verdict(False, walk.events, walk.legacy, walk.first_seq, broken.seq,
                       broken.problem, broken.where, walk.anchored)
    return Verdict(True, walk.events, walk.legacy, walk.first_seq, anchored=walk.anchored)


class _Walk:
    def __init__(self) -> None:
        self.events = 0
        self.legacy = 0
        self.first_seq: int | None = None
        self.anchored = True
        self.prev_hash: str | None = None  # hash of the last line seen
        self.expected: int | None = None  # the seq the next chained line must carry
        self.gap: tuple[int, int, str] | None = None  # (expected, found, where) pending
        self.last_where = ""

    def step(self, source: str, number: int, line: bytes) -> None:
        where = f"{source} line {number}"
        if not line.strip():
            raise _Broken(self.expected, "an empty line was inserted", where)
        try:
            data = json.loads(line)
            if not isinstance(data, dict):
                raise ValueError
        except (ValueError, UnicodeDecodeError):
            raise _Broken(self.expected, "the line is not valid JSON (edited, or torn by a "
                          "crash)", where) from None
        seq, prev = data.get("seq"), data.get("prev")
        if seq is None and prev is None and "seq" not in data:
            if self.expected is not None:
                raise _Broken(self.expected, "a line without chain fields was inserted", where)
            self.legacy += 1
            self.events += 1
            self.prev_hash = line_hash(line)
            self.last_where = where
            return
        if type(seq) is not int or not isinstance(prev, str):
            raise _Broken(self.expected, "the chain fields were edited", where)
        self._check_order(seq, where)
        if self.gap is not None:
            pass  # a seq gap: the next line tells a deletion from a reordering
        elif self.expected is None:
            self.first_seq = seq
            if self.prev_hash is None and prev != GENESIS:
                self.anchored = False  # rotated-away history: this line is the anchor
            elif self.prev_hash is not None and prev != self.prev_hash:
                raise _Broken(seq, "the legacy line before the chain was edited", where)
        elif prev != self.prev_hash:
            raise _Broken(seq - 1, "the line was edited (its hash no longer matches the "
                          "one the next line recorded)", self.last_where)
        self.prev_hash = line_hash(line)
        self.expected = seq + 1
        self.events += 1
        self.last_where = where

    def _check_order(self, seq: int, where: str) -> None:
        if self.gap is not None:
            missing, found, gap_where = self.gap
            if seq == missing:
                raise _Broken(missing, f"lines were reordered (seq {found} comes before "
                              f"seq {missing})", gap_where)
            raise _Broken(missing, _deleted(missing, found), gap_where)
        if self.expected is None:
            return
        if seq > self.expected:
            self.gap = (self.expected, seq, where)
            # Decide on the next line: a reordering if the missing seq comes next.
            self.expected = seq
        elif seq < self.expected:
            raise _Broken(seq, f"a line was inserted (seq {seq} appears again after seq "
                          f"{self.expected - 1})", where)

    def finish(self, head: tuple[int, str] | None) -> None:
        if self.gap is not None:
            missing, found, gap_where = self.gap
            raise _Broken(missing, _deleted(missing, found), gap_where)
        last = None if self.expected is None else self.expected - 1
        if head is None:
            return
        head_seq, head_hash = head
        if last is None or head_seq > last:
            raise _Broken((last or 0) + 1, f"the tail was truncated (the log ends at seq "
                          f"{last or 0}, but seq {head_seq} was written)",
                          self.last_where or "end of log")
        if head_seq == last and head_hash != self.prev_hash:
            raise _Broken(last, "the last line was edited (its hash differs from the one "
                          "recorded in audit.log.head)", self.last_where)


def _deleted(missing: int, found: int) -> str:
    span = f"seq {missing}" if found == missing + 1 else f"seq {missing} to {found - 1}"
    return f"lines were deleted ({span} missing)"
