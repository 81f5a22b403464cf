"""Keeping the store and the .env out of git: add ignore entries, ask git what it ignores."""

from __future__ import annotations

import os
from pathlib import Path


def entry_for(path: Path, *, directory: bool, root: Path | None = None) -> str | None:
    """The .gitignore line for ``path`` relative to ``root`` (cwd), or ``None`` if outside it."""
    root = (root or Path.cwd()).resolve()
    try:
        relative = path.resolve().relative_to(root)
    except ValueError:
        return None
    if str(relative) == ".":
        return None
    return relative.as_posix() + ("/" if directory else "")


def add_entry(line: str, root: Path | None = None) -> bool:
    """Append ``line`` to ``<root>/.gitignore`` unless it is there; ``True`` if added."""
    gitignore = (root or Path.cwd()) / ".gitignore"
    try:
        text = gitignore.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    existing = {raw.strip() for raw in text.splitlines()}
    if line in existing or line.rstrip("/") in existing or "/" + line in existing:
        return False
    with open(gitignore, "a", encoding="utf-8") as handle:
        if text and not text.endswith("\n"):
            handle.write("\n")
        handle.write(line + "\n")
    return True


def git_status(path: Path) -> str:
    """``ignored``, ``tracked``, ``exposed`` (in a repo, neither) or ``no-repo``."""
    import subprocess  # deferred: only commands that write a .env or run doctor ask git

    cwd = path.parent if path.parent.is_dir() else Path.cwd()
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0")

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                              env=env, check=False)

    try:
        inside = git("rev-parse", "--is-inside-work-tree")
    except OSError:
        return "no-repo"
    if inside.returncode != 0 or inside.stdout.strip() != "true":
        return "no-repo"
    target = str(path.resolve())
    if git("ls-files", "--error-unmatch", "--", target).returncode == 0:
        return "tracked"
    if git("check-ignore", "-q", "--", target).returncode == 0:
        return "ignored"
    return "exposed"
