"""Writing one variable into a .env file, keeping every other byte as it was.

python-dotenv's parser finds the bindings (quotes, ``export``, comments, multi-line
values); the write itself is ours so it is atomic, fsync-ed, keeps the file's line
endings and mode, and creates a new file 0600.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import stat
from pathlib import Path

from .errors import EnvFileError, UsageError

DEFAULT_KEY_VAR = "MCP_API_KEY"
REQUIRED_VAR = "API_KEY_REQUIRED"
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_var_name(name: str) -> str:
    """Reject anything that is not a plain environment variable name."""
    if not _VAR_NAME.fullmatch(name):
        raise UsageError(f"invalid variable name {name!r}: use letters, digits and '_'")
    return name


def _target(path: str | os.PathLike[str]) -> Path:
    """The file to write: a symlinked .env is written through to its target."""
    return Path(os.path.realpath(path))


def check_writable(path: str | os.PathLike[str]) -> None:
    """Fail now, before anything else changes, if ``path`` cannot take a write."""
    target = _target(path)
    if target.is_dir():
        raise EnvFileError(f".env path {path} is a directory, not a file")
    if target.exists() and not target.is_file():
        raise EnvFileError(f".env path {path} is not a regular file")
    if not target.parent.is_dir():
        raise EnvFileError(f"cannot write {path}: directory {target.parent} does not exist")
    if target.exists():
        try:
            target.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise EnvFileError(f"cannot update {path}: it is not UTF-8 text") from None
        except OSError as exc:
            raise EnvFileError(f"cannot read {path}: {exc.strerror}") from None


def _rewrite(text: str, name: str, value: str) -> str:
    from dotenv.parser import parse_stream

    newline = "\r\n" if "\r\n" in text else "\n"
    line = f"{name}={value}{newline}"
    parts: list[str] = []
    replaced = False
    for binding in parse_stream(io.StringIO(text, newline="")):
        if binding.key == name:
            if not replaced:
                # Keep what precedes the name (blank lines, indentation, "export ").
                original = binding.original.string
                parts.append(original[: original.find(name)] + line)
            replaced = True
        else:
            parts.append(binding.original.string)
    if not replaced:
        if parts and not parts[-1].endswith("\n"):
            parts.append(newline)
        parts.append(line)
    return "".join(parts)


def set_variable(path: str | os.PathLike[str], name: str, value: str) -> bool:
    """Set ``name=value`` in the file, replacing the binding in place or appending it.

    Returns ``True`` if the file changed. The value never appears in an error message.
    """
    check_var_name(name)
    check_writable(path)
    target = _target(path)
    try:
        old = target.read_bytes().decode("utf-8") if target.exists() else ""
        mode = stat.S_IMODE(target.stat().st_mode) if target.exists() else 0o600
    except OSError as exc:
        raise EnvFileError(f"cannot read {path}: {exc.strerror}") from None
    import tempfile

    new = _rewrite(old, name, value)
    if new == old and target.exists():
        return False
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise EnvFileError(f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(new.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise EnvFileError(f"cannot write {path}: {exc.strerror}; it was left as it was") from None
    return True
