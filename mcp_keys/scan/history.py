"""``scan --git-history``: secrets in the reachable commits, each reported at the commit
that first added it (the oldest, since a secret once committed stays in the history)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from ..errors import McpKeysError
from .scanner import Finding, scan_text


def scan_history(repo: Path, *, max_commits: int = 1000,
                 store: str | os.PathLike[str] | None = None) -> list[Finding]:
    """Findings in the files each commit changed (config and ``.env`` files only)."""
    try:
        log = subprocess.run(
            ["git", "-C", str(repo), "log", f"--max-count={max_commits}", "--format=%H",
             "--reverse", "--all"], capture_output=True, text=True, check=False, timeout=120)
    except OSError as exc:
        raise McpKeysError(f"cannot run git: {exc.strerror}") from None
    if log.returncode != 0:
        raise McpKeysError(f"{repo} is not a git repository (git log failed)")
    seen: dict[tuple[str, str, str], Finding] = {}
    for commit in log.stdout.split():
        changed = subprocess.run(
            ["git", "-C", str(repo), "diff-tree", "--no-commit-id", "--name-only", "-r",
             "--root", commit], capture_output=True, text=True, check=False).stdout.split("\n")
        for name in filter(None, changed):
            base = Path(name).name
            if not (base.endswith(".json") or base == ".env" or base.startswith(".env.")):
                continue
            shown = subprocess.run(["git", "-C", str(repo), "show", f"{commit}:{name}"],
                                   capture_output=True, check=False)
            if shown.returncode != 0:
                continue  # deleted in this commit
            try:
                text = shown.stdout.decode("utf-8")
            except UnicodeDecodeError:
                continue
            for finding in scan_text(Path(name), text, store=store, commit=commit):
                key = (name, finding.path, finding.preview)
                seen.setdefault(key, finding)
    return list(seen.values())
