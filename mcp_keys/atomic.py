"""Atomic file replacement: a temp file in the same directory, fsync, rename, fsync the
directory. A reader or a crash sees the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def temp_pattern(path: Path) -> str:
    """The glob that matches this file's temp files (``.<name>.*.tmp``)."""
    return f".{path.name}.*.tmp"


def remove_stale_temps(path: str | os.PathLike[str]) -> None:
    """Remove leftovers of a writer that died mid-write; call it under the file's lock."""
    path = Path(path)
    for leftover in path.parent.glob(temp_pattern(path)):
        with contextlib.suppress(OSError):
            if leftover.is_file() and not leftover.is_symlink():
                leftover.unlink()


def write_atomic(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` (file mode ``mode``); ``OSError`` leaves it as it was."""
    import tempfile  # deferred: ~5 ms that read-only commands need not pay

    path = Path(path)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_directory(path.parent)


def fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (best effort: some filesystems refuse)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
