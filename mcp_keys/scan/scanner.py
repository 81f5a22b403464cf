"""Run the detectors over files; each finding shows where and what, never the value."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .configs import Candidate, candidates, read_text
from .detectors import classify, mcp_key_ids, preview


@dataclass(frozen=True, slots=True)
class Finding:
    """A hard-coded secret: where it is and what kind; ``candidate`` holds the value for
    ``--fix`` and is never printed."""

    file: Path
    line: int
    path: str
    kind: str
    preview: str
    server: str | None
    where: str
    key_id: str | None = None
    key_status: str | None = None  # for mcp-keys keys: active, revoked, expired, unknown
    commit: str | None = None
    candidate: Candidate | None = field(default=None, repr=False, compare=False)

    @property
    def advice(self) -> str:
        if self.kind == "mcp-keys-key" and self.key_status == "active":
            return f"revoke it: mcp-keys revoke {self.key_id}"
        if self.kind == "mcp-keys-key":
            return f"key {self.key_id} is {self.key_status} in the local store; remove it"
        return "move it into a secret source: mcp-keys scan --fix"

    def to_dict(self) -> dict[str, Any]:
        return {"file": str(self.file), "line": self.line, "path": self.path,
                "kind": self.kind, "preview": self.preview, "server": self.server,
                "key_id": self.key_id, "key_status": self.key_status,
                "commit": self.commit, "advice": self.advice}


def scan(paths: Iterable[Path], *, store: str | os.PathLike[str] | None = None) -> list[Finding]:
    """Every finding in ``paths`` (files), in file order."""
    findings: list[Finding] = []
    for path in paths:
        text = read_text(path)
        if text is None:
            continue
        findings += scan_text(path, text, store=store)
    return findings


def scan_text(path: Path, text: str, *, store: str | os.PathLike[str] | None = None,
              commit: str | None = None) -> list[Finding]:
    found = []
    for item in candidates(path, text):
        kind = classify(item.value, item.name)
        if kind is None:
            continue
        key_id = status = None
        if kind == "mcp-keys-key":
            key_id = mcp_key_ids(item.value)[0]
            status = _key_status(key_id, store)
        found.append(Finding(item.file, item.line, item.path, kind, preview(item.value),
                             item.server, item.where, key_id, status, commit, item))
    return found


def _key_status(key_id: str, store: str | os.PathLike[str] | None) -> str:
    from ..errors import McpKeysError
    from ..manager import KeyManager

    try:
        record = KeyManager(store).store.read().get(key_id)
    except McpKeysError:
        return "unknown"
    return "not in the local store" if record is None else record.status.value
