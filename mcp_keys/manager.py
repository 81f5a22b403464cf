"""KeyManager: every lifecycle operation, and the only writer of the store.

Each operation validates its input first, changes the store under one lock acquisition,
and writes its audit event only after the store write succeeded. A failed operation
leaves the store, the .env and the audit log as they were.
"""

from __future__ import annotations

import builtins
import os
import re
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from . import envfile
from .actor import check_actor
from .errors import (
    AmbiguousKey,
    InvalidState,
    KeyNotFound,
    StoreError,
    UsageError,
    warn,
)
from .models import ApiKey, InitReport, IssuedKey, Status, SweepReport, to_iso, utcnow
from .stores import JsonStore, open_store
from .stores.base import Records, Transaction
from .stores.jsonfile import shadowed_store

if TYPE_CHECKING:
    from .audit import AuditTrail
    from .stores.base import KeyStore

DEFAULT_EXPIRES_IN = timedelta(days=90)
DEFAULT_WARN_WITHIN = timedelta(days=14)
MAX_NAME = 64
MAX_DESCRIPTION = 1024
MAX_REASON = 256
MIN_PREFIX = 4
_SCOPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9:._/-]{0,127}")
# The one scope holding a '*': every gateway service (the gateway and run --proxy read it).
GATEWAY_ALL = "gateway:*"
_ID_INPUT = re.compile(r"[a-z0-9]{4,12}")


def check_text(value: str, what: str, *, maximum: int, allow_empty: bool = False) -> str:
    """Printable text of bounded length: control characters would reach terminals and logs."""
    if not isinstance(value, str):
        raise UsageError(f"{what} must be text")
    if not value.strip() and not allow_empty:
        raise UsageError(f"{what} must not be empty")
    if len(value) > maximum:
        raise UsageError(f"{what} is {len(value)} characters; at most {maximum} are allowed")
    if not value.isprintable():
        raise UsageError(f"{what} contains control characters (newlines, tabs, escapes)")
    return value


def check_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """Scopes are short tokens such as ``tools:call``, matched exactly (no wildcards; the
    literal ``gateway:*`` is the gateway's "every service"); duplicates are dropped, order
    kept."""
    if isinstance(scopes, str):
        raise UsageError("scopes must be a list of strings, not one string")
    result: list[str] = []
    for scope in scopes:
        if not isinstance(scope, str) or not (scope == GATEWAY_ALL or _SCOPE.fullmatch(scope)):
            raise UsageError(
                f"invalid scope {scope!r}: use letters, digits and : . _ / - (no spaces), "
                f"or {GATEWAY_ALL}"
            )
        if scope not in result:
            result.append(scope)
    return tuple(result)


def _check_duration(value: timedelta | None, what: str, *, zero_ok: bool = False) -> None:
    if value is None:
        return
    if not isinstance(value, timedelta):
        raise UsageError(f"{what} must be a timedelta")
    if value < timedelta(0) or (value == timedelta(0) and not zero_ok):
        raise UsageError(f"{what} must be positive")


