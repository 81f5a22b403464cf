"""The JSON file store (the default): schema-checked reads, locked atomic writes, digests only.

Every write takes the lock, re-reads, changes, writes a temp file in the same directory,
fsyncs it, ``os.replace``-s it over the store and fsyncs the directory, so a reader or a
crash sees the old store or the new one, never half of one. A store that does not parse
or fails the schema is reported with its path and never overwritten.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import StoreCorrupt, StoreError, StoreLocked, UnsafeFile, UsageError
from ..models import ApiKey
from ..safefs import check_trusted, make_private_dirs, read_regular
from .base import DictRecords

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..audit import AuditLog
    from ..locking import LockFile

SCHEMA_VERSION = 2  # 2: keys may be bound to resources; written only when one is
_READS = (1, 2)
DEFAULT_PATH = Path(".mcp-keys") / "keys.json"
DEFAULT_LOCK_TIMEOUT = 10.0
KEY_ID = re.compile(r"[a-z0-9]{12}")


def resolve_location(path: str | os.PathLike[str] | None = None) -> str:
    """The store as given: the argument, else ``MCP_KEYS_STORE``, else the default."""
    if path is not None and os.fspath(path) != "":
        return os.fspath(path)
    return os.environ.get("MCP_KEYS_STORE") or str(DEFAULT_PATH)


def resolve_path(path: str | os.PathLike[str] | None = None) -> Path:
    """The store path: the argument, else ``MCP_KEYS_STORE``, else ``./.mcp-keys/keys.json``."""
    return Path(resolve_location(path))


def check_location(location: str | os.PathLike[str]) -> None:
    """A store path names a file: a trailing slash or an existing directory is an error
    (``Path`` would silently drop the slash and create a file named like the folder)."""
    text = os.fspath(location)
    if text.endswith(("/", os.sep)) or os.path.isdir(text):
        raise UsageError(f"store path {text} is a directory; give the store file, "
                         f"e.g. --store {os.path.join(text, 'keys.json')}")


def shadowed_store(path: Path) -> Path | None:
    """For a relative store path that does not exist: a default store in a parent of the
    current directory, which the operator most likely meant (``None`` if there is none)."""
    if path.is_absolute() or path.exists():
        return None
    for parent in Path.cwd().resolve().parents:
        candidate = parent / DEFAULT_PATH
        if candidate.is_file():
            return candidate
    return None


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise ValueError(f"duplicate entry {name!r}")
        result[name] = value
    return result


def parse(raw: bytes, path: Path) -> dict[str, ApiKey]:
    """Decode and schema-check a store file's bytes, or raise ``StoreCorrupt`` naming ``path``."""
    try:
        data = json.loads(raw.decode("utf-8"), object_pairs_hook=_reject_duplicates)
    except (UnicodeDecodeError, ValueError) as exc:
        raise StoreCorrupt(f"store {path} is not valid JSON ({exc}); left untouched") from None
    if not isinstance(data, dict) or "version" not in data:
        raise StoreCorrupt(f"{path} is not an mcp-keys store (it is JSON, but has no "
                           "'version'); give the right --store; left untouched")
    version = data["version"]
    if type(version) is not int or version not in _READS:
        raise StoreCorrupt(
            f"store {path} has version {version!r}, this mcp-keys reads versions "
            f"1 and {SCHEMA_VERSION}: upgrade mcp-keys; left untouched"
        )
    entries = data.get("keys")
    if not isinstance(entries, dict):
        raise StoreCorrupt(f"store {path} is not an mcp-keys store (no 'keys' object); "
                           "left untouched")
    keys: dict[str, ApiKey] = {}
    try:
        for key_id, entry in entries.items():
            if not KEY_ID.fullmatch(key_id):
                raise ValueError(f"invalid key ID {key_id!r}")
            keys[key_id] = ApiKey.from_store(key_id, entry)
    except (ValueError, TypeError) as exc:
        raise StoreCorrupt(f"store {path} fails the schema: {exc}; left untouched") from None
    if version == 1 and any(key.resources for key in keys.values()):
        raise StoreCorrupt(f"store {path} is version 1 but binds keys to resources (only "
                           "version 2 may); left untouched")
    return keys


def serialize(keys: dict[str, ApiKey]) -> bytes:
    """The bytes of a store holding ``keys``: one key per line, so diffs stay readable.

    Each record goes through the C JSON encoder (``indent`` would force the slow one).
    """
    lines = [f"{json.dumps(key_id)}: {json.dumps(key.to_store(), ensure_ascii=False)}"
             for key_id, key in sorted(keys.items())]
    body = "\n" + ",\n".join(lines) + "\n" if lines else ""
    # Version 2 only when a key is bound, so that an older mcp-keys refuses such a store
    # (it would ignore the binding) and reads every other store as before.
    version = SCHEMA_VERSION if any(key.resources for key in keys.values()) else 1
    return f'{{"version": {version}, "keys": {{{body}}}}}\n'.encode()


def _describe(exc: OSError) -> str:
    return exc.strerror or exc.__class__.__name__


