"""Writing one variable into a .env file, keeping every other binding as it was.

python-dotenv's parser finds the bindings (quotes, ``export``, comments, multi-line
values); the write itself is ours so it is atomic, fsync-ed and keeps the file's line
endings. A key never lands in a file others can read: a new file is 0600 and an existing
one loses its group and other bits. A symlinked .env, or one owned by someone else, is
refused unless the caller says ``follow_symlink``.
"""

from __future__ import annotations

import io
import os
import re
import stat
from pathlib import Path

from .atomic import write_atomic
from .errors import EnvFileError, UnsafeFile, UsageError, warn
from .safefs import read_regular

DEFAULT_KEY_VAR = "MCP_API_KEY"
REQUIRED_VAR = "API_KEY_REQUIRED"
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PLAIN_VALUE = re.compile(r"[A-Za-z0-9_.:/+@=,-]*")


def check_var_name(name: str) -> str:
    """Reject anything that is not a plain environment variable name."""
    if not isinstance(name, str) or not _VAR_NAME.fullmatch(name):
        raise UsageError(f"invalid variable name {name!r}: use letters, digits and '_'")
    return name


def _target(path: str | os.PathLike[str], follow_symlink: bool) -> Path:
    """The file to write; a symlink is written through only when the caller asked."""
    path = Path(path)
    if path.is_symlink():
        if not follow_symlink:
            raise EnvFileError(
                f".env path {path} is a symlink to {os.path.realpath(path)}; refusing to write "
                "a key through it (give the target, or pass --follow-symlink)")
        return Path(os.path.realpath(path))
    return path


def _read(path: Path, shown: str | os.PathLike[str], follow_symlink: bool) -> tuple[str, int]:
    """The current text and mode (``("", -1)`` for a new file), after every check."""
    try:
        found = read_regular(path)
    except IsADirectoryError:
        raise EnvFileError(f".env path {shown} is a directory, not a file") from None
    except UnsafeFile:
        raise EnvFileError(f".env path {shown} is not a regular file") from None
    except OSError as exc:
        raise EnvFileError(f"cannot read {shown}: {exc.strerror}") from None
    if found is None:
        if not path.parent.is_dir():
            raise EnvFileError(f"cannot write {shown}: directory {path.parent} does not exist")
        return "", -1
    raw, info = found
    if info.st_uid != os.getuid() and not follow_symlink:
        raise EnvFileError(f".env file {shown} is owned by uid {info.st_uid}, not you; refusing "
                           "to write a key into it (pass --follow-symlink to allow)")
    try:
        return raw.decode("utf-8"), stat.S_IMODE(info.st_mode)
    except UnicodeDecodeError:
        raise EnvFileError(f"cannot update {shown}: it is not UTF-8 text") from None


def read_values(path: str | os.PathLike[str]) -> dict[str, str | None] | None:
    """The variables of a .env file as python-dotenv reads them (no interpolation), or
    ``None`` if there is no such file. Never blocks on a FIFO; ``OSError`` and
    ``UnsafeFile`` pass to the caller."""
    from dotenv import dotenv_values

    found = read_regular(path, limit=1024 * 1024)
    if found is None:
        return None
    text = found[0].decode("utf-8", "replace")
    return dict(dotenv_values(stream=io.StringIO(text), interpolate=False))


def check_writable(path: str | os.PathLike[str], *, follow_symlink: bool = False) -> None:
    """Fail now, before anything else changes, if ``path`` cannot take a write."""
    _read(_target(path, follow_symlink), path, follow_symlink)


def _quote(value: str) -> str:
    if _PLAIN_VALUE.fullmatch(value):
        return value
    if "'" not in value and "\n" not in value:
        return f"'{value}'"
    raise UsageError("the value cannot be written to a .env file (it holds quotes or newlines)")


_HEAD = re.compile(r"\s*(?:export[^\S\r\n]+)?")
_LINE_END = re.compile(r"(?:\r\n|\n|\r)?\Z")


def rewrite(text: str, name: str, value: str) -> str:
    """``text`` with ``name`` bound to ``value``. The binding dotenv reads (the last one)
    is replaced whole, keeping the blank lines and ``export`` before it and its line
    ending; earlier duplicates are dropped (they held an old value), or a new line is
    appended. Every other binding, comment and unparsable line is kept byte for byte.

    The result is checked by parsing it again: if dotenv would not read every other
    variable as before and ``name`` as ``value``, nothing is returned but an error."""
    from dotenv.parser import parse_stream

    bom = "\ufeff" if text.startswith("\ufeff") else ""
    newline = "\r\n" if "\r\n" in text else "\n"
    bindings = list(parse_stream(io.StringIO(text, newline="")))
    last = max((i for i, b in enumerate(bindings) if b.key == name), default=None)
    parts: list[str] = []
    for index, binding in enumerate(bindings):
        original = binding.original.string
        if binding.key != name:
            parts.append(original)
        elif index == last:
            head = _HEAD.match(original)
            end = _LINE_END.search(original)
            assert head is not None and end is not None
            parts.append(head.group(0) + f"{name}={_quote(value)}" + end.group(0))
        else:  # an overridden duplicate: keep the blank lines before it, not its value
            head = _HEAD.match(original)
            assert head is not None
            parts.append(head.group(0).replace("export", "").rstrip(" \t"))
    if last is None:
        if parts and not parts[-1].endswith(("\n", "\r")):
            parts.append(newline)
        parts.append(f"{name}={_quote(value)}{newline}")
    result = bom + "".join(parts)
    _check(text, result, name, value)
    return result


def _values(text: str) -> dict[str, str | None]:
    """What ``dotenv_values(interpolate=False)`` reads, without its parse warnings."""
    from dotenv.parser import parse_stream

    return {b.key: b.value for b in parse_stream(io.StringIO(text)) if b.key is not None}


def _check(before: str, after: str, name: str, value: str) -> None:
    """Refuse a rewrite after which dotenv would read anything but ``name=value`` changed."""
    new = _values(after)
    if new != {**_values(before), name: value} or new.get(name) != value:
        raise EnvFileError(f"cannot set {name} without changing how the rest of the .env "
                           "file is read (an unterminated quote?); fix the file by hand")


def set_variable(path: str | os.PathLike[str], name: str, value: str, *,
                 follow_symlink: bool = False, secret: bool = True) -> bool:
    """Set ``name=value`` in the file, replacing the binding in place or appending it.

    A ``secret`` value makes the file private (0600 new, group/other bits dropped from an
    existing one). Returns ``True`` if the file changed. The value never appears in an
    error message.
    """
    check_var_name(name)
    target = _target(path, follow_symlink)
    old, mode = _read(target, path, follow_symlink)
    new = rewrite(old, name, value)
    private = 0o600 if mode < 0 else mode & ~0o077 if secret else mode
    if new == old and mode == private:
        return False
    if mode >= 0 and mode != private:
        warn("%s was mode %04o; removed group and other permissions (now %04o) so the key "
             "is not readable by others", path, mode, private)
    try:
        write_atomic(target, new.encode("utf-8"), mode=private)
    except OSError as exc:
        raise EnvFileError(f"cannot write {path}: {exc.strerror}; it was left as it was") from None
    return True
