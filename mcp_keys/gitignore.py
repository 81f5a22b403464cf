"""Keeping the store and the .env out of git: add ignore entries that git really honours,
then ask git whether it ignores the path."""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import McpKeysError

_GLOB = re.compile(r"([\\*?\[])")


def escape(relative: str) -> str:
    """A .gitignore pattern matching ``relative`` literally: glob characters, a leading
    ``#`` or ``!`` and trailing spaces escaped (git would read them as syntax)."""
    pattern = _GLOB.sub(r"\\\1", relative)
    if pattern.startswith(("#", "!")):
        pattern = "\\" + pattern
    stripped = pattern.rstrip(" ")
    return stripped + "\\ " * (len(pattern) - len(stripped))


def relative_to_root(path: Path, root: Path | None = None) -> str | None:
    """``path`` relative to ``root`` (cwd) in POSIX form, or ``None`` if outside it."""
    root = (root or Path.cwd()).resolve()
    try:
        relative = Path(os.path.abspath(path)).resolve().relative_to(root)
    except ValueError:
        return None
    text = relative.as_posix()
    return None if text == "." else text


def entry_for(path: Path, *, directory: bool, root: Path | None = None) -> str | None:
    """The .gitignore line for ``path`` relative to ``root`` (cwd), or ``None`` if outside it."""
    relative = relative_to_root(path, root)
    if relative is None:
        return None
    return escape(relative) + ("/" if directory else "")


def add_entry(line: str, root: Path | None = None) -> bool:
    """Append ``line`` to ``<root>/.gitignore`` unless it is there; ``True`` if added."""
    gitignore = (root or Path.cwd()) / ".gitignore"
    try:
        text = gitignore.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    existing = {raw.rstrip("\r\n") for raw in text.splitlines()}
    if line in existing or line.rstrip("/") in existing or "/" + line in existing:
        return False
    with open(gitignore, "a", encoding="utf-8") as handle:
        if text and not text.endswith("\n"):
            handle.write("\n")
        handle.write(line + "\n")
    return True


def confirm_ignored(paths: list[Path]) -> None:
    """Raise unless git ignores each path (nothing to confirm outside a work tree)."""
    for path in paths:
        state = git_status(path)
        if state in ("exposed", "tracked"):
            why = ("it is already tracked: git rm --cached it" if state == "tracked"
                   else "another rule re-includes it (see: git check-ignore -v --no-index "
                   f"{path})")
            raise McpKeysError(f"git still does not ignore {path} after adding it to "
                               f".gitignore: {why}")


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
    target = str(Path(os.path.abspath(path)))
    if git("ls-files", "--error-unmatch", "--", target).returncode == 0:
        return "tracked"
    if git("check-ignore", "-q", "--no-index", "--", target).returncode == 0:
        return "ignored"
    return "exposed"