class KeyManager:
    """Create, list, get, revoke, delete, rotate and sweep the keys of one store."""

    def __init__(
        self, store: str | os.PathLike[str] | None = None, *, lock_timeout: float | None = None
    ) -> None:
        check_actor(os.environ.get("MCP_KEYS_ACTOR", ""))
        self.store: KeyStore = open_store(store, lock_timeout=lock_timeout)
        self._audit: AuditTrail | None = None

    def __repr__(self) -> str:
        return f"KeyManager({self.store.display!r})"

    @property
    def audit(self) -> AuditTrail:
        """The store's audit trail (made on first use: reads never need it)."""
        if self._audit is None:
            self._audit = self.store.audit_log()
        return self._audit

    def missing_store(self) -> StoreError:
        """The error for a file store that does not exist: where it was looked for, and
        the store of a parent directory the operator most likely meant, if there is one."""
        assert isinstance(self.store, JsonStore)
        path = self.store.path
        shadow = shadowed_store(path)
        if shadow is not None:
            return StoreError(
                f"no store at {path}, but a parent directory has one at {shadow}; "
                f"use --store {shadow}, or run 'mcp-keys init' to create a separate store")
        return StoreError(f"no store at {path.absolute()}: run 'mcp-keys init' to create one, "
                          "or name one with --store PATH or MCP_KEYS_STORE")

    def require_store(self, *, or_audit: bool = False) -> None:
        """Refuse (``missing_store``) when a file store does not exist, for the commands
        that would otherwise read an absent store as an empty one; ``or_audit``: its audit
        log alone is enough (the trail of a deleted store can still be read)."""
        if not isinstance(self.store, JsonStore) or self.store.exists():
            return
        if or_audit and (self.store.directory / "audit.log").exists():
            return
        raise self.missing_store()

    # -- reading -------------------------------------------------------------------------

    def list(
        self,
        *,
        status: Status | str | None = None,
        scope: str | None = None,
        expiring_within: timedelta | None = None,
        now: datetime | None = None,
    ) -> list[ApiKey]:
        """Keys oldest first, filtered by status (``all`` or ``None`` for every key),
        by a scope they hold, and by expiring within a span (active keys only)."""
        now = now or utcnow()
        wanted = None if status in (None, "all") else Status(status)
        _check_duration(expiring_within, "expiring_within")
        result = []
        for key in self.store.read().values():
            if wanted is not None and key.status_at(now) is not wanted:
                continue
            if scope is not None and scope not in key.scopes:
                continue
            if expiring_within is not None and not (
                key.status_at(now) is Status.ACTIVE
                and key.expires_at is not None
                and key.expires_at <= now + expiring_within
            ):
                continue
            result.append(key)
        return sorted(result, key=lambda k: (k.created_at, k.id))

    def get(self, key_id: str) -> ApiKey:
        """The key with this ID, or with this unique prefix of at least 4 characters."""
        return self._find(self.store.read(), key_id)

    @staticmethod
    def _find(keys: Records, key_id: str) -> ApiKey:
        if not isinstance(key_id, str) or not _ID_INPUT.fullmatch(key_id):
            # Never echo the input: a pasted token must not reach a terminal or log.
            raise KeyNotFound(
                "no such key: give the 12-character ID or a unique prefix of "
                f"{MIN_PREFIX}+ lowercase letters and digits"
            )
        exact = keys.get(key_id)
        if exact is not None:
            return exact
        found = keys.with_prefix(key_id)
        if not found:
            raise KeyNotFound(f"no key with ID or prefix {key_id!r}")
        if len(found) > 1:
            raise AmbiguousKey(
                f"prefix {key_id!r} matches {len(found)} keys: {', '.join(sorted(found))}; "
                "give more characters"
            )
        return keys[found[0]]

    # -- writing -------------------------------------------------------------------------

    def init(self, *, env_file: str | os.PathLike[str] | None = None) -> InitReport:
        """Create an empty store if there is none, and git-ignore the store (its directory,
        or the store, lock and audit files when they sit at the project root), ``env_file``
        and its temp files in ``./.gitignore`` when they lie below the current directory;
        then confirm with git that they are ignored."""
        store = self.store
        if not isinstance(store, JsonStore):
            from .stores.postgres import SCHEMA_VERSION, PostgresStore

            assert isinstance(store, PostgresStore)
            created = store.initialize()
            if created:
                self.audit.append("init", detail={"store": store.display})
            elif store.migrated_from is not None:
                self.audit.append("migrate_schema", detail={
                    "store": store.display, "from": store.migrated_from, "to": SCHEMA_VERSION})
            return InitReport(created=created, migrated_from=store.migrated_from)
        from .gitignore import add_entry, confirm_ignored

        if store.exists() or store.path.is_symlink():
            store.check_trusted()  # an unsafe store is refused, not reported "exists"
            store.read()  # a corrupt store is reported, not papered over
            created = False
        else:
            shadow = shadowed_store(store.path)
            if shadow is not None:
                warn("a store already exists at %s (a parent directory); creating a separate "
                     "one at %s", shadow, store.path)
            with store.transaction(create=True):
                pass
            self.audit.append("init", detail={"store": str(store.path)})
            created = True
        ignored = self._ignore_entries(store, env_file)
        added = tuple(entry for entry, _ in ignored if add_entry(entry))
        confirm_ignored([path for _, path in ignored])
        return InitReport(created=created, gitignored=added)

    def _ignore_entries(
        self, store: JsonStore, env_file: str | os.PathLike[str] | None
    ) -> builtins.list[tuple[str, Path]]:
        """(entry, path it must ignore) for every file that holds a secret or a digest."""
        from .atomic import temp_pattern
        from .gitignore import entry_for

        wanted: list[tuple[Path, bool]] = []
        audit = store.directory / "audit.log"
        if entry_for(store.directory, directory=True) is not None:
            wanted.append((store.directory, True))
        else:  # the store sits at the project root: ignore its files one by one
            for path in (store.path, store.lock_path, audit, audit.with_name("audit.log.head")):
                wanted.append((path, False))
            wanted.append((audit.with_name("audit.log.*"), False))
        if env_file is not None:
            env = Path(env_file)
            wanted.append((env, False))
            wanted.append((env.with_name(temp_pattern(env)), False))
        result = []
        for path, directory in wanted:
            entry = entry_for(path, directory=directory)
            if entry is None:
                continue
            if "*" in path.name:  # a pattern of ours: keep its wildcard
                entry = entry.replace("\\*", "*")
            probe = store.path if directory else path.with_name(path.name.replace("*", "0"))
            result.append((entry, probe))
        return result

    def create(
        self,
        name: str,
        *,
        description: str = "",
        scopes: Iterable[str] = (),
        expires_in: timedelta | None = DEFAULT_EXPIRES_IN,
        env_file: str | os.PathLike[str] | None = None,
        env_var: str = envfile.DEFAULT_KEY_VAR,
        follow_symlink: bool = False,
        resources: Iterable[str] = (),
    ) -> IssuedKey:
        """Issue a key; the plaintext is in the returned ``IssuedKey`` and nowhere else
        (and in ``env_file`` when given). ``expires_in=None`` means it never expires;
        ``resources`` binds it to those MCP server URLs (empty: valid at any server)."""
        name = check_text(name, "name", maximum=MAX_NAME)
        description = check_text(description, "description", maximum=MAX_DESCRIPTION,
                                 allow_empty=True)
        from .resources import check_resources  # urllib: only commands that bind need it

        granted = check_scopes(scopes)
        bound = check_resources(resources)
        _check_duration(expires_in, "expires_in")
        self._check_env(env_file, env_var, follow_symlink)
        if (isinstance(self.store, JsonStore) and not self.store.exists()
                and shadowed_store(self.store.path) is not None):
            raise self.missing_store()
        with self.store.transaction(create=True) as txn:
            issued = self._issue(txn, utcnow(), expires_in, name=name,
                                 description=description, scopes=granted, resources=bound)
            self._commit_with_env(txn, env_file, env_var, issued.key, follow_symlink)
        record = issued.record
        detail: dict[str, object] = {"scopes": list(granted),
                                     "expires_at": to_iso(record.expires_at)}
        if bound:
            detail["resources"] = list(bound)
        self.audit.append("create", key_id=record.id, name=name, detail=detail)
        self._audit_env(env_file, env_var, record)
        return issued

    def revoke(self, key_id: str, *, reason: str | None = None) -> ApiKey:
        """Mark a key revoked, keeping its record; revoking a revoked key changes nothing."""
        if reason is not None:
            reason = check_text(reason, "reason", maximum=MAX_REASON)
        with self.store.transaction() as txn:
            key = self._find(txn.keys, key_id)
            if key.revoked_at is not None:
                return key
            key = replace(key, revoked_at=utcnow(), revoke_reason=reason)
            txn.keys[key.id] = key
        self.audit.append("revoke", key_id=key.id, name=key.name, detail={"reason": reason})
        return key

    def delete(self, key_id: str) -> ApiKey:
        """Remove a key's record for good; it then validates as ``UNKNOWN``."""
        with self.store.transaction() as txn:
            key = self._find(txn.keys, key_id)
            _remove(txn.keys, key.id)
        self.audit.append("delete", key_id=key.id, name=key.name,
                          detail={"status": key.status.value})
        return key

    def rotate(
        self,
        key_id: str,
        *,
        grace: timedelta = timedelta(0),
        expires_in: timedelta | None = DEFAULT_EXPIRES_IN,
        env_file: str | os.PathLike[str] | None = None,
        env_var: str = envfile.DEFAULT_KEY_VAR,
        follow_symlink: bool = False,
    ) -> IssuedKey:
        """Issue a successor with the same name, description, scopes and resources.

        With no grace the old key is revoked (reason ``rotated``) at once; with a grace it
        stays valid until now + grace (never past its own expiry). One lock, one write.
        """
        _check_duration(grace, "grace", zero_ok=True)
        _check_duration(expires_in, "expires_in")
        self._check_env(env_file, env_var, follow_symlink)
        now = utcnow()
        with self.store.transaction() as txn:
            old = self._find(txn.keys, key_id)
            status = old.status_at(now)
            if old.rotated_to is not None:
                raise InvalidState(f"key {old.id} was already rotated to {old.rotated_to}; "
                                   f"rotate {old.rotated_to} instead")
            if status is not Status.ACTIVE:
                raise InvalidState(f"key {old.id} is {status.value}; only an active key can be "
                                   "rotated (create a new key instead)")
            issued = self._issue(txn, now, expires_in, name=old.name,
                                 description=old.description, scopes=old.scopes,
                                 resources=old.resources, rotated_from=old.id)
            new = issued.record
            if grace:
                end = now + grace if old.expires_at is None else min(now + grace, old.expires_at)
                old = replace(old, expires_at=end, rotated_to=new.id)
            else:
                old = replace(old, revoked_at=now, revoke_reason="rotated", rotated_to=new.id)
            txn.keys[old.id] = old
            self._commit_with_env(txn, env_file, env_var, issued.key, follow_symlink)
        self.audit.append("rotate", key_id=new.id, name=new.name, detail={
            "rotated_from": old.id,
            "grace": int(grace.total_seconds()),
            "old_valid_until": to_iso(old.revoked_at or old.expires_at),
            "expires_at": to_iso(new.expires_at),
        })
        self._audit_env(env_file, env_var, new)
        return issued

    def sweep(
        self,
        *,
        now: datetime | None = None,
        warn_within: timedelta = DEFAULT_WARN_WITHIN,
        purge_after: timedelta | None = None,
        dry_run: bool = False,
    ) -> SweepReport:
        """Record expirations (once), list keys expiring within ``warn_within`` (not keys in
        a rotation's grace period: their end is planned), and with ``purge_after`` delete
        records revoked or expired for at least that long."""
        _check_duration(warn_within, "warn_within", zero_ok=True)
        _check_duration(purge_after, "purge_after")
        now = now or utcnow()
        if dry_run or not self.store.exists():
            return self._sweep(self.store.read(), now, warn_within, purge_after, dry_run=dry_run)
        with self.store.transaction() as txn:
            report = self._sweep(txn.keys, now, warn_within, purge_after, dry_run=False)
        for key in report.expired:
            self.audit.append("expire", key_id=key.id, name=key.name,
                              detail={"expires_at": key.to_dict()["expires_at"]}, ts=now)
        for key in report.purged:
            self.audit.append("purge", key_id=key.id, name=key.name,
                              detail={"status": key.status_at(now).value}, ts=now)
        return report

    @staticmethod
    def _sweep(
        keys: Records,
        now: datetime,
        warn_within: timedelta,
        purge_after: timedelta | None,
        *,
        dry_run: bool,
    ) -> SweepReport:
        expired, expiring, purged = [], [], []
        for key in keys.all():
            status = key.status_at(now)
            if status is Status.EXPIRED and key.expiry_recorded_at is None:
                key = replace(key, expiry_recorded_at=now)
                keys[key.id] = key
                expired.append(key)
            elif key.expires_soon(now, warn_within):
                expiring.append(key)
            ended = key.ended_at(now)
            if purge_after is not None and ended is not None and now >= ended + purge_after:
                _remove(keys, key.id)
                purged.append(key)
        return SweepReport(now=now, expired=tuple(expired), expiring=tuple(expiring),
                           purged=tuple(purged), dry_run=dry_run)

    def set_required(self, env_file: str | os.PathLike[str], required: bool) -> bool:
        """Write ``API_KEY_REQUIRED=true|false`` into the .env; ``True`` if it changed."""
        value = "true" if required else "false"
        changed = envfile.set_variable(env_file, envfile.REQUIRED_VAR, value, secret=False)
        if changed:
            self.audit.append("require", detail={"env_file": str(env_file), "value": value})
        return changed

    # -- helpers -------------------------------------------------------------------------

    @staticmethod
    def _issue(txn: Transaction, now: datetime, expires_in: timedelta | None, *, name: str,
               description: str, scopes: tuple[str, ...], resources: tuple[str, ...] = (),
               rotated_from: str | None = None) -> IssuedKey:
        """A fresh key with an ID unused in the store, added to the transaction."""
        from . import tokens  # deferred with hashlib: read-only commands start faster

        key_id = tokens.generate_id()
        while key_id in txn.keys:
            key_id = tokens.generate_id()
        token = tokens.generate(key_id)
        record = ApiKey(id=key_id, name=name, digest=tokens.digest(token), created_at=now,
                        expires_at=None if expires_in is None else now + expires_in,
                        description=description, scopes=scopes, rotated_from=rotated_from,
                        resources=resources)
        txn.keys[key_id] = record
        return IssuedKey(key=token, record=record)

    @staticmethod
    def _check_env(env_file: str | os.PathLike[str] | None, env_var: str,
                   follow_symlink: bool) -> None:
        if env_file is not None:
            envfile.check_var_name(env_var)
            envfile.check_writable(env_file, follow_symlink=follow_symlink)

    @staticmethod
    def _commit_with_env(
        txn: Transaction, env_file: str | os.PathLike[str] | None, env_var: str, token: str,
        follow_symlink: bool,
    ) -> None:
        """The store and the .env change together: if the .env fails, the store is as it
        was."""
        if env_file is None:
            return

        def write_env() -> None:
            envfile.set_variable(env_file, env_var, token, follow_symlink=follow_symlink)

        txn.commit_with(write_env)

    def _audit_env(
        self, env_file: str | os.PathLike[str] | None, env_var: str, record: ApiKey
    ) -> None:
        if env_file is None:
            return
        from .gitignore import git_status

        self.audit.append("env_sync", key_id=record.id, name=record.name,
                          detail={"env_file": str(Path(env_file)), "variable": env_var})
        if git_status(Path(env_file)) in ("exposed", "tracked"):
            warn("%s is not git-ignored; a commit would leak the key "
                 "(mcp-keys init --env-file %s ignores it)", env_file, env_file)


def _remove(keys: Records, key_id: str) -> None:
    """Delete a record and every rotation link that names it, so no record ever points at
    one that does not exist."""
    del keys[key_id]
    for other in keys.linked_to(key_id):
        if key_id in (other.rotated_to, other.rotated_from):
            keys[other.id] = replace(
                other,
                rotated_to=None if other.rotated_to == key_id else other.rotated_to,
                rotated_from=None if other.rotated_from == key_id else other.rotated_from)
