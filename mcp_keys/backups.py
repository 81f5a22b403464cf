"""Backups of the files mcp-keys rewrites, kept out of the project and without secrets.

A backup goes to a per-user directory (``$XDG_STATE_HOME/mcp-keys/backups``, by default
``~/.local/state/mcp-keys/backups``), mode 0700, that must be a real directory owned by
the caller: a copy beside the config would be committed, synced and scanned with it.
Each backup is a new 0600 file (never a link followed or a file overwritten) named after
the config it came from and the time. The values the rewrite moved are replaced with a
marker saying where they went, so the backup still shows what the file looked like.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import McpKeysError, UnsafeFile

if TYPE_CHECKING:
    from .scan.configs import Candidate


def backup_dir() -> Path:
    """Where backups go: ``$XDG_STATE_HOME/mcp-keys/backups`` (an absolute
    ``XDG_STATE_HOME`` only, as the XDG spec says), else ``~/.local/state/...``."""
    state = os.environ.get("XDG_STATE_HOME", "")
    base = Path(state) if os.path.isabs(state) else Path.home() / ".local" / "state"
    return base / "mcp-keys" / "backups"


def _private_dir() -> Path:
    """The backup directory, created 0700 if missing; a symlink, a non-directory or one
    owned by someone else is refused (``UnsafeFile``)."""
    from .safefs import check_trusted, make_private_dirs

    directory = backup_dir()
    try:
        make_private_dirs(directory)
        info = os.lstat(directory)
    except OSError as exc:
        raise McpKeysError(f"cannot create the backup directory {directory}: "
                           f"{exc.strerror or exc}; nothing was changed") from None
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeFile(f"backup directory {directory} is a symlink or not a directory; "
                         "remove it (mcp-keys creates it); nothing was changed")
    if info.st_uid != os.getuid():
        raise UnsafeFile(f"backup directory {directory} is owned by uid {info.st_uid}, not "
                         "you; remove it or set XDG_STATE_HOME; nothing was changed")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(directory, 0o700)
    check_trusted(directory, what="backup directory")  # and no parent others can write
    return directory


def backup_name(source: Path, now: datetime | None = None) -> str:
    """``<the config's absolute path, / as _>.<UTC time>.bak``: which file, and when."""
    where = re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.abspath(source)).strip("_")[-150:]
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{where}.{stamp}.bak"


def write_backup(source: Path, data: bytes, *, now: datetime | None = None) -> Path:
    """Write ``data`` (already redacted) as a new 0600 backup of ``source``; its path."""
    directory = _private_dir()
    name = backup_name(source, now)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for attempt in range(100):
        path = directory / (name if not attempt else f"{name[:-4]}.{attempt}.bak")
        try:
            fd = os.open(path, flags, 0o600)
        except FileExistsError:
            continue
        except OSError as exc:
            raise McpKeysError(f"cannot write a backup in {directory}: "
                               f"{exc.strerror or exc}; nothing was changed") from None
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError as exc:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise McpKeysError(f"cannot write a backup in {directory}: "
                               f"{exc.strerror or exc}; nothing was changed") from None
        os.close(fd)
        return path
    raise McpKeysError(f"cannot find a free backup name in {directory}; nothing was changed")


def marker(reference: str) -> str:
    """What stands in a backup where a moved secret was."""
    return f"<redacted: moved to {reference}>"


def hard_coded(path: Path, text: str) -> list[Candidate]:
    """The values of a config that ``mcp-keys scan`` would report."""
    from .scan.configs import candidates
    from .scan.detectors import classify

    return [item for item in candidates(path, text) if classify(item.value, item.name)]


def redact_config(path: Path, text: str, moved: Mapping[str, str] | None = None) -> str:
    """A config's text for its backup: each ``moved`` value replaced by its marker, and
    every other hard-coded secret (still in the file) by a marker saying so."""
    found = dict(moved or {})
    for item in hard_coded(path, text):
        if not any(value in item.value for value in found):
            found[item.value] = f"<redacted: a hard-coded secret, still in {path}>"
    return redact_json(text, found) if found else text


def redact_json(text: str, replacements: Mapping[str, str]) -> str:
    """``text`` (a JSON config) with every occurrence of each secret replaced by its
    marker. The text is edited in place where the secret is spelled as ``json.dumps``
    spells it, so the backup keeps its layout; if any string of the result still holds a
    secret (spelled with other escapes), the document is re-serialised with every
    string redacted instead."""
    result = text
    for secret in sorted(replacements, key=len, reverse=True):
        for spelling in {json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}:
            result = result.replace(spelling, json.dumps(replacements[secret])[1:-1])
    if not _holds_secret(result, replacements):
        return result
    from .scan.configs import load_json

    def clean(node: Any) -> Any:
        if isinstance(node, str):
            for secret in sorted(replacements, key=len, reverse=True):
                node = node.replace(secret, replacements[secret])
            return node
        if isinstance(node, dict):
            return {clean(k): clean(v) for k, v in node.items()}
        if isinstance(node, list):
            return [clean(v) for v in node]
        return node

    return json.dumps(clean(load_json(text)), indent=2, ensure_ascii=False) + "\n"


def _holds_secret(text: str, secrets: Mapping[str, str]) -> bool:
    from .scan.configs import load_json

    if any(secret in text for secret in secrets):
        return True
    try:
        document = load_json(text)
    except ValueError:
        return True  # cannot check it: treat as unsafe, re-serialise from the original
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, str):
            found.append(node)
        elif isinstance(node, dict):
            for key, value in node.items():
                found.append(key)
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    return any(secret in item for item in found for secret in secrets)