class JsonStore:
    """One store file, its lock and its directory."""

    kind = "json"

    def __init__(
        self, path: str | os.PathLike[str] | None = None, *, lock_timeout: float | None = None
    ) -> None:
        location = resolve_location(path)
        check_location(location)
        self.path = Path(location)
        if lock_timeout is None:
            setting = os.environ.get("MCP_KEYS_LOCK_TIMEOUT", "")
            try:
                lock_timeout = float(setting) if setting else DEFAULT_LOCK_TIMEOUT
            except ValueError:
                raise UsageError(
                    f"MCP_KEYS_LOCK_TIMEOUT={setting!r} is not a number of seconds") from None
        self.lock_timeout = lock_timeout

    def __repr__(self) -> str:
        return f"JsonStore({str(self.path)!r})"

    @property
    def display(self) -> str:
        return str(self.path)

    def audit_log(self) -> AuditLog:
        from ..audit import AuditLog

        return AuditLog(self.directory / "audit.log")

    @property
    def directory(self) -> Path:
        return self.path.parent

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    def exists(self) -> bool:
        return self.path.exists()

    def check_trusted(self, *, reader: bool = False) -> None:
        """The StrictModes rule (see ``safefs``) for the store, its directory and parents."""
        check_trusted(self.path, what="store", reader=reader)

    def read_raw(self) -> bytes | None:
        """The store's bytes, or ``None`` if there is no store yet."""
        try:
            found = read_regular(self.path)
        except IsADirectoryError:
            raise StoreError(f"store path {self.path} is a directory, not a file") from None
        except UnsafeFile as exc:
            raise StoreError(str(exc)) from None
        except OSError as exc:
            raise StoreError(f"cannot read store {self.path}: {_describe(exc)}") from None
        return None if found is None else found[0]

    def read(self) -> DictRecords:
        """Every record; an absent store reads as empty."""
        self.check_trusted(reader=True)
        raw = self.read_raw()
        return DictRecords({} if raw is None else parse(raw, self.path))

    @contextlib.contextmanager
    def transaction(self, *, create: bool = False) -> Iterator[FileTransaction]:
        """Lock, read, and yield a transaction whose changes are written when the block ends.

        Without ``create`` an absent store is an error; with it, the store is created.
        An exception in the block writes nothing more than what was committed, and a
        transaction that leaves no store behind leaves no lock file or directory either.
        """
        if not create and not self.path.exists() and not self.path.is_symlink():
            raise StoreError(f"no store at {self.path}: run 'mcp-keys init' first")
        from ..locking import LockFile

        self.check_trusted()
        made = self._ensure_directory()
        lock = LockFile(self.lock_path, self.lock_timeout)
        try:
            self._acquire(lock)
            txn: FileTransaction | None = None
            try:
                raw = self.read_raw()
                if raw is not None:
                    self._check_writable()
                txn = FileTransaction(self, None if raw is None else parse(raw, self.path))
                yield txn
                txn.commit()
            finally:
                if lock.created and (txn is None or not txn.persisted):
                    lock.remove()
                lock.release()
        finally:
            if not self.path.exists():
                for directory in reversed(made):
                    with contextlib.suppress(OSError):
                        directory.rmdir()

    def _ensure_directory(self) -> list[Path]:
        try:
            return make_private_dirs(self.directory)
        except FileExistsError as exc:
            raise StoreError(f"store directory {exc.filename or self.directory} exists and is "
                             "not a directory") from None
        except OSError as exc:
            raise StoreError(
                f"cannot create store directory {self.directory}: {_describe(exc)}"
            ) from None

    def _check_writable(self) -> None:
        if self.path.is_symlink():
            # Replacing the link would silently fork the store from its target.
            raise StoreError(f"store {self.path} is a symlink to {os.path.realpath(self.path)}; "
                             "give that path instead; left untouched")
        mode = self.path.stat().st_mode
        if not stat.S_ISREG(mode):
            raise StoreError(f"store {self.path} is not a regular file; left untouched")
        if not mode & stat.S_IWUSR:
            raise StoreError(
                f"store {self.path} is read-only (mode {stat.S_IMODE(mode):04o}); "
                "chmod u+w to allow changes"
            )

    def _acquire(self, lock: LockFile) -> None:
        from ..locking import LockTimeout

        try:
            lock.acquire()
        except LockTimeout:
            raise StoreLocked(
                f"store {self.path} is locked by another process "
                f"(waited {self.lock_timeout:g}s for {self.lock_path})"
            ) from None
        except OSError as exc:
            raise StoreError(f"cannot lock store: {self.lock_path}: {_describe(exc)}") from None

    def _write(self, keys: dict[str, ApiKey]) -> None:
        from ..atomic import write_atomic

        try:
            write_atomic(self.path, serialize(keys))
        except OSError as exc:
            raise StoreError(
                f"cannot write store {self.path}: {_describe(exc)}; the previous store is intact"
            ) from None


class FileTransaction:
    """The records under the lock: change ``keys``; they are written when the block ends."""

    def __init__(self, store: JsonStore, on_disk: dict[str, ApiKey] | None) -> None:
        self._store = store
        self._on_disk = on_disk
        self._existed = on_disk is not None
        self.before: dict[str, ApiKey] = dict(on_disk or {})
        self.keys = DictRecords(self.before)

    @property
    def persisted(self) -> bool:
        """Whether this transaction left the store different from how it found it."""
        return self._on_disk != (self.before if self._existed else None)

    def commit(self) -> None:
        """Write the records if they differ from what is on disk (or there is no file yet)."""
        if self._on_disk is None or self.keys.data != self._on_disk:
            self._store._write(self.keys.data)
            self._on_disk = dict(self.keys.data)

    def commit_with(self, action: Callable[[], None]) -> None:
        """Write the store, then run ``action``; if it fails, put the store back."""
        self.commit()
        try:
            action()
        except BaseException:
            self.rollback()
            raise

    def rollback(self) -> None:
        """Put back the store as it was when the lock was taken (absent, if it was)."""
        self.keys = DictRecords(self.before)
        if not self._existed and self._on_disk is not None:
            with contextlib.suppress(FileNotFoundError):
                self._store.path.unlink()
            self._on_disk = None
        elif self._on_disk is not None and self._on_disk != self.before:
            self.commit()
