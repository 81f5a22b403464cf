"""Files on a shared machine: who may own and write what mcp-keys trusts, and reads that
cannot hang or exhaust memory.

The ownership rule is the one sshd's StrictModes applies to ``authorized_keys``: a file,
its directory and every parent up to ``/`` must not be writable by anyone but their owner
(a sticky parent such as ``/tmp`` excepted), and the file and directory must belong to
the caller or root. A reader (a Validator under a service account) also accepts a file
owned by the owner of its directory: an operator's store, read by a service.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import UnsafeFile

MAX_READ_BYTES = 256 * 1024 * 1024


def _owner(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return str(uid)


def _me() -> str:
    return _owner(os.getuid())


def _parents(path: Path) -> list[Path]:
    """Every directory from ``path``'s parent up to ``/``, by the link path and by the
    resolved path (a symlinked component is only as safe as the directory holding it)."""
    seen: list[Path] = []
    for start in (Path(os.path.abspath(path)), Path(os.path.realpath(path))):
        for parent in start.parents:
            if parent not in seen:
                seen.append(parent)
    return seen


def check_trusted(path: str | os.PathLike[str], *, what: str, reader: bool = False) -> None:
    """Raise ``UnsafeFile`` naming the path and the fix unless ``path`` (which may not exist
    yet), its directory and every existing parent pass the StrictModes rule."""
    path = Path(path)
    uid = os.getuid()
    directory = Path(os.path.realpath(path)).parent
    try:
        dir_info = directory.stat()
    except (FileNotFoundError, NotADirectoryError):
        dir_info = None
    trusted_owners = {uid, 0}
    if dir_info is not None:
        if dir_info.st_uid not in trusted_owners and not reader:
            raise UnsafeFile(
                f"{what} directory {directory} is owned by {_owner(dir_info.st_uid)}, not "
                f"{_me()} or root; run: chown {_me()} {directory}")
        if stat.S_IMODE(dir_info.st_mode) & 0o022:
            raise UnsafeFile(
                f"{what} directory {directory} is writable by group or others "
                f"(mode {stat.S_IMODE(dir_info.st_mode):04o}); run: chmod go-w {directory}")
        if reader:
            trusted_owners.add(dir_info.st_uid)
    try:
        info = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        info = None
    if info is not None:
        if not stat.S_ISREG(info.st_mode) and not stat.S_ISDIR(info.st_mode):
            raise UnsafeFile(f"{what} {path} is not a regular file (a FIFO, socket or "
                             "device); refusing to read it")
        if info.st_uid not in trusted_owners:
            raise UnsafeFile(
                f"{what} {path} is owned by {_owner(info.st_uid)}, not {_me()} or root; "
                f"run: chown {_me()} {path}")
        if stat.S_IMODE(info.st_mode) & 0o022:
            raise UnsafeFile(
                f"{what} {path} is writable by group or others "
                f"(mode {stat.S_IMODE(info.st_mode):04o}); run: chmod go-w {path}")
    for parent in _parents(path):
        if parent == directory:
            continue
        try:
            parent_info = parent.stat()
        except (FileNotFoundError, NotADirectoryError):
            continue
        mode = parent_info.st_mode
        if stat.S_IMODE(mode) & 0o022 and not mode & stat.S_ISVTX:
            raise UnsafeFile(
                f"{what} {path} lies under {parent}, which is writable by group or others "
                f"(mode {stat.S_IMODE(mode):04o}); run: chmod go-w {parent} (or use +t), "
                "or keep the store elsewhere")


def make_private_dirs(directory: str | os.PathLike[str]) -> list[Path]:
    """Create ``directory`` and any missing parents, each mode 0700 whatever the umask;
    return the ones created (outermost first), so a failed command can remove them."""
    directory = Path(directory)
    missing: list[Path] = []
    existing = directory
    while not os.path.lexists(existing):
        missing.append(existing)
        existing = existing.parent
    if not os.path.isdir(existing):
        raise FileExistsError(17, "exists and is not a directory", str(existing))
    created: list[Path] = []
    for item in reversed(missing):
        try:
            item.mkdir(mode=0o700)
        except FileExistsError:
            if not item.is_dir():
                raise
            continue  # another process made it between our look and our mkdir
        os.chmod(item, 0o700)
        created.append(item)
    return created


def read_regular(path: str | os.PathLike[str], *,
                 limit: int | None = None) -> tuple[bytes, os.stat_result] | None:
    """The bytes and stat of a regular file, ``None`` if absent.

    Opened without blocking (a FIFO or device cannot hang the reader) and checked to be a
    regular file before a byte is read; files over ``limit`` are refused, not loaded.
    ``OSError`` and ``UnsafeFile`` pass to the caller.
    """
    limit = MAX_READ_BYTES if limit is None else limit
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(21, "is a directory", os.fspath(path))
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeFile(f"{path} is not a regular file (a FIFO, socket or device); "
                             "refusing to read it")
        if info.st_size > limit:
            raise UnsafeFile(f"{path} is {info.st_size} bytes, over the {limit}-byte limit; "
                             "refusing to load it")
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                raise UnsafeFile(f"{path} grew past the {limit}-byte limit while being read")
            chunks.append(chunk)
        return b"".join(chunks), info
    finally:
        os.close(fd)
