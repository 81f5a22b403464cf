"""Validator and validate_api_key: read-only, cached, fail-closed key checks for servers.

The parsed store is kept in memory, indexed by digest, and reloaded when the file changes
(stat compared at most once per ``refresh_interval``, and at once, at most every 50 ms,
when a well-formed key is unknown), so a revoke at the terminal reaches a running server
within a second and a key created elsewhere is accepted on its first use. A hit costs one
SHA-256 and a dict lookup: the digest of the whole token matching a stored digest proves
its format and checksum, so the token is parsed only on a miss.

Anything unexpected fails closed: a missing, unreadable, unsafe or corrupt store, or any
exception at all while loading or checking, answers ``STORE_ERROR`` until a good load.

On a PostgreSQL store nothing waits on the database for long: a validation refuses once
the watcher has had no answer for ``max_stale`` (checked here, not by the watcher), and
a key the snapshot does not know costs at most 250 ms (``pg_watch.LOOKUP_BOUND`` for the
look-up, ``pg_deferred.AUDIT_WAIT`` for its audit line). ``avalidate`` is the form for
an event loop: what could wait at all runs on a worker thread.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import os
import threading
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import tokens
from .audit import AuditLog
from .envfile import DEFAULT_KEY_VAR
from .models import ApiKey, Reason, ValidationResult
from .safefs import check_trusted, read_regular
from .stores import is_url
from .stores.jsonfile import parse, resolve_location, resolve_path

if TYPE_CHECKING:
    from .audit import AuditTrail
    from .stores.pg_deferred import DeferredTrail
    from .stores.pg_watch import PgWatcher

log = logging.getLogger("mcp_keys")
ENV_KEY_VAR = DEFAULT_KEY_VAR
ENV_FALLBACK_VAR = "MCP_KEYS_ENV_FALLBACK"
MAX_STALE_VAR = "MCP_KEYS_MAX_STALE"
DEFAULT_MAX_STALE = 30.0
FIRST_LOAD_WAIT = 10.0
AUDIT_LINES_PER_SECOND = 20
UNKNOWN_RECHECK_INTERVAL = 0.05
ENV_MODE_DETAIL = "environment mode (MCP_API_KEY): scopes were not checked"
PROVEN = frozenset({Reason.REVOKED, Reason.EXPIRED, Reason.WRONG_RESOURCE,
                    Reason.INSUFFICIENT_SCOPE})
_sha256 = hashlib.sha256
_compare = hmac.compare_digest
_MAX_TOKEN = tokens.MAX_TOKEN_LENGTH


def key_required() -> bool:
    """``API_KEY_REQUIRED=false`` (any case) turns the requirement off; anything else keeps it."""
    return os.environ.get("API_KEY_REQUIRED", "").strip().lower() != "false"


def env_fallback_enabled() -> bool:
    """``MCP_KEYS_ENV_FALLBACK=1`` (or ``true``/``yes``) opts in to environment mode."""
    return os.environ.get(ENV_FALLBACK_VAR, "").strip().lower() in ("1", "true", "yes")


@dataclass(frozen=True, slots=True)
class _Entry:
    """What a validation needs of one record, precomputed at load time."""

    digest: str
    revoked: bool
    usable_until: float  # -inf when revoked, +inf when it never expires
    scopes: frozenset[str]  # shared between records with the same scopes
    resources: frozenset[str]  # empty: valid at any server
    record: ApiKey
    valid: ValidationResult  # immutable, so one instance serves every successful call


@dataclass(frozen=True, slots=True)
class _State:
    """What validations read, swapped in one assignment so a reader never sees half of it."""

    by_digest: dict[str, _Entry] = field(default_factory=dict)
    error: str | None = None
    env_digest: str | None = None


@dataclass(slots=True)
class _Budget:
    """Audit lines allowed per second for one class of failure."""

    second: int = 0
    seen: set[tuple[str | None, Reason]] = field(default_factory=set)
    suppressed: int = 0


def _entry(key: ApiKey, shared: dict[frozenset[str], frozenset[str]]) -> _Entry:
    """One record's precomputed answer. Scope sets are shared between records, so a
    validation over a large store touches as little memory as the bare lookup does."""
    scopes = frozenset(key.scopes)
    revoked = key.revoked_at is not None
    if revoked:
        until = float("-inf")
    else:
        until = float("inf") if key.expires_at is None else key.expires_at.timestamp()
    return _Entry(
        digest=key.digest,
        revoked=revoked,
        usable_until=until,
        scopes=shared.setdefault(scopes, scopes),
        resources=frozenset(key.resources),
        record=key,
        valid=_result(Reason.VALID, key),
    )


def _result(reason: Reason, key: ApiKey) -> ValidationResult:
    return ValidationResult(reason, key_id=key.id, name=key.name, scopes=key.scopes,
                            expires_at=key.expires_at, resources=key.resources)


_LOADING_FAILED = ValidationResult(Reason.STORE_ERROR, detail="the key could not be checked")
_live: weakref.WeakSet[Validator] = weakref.WeakSet()
_abandoned: list[object] = []  # a forked child's copies of the parent's connections


def _max_stale(value: float | None) -> float:
    if value is not None:
        return value
    text = os.environ.get(MAX_STALE_VAR, "").strip()
    if not text:
        return DEFAULT_MAX_STALE
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1
    if not seconds >= 0:
        from .errors import UsageError

        raise UsageError(f"{MAX_STALE_VAR}={text!r} must be a number of seconds (0 or more)")
    return seconds


class Validator:
    """Validates tokens against one store; never takes the write lock, never writes it.

    ``env_fallback`` (default: ``MCP_KEYS_ENV_FALLBACK``) lets a validator with no store
    compare against ``MCP_API_KEY``; it is never entered once a store has been loaded,
    and it never satisfies a scope. On a PostgreSQL store, ``max_stale`` (default
    ``MCP_KEYS_MAX_STALE`` or 30 s) bounds how long the last snapshot is served after
    contact with the database is lost; 0 refuses at once.
    """

    def __init__(
        self,
        store: str | os.PathLike[str] | None = None,
        refresh_interval: float = 1.0,
        *,
        audit_failures: bool = True,
        env_fallback: bool | None = None,
        max_stale: float | None = None,
    ) -> None:
        location = resolve_location(store)
        self.refresh_interval = refresh_interval
        self.audit_failures = audit_failures
        self.env_fallback = env_fallback_enabled() if env_fallback is None else env_fallback
        self._audit: AuditTrail | DeferredTrail
        self._watcher: PgWatcher | None = None
        if is_url(location):
            from .stores.pg_deferred import DeferredTrail
            from .stores.postgres import PostgresStore

            self._pg: PostgresStore | None = PostgresStore(location)
            self.path: Path | None = None
            self.location = self._pg.display
            self.max_stale = _max_stale(max_stale)
            self._audit = DeferredTrail(self._pg.audit_log())
        else:
            self._pg = None
            self.path = resolve_path(location).absolute()
            self.location = str(self.path)
            self.max_stale = _max_stale(max_stale)
            self._audit = AuditLog(self.path.parent / "audit.log")
        self._loaded_once = False
        self._reset()
        _live.add(self)

    def _reset(self) -> None:
        """Fresh locks and state: at construction, and in a forked child (a lock another
        thread held at fork time would otherwise never be released there)."""
        self._lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._signature: tuple[int | str, ...] | str | None = "unloaded"
        self._next_check = float("-inf")
        self._next_recheck = float("-inf")
        self._state = _State(error="the store has not been loaded yet")
        self._budgets = {True: _Budget(), False: _Budget()}
        if self._pg is not None:
            if self._watcher is None:
                self._start_watching()
            else:  # a forked child: leave the parent's sockets alone, watch on first use
                self._watcher.stop()
                _abandoned.append(self._watcher)
                self._pg.abandon_connections(_abandoned)
                abandon = getattr(self._audit, "abandon_connections", None)
                if abandon is not None:
                    abandon(_abandoned)
                self._watcher = None
                self._next_check = float("-inf")

    def _start_watching(self, wait: float = FIRST_LOAD_WAIT) -> None:
        from .stores.pg_watch import PgWatcher

        assert self._pg is not None
        # The watcher pushes changes and moves _next_check on each answer (pg_contact);
        # only refresh_interval=0 asks the database per call.
        self._next_check = float("-inf")
        self._ids: dict[str, str] = {}
        self._shared: dict[frozenset[str], frozenset[str]] = {}
        self._watcher = PgWatcher(self._pg, self, max_stale=self.max_stale)
        # A URL that does not parse never loads: no point waiting for it.
        self._watcher.start(wait=0 if self._pg.problem else wait)

    def __repr__(self) -> str:
        return f"Validator({self.location!r}, refresh_interval={self.refresh_interval})"

    def close(self) -> None:
        """Stop watching a PostgreSQL store and close its connections (a file store holds
        nothing open). The validator then refuses every key."""
        if self._watcher is not None:
            self._watcher.close()
        close_audit = getattr(self._audit, "close", None)
        if close_audit is not None:
            close_audit()
        self._state = _State(error="the validator was closed")  # on purpose: no error log
        self._signature = "closed"

    # -- PostgreSQL: what the watcher pushes ---------------------------------------------

    def pg_snapshot(self, records: dict[str, ApiKey]) -> None:
        """A full load: replace the index (and clear any failure)."""
        shared: dict[frozenset[str], frozenset[str]] = {}
        by_digest = {key.digest: _entry(key, shared) for key in records.values()}
        with self._lock:
            if self._state.error is not None and self._loaded_once:
                log.warning("mcp-keys store %s is reachable again; validating normally",
                            self.location)
            self._ids = {key.id: key.digest for key in records.values()}
            self._shared = shared
            self._state = _State(by_digest)
            self._signature = ("postgresql",)
            self._loaded_once = True

    def pg_apply(self, upserts: list[ApiKey], deletes: list[str]) -> None:
        """Changed rows: update the index in place (one dict store per record)."""
        with self._lock:
            index = self._state.by_digest
            if self._state.error is not None:
                return  # the next reconnect reloads everything
            for key in upserts:
                index[key.digest] = _entry(key, self._shared)
                self._ids[key.id] = key.digest
            for key_id in deletes:
                digest = self._ids.pop(key_id, None)
                if digest is not None:
                    index.pop(digest, None)

    def pg_fail(self, message: str) -> None:
        with self._lock:
            self._fail(message, "postgresql-lost")

    def pg_contact(self, fresh_for: float) -> None:
        """The database answered: for ``fresh_for`` seconds a validation need not ask the
        watcher whether contact was lost (so the hot path stays a dict lookup)."""
        if self.refresh_interval != 0:
            self._next_check = time.monotonic() + fresh_for

    # -- loading -------------------------------------------------------------------------

    def refresh(self, *, force: bool = False) -> None:
        """Reload the store if it changed since the last look. Never raises: any failure
        leaves the validator failing closed. (A PostgreSQL store pushes its changes; with
        ``refresh_interval=0`` each call also asks the database for its change counter.)"""
        if self._pg is not None and self._watcher is None:
            from .stores.pg_watch import LOOKUP_BOUND

            with self._start_lock:  # not self._lock: the first snapshot takes that one
                if self._watcher is None:  # first use in a forked child: a bounded wait
                    self._start_watching(wait=LOOKUP_BOUND)
            return
        if self._watcher is not None:
            if self.refresh_interval == 0 or force:
                try:
                    self._watcher.sync()
                except Exception as exc:  # the database is away: check_fresh decides
                    log.debug("mcp-keys could not sync with PostgreSQL: %s",
                              type(exc).__name__)
            self._watcher.check_fresh()
            return
        now = time.monotonic()
        if not force and now < self._next_check:
            return
        with self._lock:
            if not force:  # a forced look (an unknown key) keeps the periodic schedule
                self._next_check = now + self.refresh_interval
            try:
                self._load()
            except Exception as exc:  # fail closed on anything, MemoryError included
                self._fail(f"cannot load store {self.path}: {type(exc).__name__}: {exc}",
                           f"exception:{type(exc).__name__}")

    def _load(self) -> None:
        from .errors import McpKeysError

        assert self.path is not None
        try:
            check_trusted(self.path, what="store", reader=True)
            found = read_regular(self.path)
        except McpKeysError as exc:
            self._fail(str(exc), f"unsafe:{exc}")
            return
        except OSError as exc:
            self._fail(f"cannot read store {self.path}: {exc.strerror}", f"os:{exc.errno}")
            return
        if found is None:
            self._load_missing()
            return
        raw, info = found
        signature = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
        if signature == self._signature:
            return
        try:
            keys = parse(raw, self.path)
        except McpKeysError as exc:
            self._fail(str(exc), signature)
            return
        if self._state.error is not None and self._loaded_once:
            log.warning("mcp-keys store %s is readable again; validating normally", self.path)
        shared: dict[frozenset[str], frozenset[str]] = {}
        self._state = _State({key.digest: _entry(key, shared) for key in keys.values()})
        self._signature = signature
        self._loaded_once = True

    def _load_missing(self) -> None:
        env_key = os.environ.get(ENV_KEY_VAR, "").strip()
        if self.env_fallback and not self._loaded_once and env_key:
            if self._signature != "env":
                log.warning("no mcp-keys store at %s; validating against %s (environment "
                            "mode: one key, no scopes, no revocation)", self.path, ENV_KEY_VAR)
            self._state = _State(env_digest=tokens.digest(env_key))
            self._signature = "env"
            return
        if self._loaded_once:
            message = f"the store at {self.path} has disappeared"
        elif self.env_fallback:
            message = f"no store at {self.path} and {ENV_KEY_VAR} is not set"
        else:
            message = (f"no store at {self.path} (run 'mcp-keys init', or set "
                       f"{ENV_FALLBACK_VAR}=1 to check {ENV_KEY_VAR} instead)")
        self._fail(message, "missing")

    def _fail(self, message: str, signature: tuple[int | str, ...] | str) -> None:
        """Fail closed; log once per change of state, not once per call."""
        if signature != self._signature:
            log.error("mcp-keys rejects every key: %s", message)
        self._state = _State(error=message)
        self._signature = signature

    # -- validating ----------------------------------------------------------------------

    def validate(self, token: str | None, scopes: Iterable[str] = (), *,
                 resource: str | None = None) -> ValidationResult:
        """Check a token: MISSING, MALFORMED, UNKNOWN, REVOKED, EXPIRED, WRONG_RESOURCE,
        INSUFFICIENT_SCOPE or VALID; STORE_ERROR when the store cannot be trusted or
        anything goes wrong. ``resource`` is the calling server's own URL in canonical
        form (``resources.canonical``): a key bound to other servers is WRONG_RESOURCE."""
        try:
            # The hot path, inlined: a hit is one SHA-256, one dict lookup, one compare.
            if time.monotonic() >= self._next_check:
                self.refresh()
            state = self._state
            if (state.error is None and state.env_digest is None and type(token) is str
                    and len(token) <= _MAX_TOKEN):
                digest = _sha256(token.encode()).hexdigest()
                entry = state.by_digest.get(digest)
                if entry is not None and _compare(digest, entry.digest):
                    return self._decide(entry, scopes, resource)
            return self._validate(token, scopes, resource, True)
        except Exception:  # fail closed, whatever happened
            log.exception("mcp-keys could not check a key; refusing it")
            return _LOADING_FAILED

    async def avalidate(self, token: str | None, scopes: Iterable[str] = (), *,
                        resource: str | None = None) -> ValidationResult:
        """``validate`` for code on an event loop (the SDK's and FastMCP's verifiers, the
        middleware): a valid key the snapshot holds is answered in place (a dict lookup);
        anything that could wait (a refresh, a database look-up, an audit line) runs on a
        worker thread, so the loop is never blocked."""
        wanted = tuple(scopes)
        try:
            accepted = self._accepted(token, wanted, resource)
        except Exception:  # validate() below fails closed and logs it
            accepted = None
        if accepted is not None:
            return accepted
        import anyio.to_thread

        return await anyio.to_thread.run_sync(
            functools.partial(self.validate, token, wanted, resource=resource))

    def _accepted(self, token: str | None, scopes: tuple[str, ...],
                  resource: str | None) -> ValidationResult | None:
        """The answer for a valid key, when the snapshot can give it with no I/O (no
        refresh due); ``None`` for everything else."""
        if (time.monotonic() >= self._next_check or type(token) is not str
                or len(token) > _MAX_TOKEN):
            return None
        state = self._state
        if state.error is not None or state.env_digest is not None:
            return None
        digest = _sha256(token.encode()).hexdigest()
        entry = state.by_digest.get(digest)
        if (entry is None or not _compare(digest, entry.digest)
                or time.time() >= entry.usable_until
                or (resource is not None and entry.resources
                    and resource not in entry.resources)
                or (scopes and not entry.scopes.issuperset(scopes))):
            return None
        return entry.valid

    def _validate(self, token: str | None, scopes: Iterable[str], resource: str | None,
                  may_recheck: bool) -> ValidationResult:
        """The full path: blank or padded tokens, environment mode, misses."""
        if not token or not isinstance(token, str):
            return ValidationResult(Reason.MISSING)
        token = token.strip()
        if not token:
            return ValidationResult(Reason.MISSING)
        state = self._state  # validate() refreshed it if it was due
        if state.error is not None:
            return ValidationResult(Reason.STORE_ERROR, detail=state.error)
        if len(token) > _MAX_TOKEN:
            return self._failed(ValidationResult(Reason.MALFORMED))
        digest = _sha256(token.encode()).hexdigest()
        if state.env_digest is not None:
            return self._validate_env(token, digest, state.env_digest, scopes)
        entry = state.by_digest.get(digest)
        if entry is None or not _compare(digest, entry.digest):
            return self._miss(token, scopes, resource, may_recheck)
        return self._decide(entry, scopes, resource)

    def _decide(self, entry: _Entry, scopes: Iterable[str],
                resource: str | None) -> ValidationResult:
        """An authentic key: revoked, expired, bound elsewhere, out of scope, or valid."""
        if time.time() >= entry.usable_until:
            reason = Reason.REVOKED if entry.revoked else Reason.EXPIRED
            return self._failed(_result(reason, entry.record))
        if resource is not None and entry.resources and resource not in entry.resources:
            return self._failed(_result(Reason.WRONG_RESOURCE, entry.record))
        if scopes and not entry.scopes.issuperset(scopes):
            return self._failed(_result(Reason.INSUFFICIENT_SCOPE, entry.record))
        return entry.valid

    def _miss(self, token: str, scopes: Iterable[str], resource: str | None,
              may_recheck: bool) -> ValidationResult:
        """No stored digest matches: malformed, or a key this snapshot does not know (it
        may have been created a moment ago: look again, at most every 50 ms)."""
        parsed = tokens.parse(token)
        if parsed is None:
            return self._failed(ValidationResult(Reason.MALFORMED))
        now = time.monotonic()
        if may_recheck and now >= self._next_recheck:
            self._next_recheck = now + UNKNOWN_RECHECK_INTERVAL
            if self._recheck(parsed.key_id):
                return self._validate(token, scopes, resource, False)
        return self._failed(ValidationResult(Reason.UNKNOWN, key_id=parsed.key_id))

    def _recheck(self, key_id: str) -> bool:
        """Look at the store again for a key the snapshot does not know; ``True`` if the
        snapshot changed."""
        if self._watcher is None:
            before = self._state
            self.refresh(force=True)
            return self._state is not before
        if self.refresh_interval == 0:
            return False  # refresh() has just caught up with every change
        try:
            record = self._watcher.lookup(key_id)
        except Exception:  # the database is away or slow: the key stays unknown (refused)
            return False
        if record is None or self._ids.get(record.id) == record.digest:
            return False
        self.pg_apply([record], [])
        return True

    def _validate_env(self, token: str, digest: str, env_digest: str,
                      scopes: Iterable[str]) -> ValidationResult:
        parsed = tokens.parse(token)
        if not _compare(digest, env_digest):
            reason = Reason.MALFORMED if parsed is None else Reason.UNKNOWN
            return ValidationResult(reason, key_id=None if parsed is None else parsed.key_id)
        key_id = None if parsed is None else parsed.key_id
        if tuple(scopes):
            return ValidationResult(Reason.INSUFFICIENT_SCOPE, key_id=key_id,
                                    detail="environment mode (MCP_API_KEY) grants no scopes")
        return ValidationResult(Reason.VALID, key_id=key_id, detail=ENV_MODE_DETAIL)

    def _failed(self, result: ValidationResult) -> ValidationResult:
        """Audit a failure: at most one line per key ID and reason per second, and at most
        ``AUDIT_LINES_PER_SECOND`` per second for each of two budgets, so failures that
        proved the secret (revoked, expired, out of scope) are never crowded out by
        unknown or malformed noise. What is held back is counted in a ``suppressed`` line
        the next second."""
        if not self.audit_failures or not isinstance(self._signature, tuple):
            return result
        proven = result.reason in PROVEN
        second = int(time.time())
        with self._lock:
            budget = self._budgets[proven]
            suppressed = 0
            if budget.second != second:
                budget.second, budget.seen = second, set()
                suppressed, budget.suppressed = budget.suppressed, 0
            pair = (result.key_id, result.reason)
            if pair in budget.seen:
                return result
            if len(budget.seen) >= AUDIT_LINES_PER_SECOND:
                budget.suppressed += 1
                return result
            budget.seen.add(pair)
        if suppressed:
            self._audit.append("validation_failed", detail={
                "suppressed": suppressed, "class": "proven" if proven else "unproven"})
        self._audit.append("validation_failed", key_id=result.key_id, name=result.name,
                           detail={"reason": result.reason.value})
        return result


_validators: dict[str, Validator] = {}
_validators_lock = threading.Lock()


def _after_fork_in_child() -> None:
    global _validators_lock
    _validators_lock = threading.Lock()
    for validator in list(_live):
        validator._reset()


os.register_at_fork(after_in_child=_after_fork_in_child)


def get_validator(store: str | os.PathLike[str] | None = None) -> Validator:
    """The one cached Validator for this store (path or URL)."""
    location = resolve_location(store)
    key = location if is_url(location) else str(Path(location).absolute())
    with _validators_lock:
        validator = _validators.get(key)
        if validator is None:
            validator = _validators[key] = Validator(key)
        return validator


def validate_api_key(
    token: str | None, *, store: str | os.PathLike[str] | None = None,
    scopes: Iterable[str] = (), resource: str | None = None,
) -> ValidationResult:
    """Validate ``token`` with the cached Validator of ``store`` (default: the resolved
    store); ``resource`` is this server's URL, canonicalised here."""
    if resource is not None:
        from .resources import canonical

        resource = canonical(resource)
    return get_validator(store).validate(token, scopes, resource=resource)
