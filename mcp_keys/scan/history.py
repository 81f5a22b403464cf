"""``scan --git-history``: secrets in the reachable commits, each reported at the commit
that first added it (the oldest, since a secret once committed stays in the history).

Every path a commit adds or changes is scanned, whatever its name (a committed
``mcp.json.bak`` leaks as much as ``mcp.json``). One ``git log`` lists the blobs and one
``git cat-file`` streams them; each distinct blob is read and scanned once. Binary
blobs, and blobs over the scanner's size limit, are skipped. In a file whose name says
neither config nor ``.env`` (source code, docs) only the recognisable formats count
(provider keys, mcp-keys keys): a high-entropy value under a secret-sounding name there
is usually code.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

from ..errors import McpKeysError
from .configs import MAX_FILE_BYTES, looks_like_json, worth_scanning
from .detectors import may_hold_a_known_format
from .scanner import Finding, LocalStore, scan_text

_NO_BLOB = "0" * 40
_GENERIC = ("generic-secret", "generic-bearer")
_BLOB_MODES = ("100644", "100755")


def changed_blobs(repo: Path, max_commits: int) -> list[tuple[str, str, str]]:
    """``(commit, path, blob)`` for every file version the last ``max_commits`` commits
    (all refs) added or changed, oldest commit first; a merge against its first parent."""
    try:
        log = subprocess.run(
            ["git", "-C", str(repo), "log", f"--max-count={max_commits}", "--all",
             "--reverse", "--format=%x00%H", "--raw", "-z", "--no-abbrev", "--no-renames",
             "--diff-merges=first-parent"],
            capture_output=True, check=False, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise McpKeysError(f"cannot run git log: {getattr(exc, 'strerror', None) or exc}"
                           ) from None
    if log.returncode != 0:
        raise McpKeysError(f"{repo} is not a git repository (git log failed)")
    tokens = log.stdout.decode("utf-8", "surrogateescape").split("\0")
    found: list[tuple[str, str, str]] = []
    commit = ""
    index = 0
    while index < len(tokens):
        token = tokens[index].lstrip("\n")
        if token.startswith(":"):  # ":old_mode new_mode old_blob new_blob status", path
            fields = token[1:].split()
            path = tokens[index + 1] if index + 1 < len(tokens) else ""
            index += 2
            if len(fields) >= 5 and fields[1] in _BLOB_MODES and fields[3] != _NO_BLOB:
                found.append((commit, path, fields[3]))
            continue
        if token == "" and index + 1 < len(tokens):  # "%x00%H": a commit starts
            commit = tokens[index + 1].strip()
            index += 2
            continue
        index += 1
    return found


def read_blobs(repo: Path, blobs: list[str]) -> Iterator[tuple[str, bytes | None]]:
    """``(blob, content)`` for each blob in order, ``None`` for one too big to scan."""
    try:
        cat = subprocess.Popen(["git", "-C", str(repo), "cat-file", "--batch"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL)
    except OSError as exc:
        raise McpKeysError(f"cannot run git cat-file: {exc.strerror}") from None
    assert cat.stdin is not None and cat.stdout is not None
    stdin, stdout = cat.stdin, cat.stdout

    def feed() -> None:
        try:
            for blob in blobs:
                stdin.write(blob.encode() + b"\n")
            stdin.close()
        except OSError:
            pass  # git stopped early; the reader reports it

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    try:
        for blob in blobs:
            header = stdout.readline().split()
            if len(header) < 3 or header[1] != b"blob":
                yield blob, None  # "<blob> missing" (a shallow or partial clone)
                continue
            size = int(header[2])
            if size > MAX_FILE_BYTES:
                remaining = size + 1
                while remaining > 0:
                    skipped = stdout.read(min(remaining, 1 << 20))
                    if not skipped:
                        break
                    remaining -= len(skipped)
                yield blob, None
                continue
            data = stdout.read(size + 1)[:size]
            yield blob, data
    finally:
        stdout.close()
        cat.kill()
        cat.wait()
        writer.join(5)


def _text(data: bytes | None) -> str | None:
    if data is None or b"\0" in data[:8000]:
        return None  # too big, or binary
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None


def scan_history(repo: Path, *, max_commits: int = 1000,
                 store: str | os.PathLike[str] | None = None) -> list[Finding]:
    """Findings in every file version the reachable commits added or changed."""
    versions = changed_blobs(repo, max_commits)
    paths: dict[str, list[str]] = {}
    for _, path, blob in versions:
        paths.setdefault(blob, []).append(path)
    named = {path: worth_scanning(Path(path), sniff=False) for _, path, _ in versions}
    by_blob: dict[str, list[Finding]] = {}
    local = LocalStore(store)
    for blob, data in read_blobs(repo, list(paths)):
        text = _text(data)
        if text is None:
            continue
        if not any(named[p] for p in paths[blob]) and not looks_like_json(text) \
                and not may_hold_a_known_format(text):
            continue  # source code or docs with nothing that would count there
        by_blob[blob] = scan_text(Path(paths[blob][0]), text, store=local,
                                    commit="")
    seen: dict[tuple[str, str, str], Finding] = {}
    for commit, path, blob in versions:
        for finding in by_blob.get(blob, []):
            if finding.kind in _GENERIC and finding.where in ("dotenv", "comment") \
                    and not named[path]:
                continue  # "name = high-entropy text" in source code is code, not a secret
            key = (path, finding.path, finding.preview)
            if key not in seen:
                seen[key] = finding.replace(file=Path(path), commit=commit)
    return list(seen.values())
