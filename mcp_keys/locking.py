"""An exclusive ``flock`` on a lock file that is never a symlink and can be removed safely.

Why not the ``filelock`` package: it costs ~70 ms to import (every write command pays it),
and it cannot tell a waiter that the file it locked was unlinked, so a lock file that a
failed command created could never be cleaned up. Here the holder checks, after each
acquisition, that the locked inode is still the one at the path; a waiter that lost that
race retries, so removing the file while holding the lock is safe.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time

_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC


class LockTimeout(Exception):
    """The lock was held by someone else for the whole timeout."""


class LockFile:
    """``with LockFile(path, timeout):`` holds an exclusive lock on ``path`` (mode 0600).

    ``created`` tells whether this acquisition made the file, so a caller that changed
    nothing can ``remove()`` it before releasing and leave no litter.
    """

    def __init__(self, path: str | os.PathLike[str], timeout: float) -> None:
        self.path = os.fspath(path)
        self.timeout = timeout
        self.created = False
        self._fd: int | None = None

    def __repr__(self) -> str:
        return f"LockFile({self.path!r})"

    def acquire(self) -> None:
        """Lock, polling until ``timeout``; raises ``LockTimeout`` or ``OSError``
        (``ELOOP`` when the path is a symlink)."""
        deadline = time.monotonic() + self.timeout
        pause = 0.001
        while True:
            fd, created = _open(self.path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if time.monotonic() >= deadline:
                    raise LockTimeout(self.path) from None
                time.sleep(pause)
                pause = min(pause * 2, 0.05)
                continue
            except BaseException:
                os.close(fd)
                raise
            if _same_file(fd, self.path):
                self._fd, self.created = fd, created
                return
            os.close(fd)  # removed or replaced while we waited: lock the new one

    def remove(self) -> None:
        """Unlink the lock file while holding it (waiters notice and retry)."""
        if self._fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing drops the flock

    def __enter__(self) -> LockFile:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _open(path: str) -> tuple[int, bool]:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600), True
    except FileExistsError:
        pass
    try:
        return os.open(path, os.O_RDWR | _NOFOLLOW), False
    except FileNotFoundError:  # removed between the two opens
        return _open(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "is a symlink (refusing to follow it)", path) from None
        raise


def _same_file(fd: int, path: str) -> bool:
    try:
        on_disk = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)
