"""Run the detectors over files; each finding shows where and what, never the value.

An mcp-keys key is looked up in the local store: an active one is a leak to revoke, a
revoked or expired one is litter, one the store does not hold (or with no store at all)
must be revoked where it was issued. An active key in the ``.env`` file that ``mcp-keys
create --env-file`` wrote it to (the audit log says so) is where it is meant to be: a
finding at ``note`` level, not a leak.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from .configs import Candidate, candidates, read_text, worth_scanning
from .detectors import classify, mcp_key_ids, preview
from .record import Record
from .strings import locate

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: the scan path does not import typing
if TYPE_CHECKING:
    from typing import Any

NOTE = "note"
ERROR = "error"
# Kinds that rest on a name or a shape, not on a key format: in a file that is neither a
# config nor a .env by name (source code, notes), only key formats count.
CONTEXTUAL_KINDS = frozenset({"generic-secret", "generic-bearer", "url-password", "url-secret",
                              "basic-auth", "aws-secret-access-key"})


class Finding(Record):
    """A hard-coded secret: where it is and what kind; ``candidate`` holds the value for
    ``--fix`` and is never printed. ``level`` is ``error`` (a leak) or ``note`` (a key
    where mcp-keys itself put it). ``key_status``: active revoked expired not-in-store
    no-store unknown."""

    _fields = ("file", "line", "path", "kind", "preview", "server", "where", "key_id",
               "key_status", "commit", "candidate", "level")
    __slots__ = _fields
    _unshown = frozenset({"candidate"})
    _uncompared = frozenset({"candidate"})
    file: Path
    line: int
    path: str
    kind: str
    preview: str
    server: str | None
    where: str
    key_id: str | None
    key_status: str | None
    commit: str | None
    candidate: Candidate | None
    level: str

    def __init__(self, file: Path, line: int, path: str, kind: str, preview: str,
                 server: str | None, where: str, key_id: str | None = None,
                 key_status: str | None = None, commit: str | None = None,
                 candidate: Candidate | None = None, level: str = ERROR) -> None:
        self._set(file=file, line=line, path=path, kind=kind, preview=preview,
                  server=server, where=where, key_id=key_id, key_status=key_status,
                  commit=commit, candidate=candidate, level=level)

    @property
    def advice(self) -> str:
        key, status = self.key_id, self.key_status
        if self.kind != "mcp-keys-key":
            return "move it into a secret source: mcp-keys scan --fix"
        if self.level == NOTE:
            return (f"key {key} is where 'mcp-keys create --env-file' wrote it; "
                    "expected here, keep this file git-ignored")
        if status == "active":
            return f"revoke it: mcp-keys revoke {key}"
        if status in ("revoked", "expired"):
            return f"key {key} is {status} in the local store; remove it"
        if status == "not-in-store":
            return f"key {key} is not in the local store; revoke it where it was issued"
        if status == "no-store":
            return f"no local store found; revoke key {key} where it was issued"
        return f"the local store could not be read; revoke key {key} where it was issued"

    def to_dict(self) -> dict[str, Any]:
        return {"file": str(self.file), "line": self.line, "path": self.path,
                "kind": self.kind, "preview": self.preview, "server": self.server,
                "key_id": self.key_id, "key_status": self.key_status,
                "commit": self.commit, "level": self.level, "advice": self.advice}


def scan(paths: Iterable[Path], *, store: str | os.PathLike[str] | None = None) -> list[Finding]:
    """Every finding in ``paths`` (files), in file order."""
    findings: list[Finding] = []
    local = LocalStore(store)
    for path in paths:
        text = read_text(path)
        if text is None or ("\0" in text[:8000] and not text.startswith("\ufeff")):
            continue  # unreadable, or binary (a .json.gz)
        findings += scan_text(path, text, store=local)
    return findings


def scan_text(path: Path, text: str, *,
              store: LocalStore | str | os.PathLike[str] | None = None,
              commit: str | None = None) -> list[Finding]:
    """The findings in one file's text."""
    local = store if isinstance(store, LocalStore) else LocalStore(store)
    named = worth_scanning(path, sniff=False)
    found = []
    for item in candidates(path, text):
        kind = classify(item.value, item.name)
        if kind is None:
            continue
        if not named and item.where in ("dotenv", "comment", "text") \
                and kind in CONTEXTUAL_KINDS:
            continue  # "name = random text" in source code (key.txt, tokens.py) is code
        item = locate(item, text)
        key_id = status = None
        level = ERROR
        if kind == "mcp-keys-key":
            key_id = mcp_key_ids(item.value)[0]
            status = local.status(key_id)
            if status == "active" and commit is None and item.where == "dotenv" \
                    and local.wrote_env(key_id, path):
                level = NOTE
        elif item.where == "text":
            continue  # a bare word in a file that is no config: only keys of ours count
        found.append(Finding(item.file, item.line, item.path, kind, preview(item.value),
                             item.server, item.where, key_id, status, commit, item, level))
    return found


class LocalStore:
    """The store ``scan`` checks mcp-keys keys against, read once per scan."""

    def __init__(self, store: str | os.PathLike[str] | None) -> None:
        self.location = store
        self._records: dict[str, str] | None = None
        self._state = ""  # "", "ok", "no-store", "unknown"
        self._env: set[tuple[str, Path]] | None = None

    def _load(self) -> None:
        from ..errors import McpKeysError
        from ..manager import KeyManager
        from ..stores.jsonfile import JsonStore

        try:
            manager = KeyManager(self.location)
            if isinstance(manager.store, JsonStore) and not manager.store.exists():
                self._state, self._records = "no-store", {}
                return
            records = manager.store.read()
            self._records = {key_id: record.status.value for key_id, record in records.items()}
            self._state = "ok"
            self._manager = manager
        except (McpKeysError, OSError):
            self._state, self._records = "unknown", {}

    def status(self, key_id: str) -> str:
        """``active``, ``revoked``, ``expired``, ``not-in-store``, ``no-store`` or
        ``unknown`` (the store could not be read)."""
        if self._records is None:
            self._load()
        assert self._records is not None
        if self._state != "ok":
            return self._state
        return self._records.get(key_id, "not-in-store")

    def wrote_env(self, key_id: str, path: Path) -> bool:
        """Whether the audit log says ``create``/``rotate --env-file`` wrote ``key_id`` to
        the file at ``path`` (a relative name is read from the current folder or the
        store's project folder)."""
        if self._env is None:
            self._env = self._env_files()
        try:
            target = path.resolve()
        except OSError:
            return False
        return (key_id, target) in self._env

    def _env_files(self) -> set[tuple[str, Path]]:
        from ..errors import McpKeysError
        from ..stores.jsonfile import JsonStore

        if self.status("") != "not-in-store":
            return set()  # no readable store
        found: set[tuple[str, Path]] = set()
        store = self._manager.store
        roots = [Path.cwd()]
        if isinstance(store, JsonStore):
            roots += [store.directory.parent, store.directory]
        try:
            for event in self._manager.audit.matching(event="env_sync"):
                if isinstance(event, str) or event.key_id is None:
                    continue
                name = Path(str(event.detail.get("env_file", "")))
                for root in roots:
                    found.add((event.key_id, (root / name).resolve()))
        except (McpKeysError, OSError):
            return set()
        return found
