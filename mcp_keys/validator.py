"""Validator and validate_api_key: read-only, cached, fail-closed key checks for servers.

The parsed store is kept in memory and reloaded when the file changes (stat compared at
most once per ``refresh_interval``), so a revoke at the terminal reaches a running server
within a second while a validation costs a parse, a dict lookup and one SHA-256.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from . import tokens
from .audit import AuditLog
from .envfile import DEFAULT_KEY_VAR
from .errors import McpKeysError
from .models import ApiKey, Reason, ValidationResult
from .store import parse, resolve_path

log = logging.getLogger("mcp_keys")
ENV_KEY_VAR = DEFAULT_KEY_VAR
_DUMMY_DIGEST = tokens.digest("mcpk_000000000000_not-a-key")
AUDIT_LINES_PER_SECOND = 20
ENV_MODE_DETAIL = "environment mode (MCP_API_KEY): scopes were not checked"


def key_required() -> bool:
    """``API_KEY_REQUIRED=false`` (any case) turns the requirement off; anything else keeps it."""
    return os.environ.get("API_KEY_REQUIRED", "").strip().lower() != "false"


@dataclass(frozen=True, slots=True)
class _Entry:
    """What a validation needs of one record, precomputed at load time."""

    digest: str
    revoked: bool
    expires_ts: float | None
    scopes: frozenset[str]
    record: ApiKey
    valid: ValidationResult  # immutable, so one instance serves every successful call


@dataclass(frozen=True, slots=True)
class _State:
    """What validations read, swapped in one assignment so a reader never sees half of it."""

    index: dict[str, _Entry]
    error: str | None = None
    env_digest: str | None = None


def _entry(key: ApiKey) -> _Entry:
    return _Entry(
        digest=key.digest,
        revoked=key.revoked_at is not None,
        expires_ts=None if key.expires_at is None else key.expires_at.timestamp(),
        scopes=frozenset(key.scopes),
        record=key,
        valid=_result(Reason.VALID, key),
    )


def _result(reason: Reason, key: ApiKey) -> ValidationResult:
    return ValidationResult(reason, key_id=key.id, name=key.name, scopes=key.scopes,
                            expires_at=key.expires_at)


class Validator:
    """Validates tokens against one store; never takes the write lock, never writes it."""

    def __init__(
        self,
        store: str | os.PathLike[str] | None = None,
        refresh_interval: float = 1.0,
        *,
        audit_failures: bool = True,
    ) -> None:
        self.path = resolve_path(store).absolute()
        self.refresh_interval = refresh_interval
        self.audit_failures = audit_failures
        self._audit = AuditLog(self.path.parent / "audit.log")
        self._lock = threading.Lock()
        self._signature: tuple[int, int, int] | str | None = "unloaded"
        self._next_check = float("-inf")
        self._state = _State({})
        self._audit_second = 0
        self._audited: set[tuple[str | None, Reason]] = set()
        self._suppressed = 0

    def __repr__(self) -> str:
        return f"Validator({str(self.path)!r}, refresh_interval={self.refresh_interval})"

    # -- loading -------------------------------------------------------------------------

    def refresh(self, *, force: bool = False) -> None:
        """Reload the store if its inode, size or mtime changed since the last look."""
        now = time.monotonic()
        if not force and now < self._next_check:
            return
        with self._lock:
            self._next_check = now + self.refresh_interval
            try:
                with open(self.path, "rb") as handle:
                    info = os.fstat(handle.fileno())
                    signature: tuple[int, int, int] | str = (
                        info.st_ino, info.st_size, info.st_mtime_ns)
                    if signature == self._signature:
                        return
                    raw = handle.read()
            except FileNotFoundError:
                self._load_missing()
                return
            except OSError as exc:
                self._fail(f"cannot read store {self.path}: {exc.strerror}", f"os:{exc.errno}")
                return
            try:
                keys = parse(raw, self.path)
            except McpKeysError as exc:
                self._fail(str(exc), signature)
                return
            if self._state.error is not None:
                log.warning("mcp-keys store %s is readable again; validating normally", self.path)
            self._state = _State({key_id: _entry(key) for key_id, key in keys.items()})
            self._signature = signature

    def _load_missing(self) -> None:
        env_key = os.environ.get(ENV_KEY_VAR, "").strip()
        if env_key:
            if self._signature != "env":
                log.info("no mcp-keys store at %s; validating against %s", self.path, ENV_KEY_VAR)
            self._state = _State({}, env_digest=tokens.digest(env_key))
            self._signature = "env"
            return
        self._fail(f"no store at {self.path} and {ENV_KEY_VAR} is not set", "missing")

    def _fail(self, message: str, signature: tuple[int, int, int] | str) -> None:
        """Fail closed; log once per change of state, not once per call."""
        if signature != self._signature:
            log.error("mcp-keys rejects every key: %s", message)
        self._state = _State({}, error=message)
        self._signature = signature

    # -- validating ----------------------------------------------------------------------

    def validate(self, token: str | None, scopes: Iterable[str] = ()) -> ValidationResult:
        """Check a token: MISSING, MALFORMED, UNKNOWN, REVOKED, EXPIRED, INSUFFICIENT_SCOPE
        or VALID, in that order; STORE_ERROR when the store cannot be read."""
        token = token.strip() if token else ""
        if not token:
            return ValidationResult(Reason.MISSING)
        parsed = tokens.parse(token)
        if parsed is None:
            return self._failed(ValidationResult(Reason.MALFORMED))
        if time.monotonic() >= self._next_check:
            self.refresh()
        state = self._state
        if state.error is not None:
            return ValidationResult(Reason.STORE_ERROR, detail=state.error)
        if state.env_digest is not None:
            if tokens.matches(token, state.env_digest):
                return ValidationResult(Reason.VALID, key_id=parsed.key_id, detail=ENV_MODE_DETAIL)
            return ValidationResult(Reason.UNKNOWN, key_id=parsed.key_id)
        entry = state.index.get(parsed.key_id)
        # Unknown ID and wrong secret cost the same and answer the same.
        if not tokens.matches(token, entry.digest if entry else _DUMMY_DIGEST) or entry is None:
            return self._failed(ValidationResult(Reason.UNKNOWN, key_id=parsed.key_id))
        if entry.revoked:
            return self._failed(_result(Reason.REVOKED, entry.record))
        if entry.expires_ts is not None and time.time() >= entry.expires_ts:
            return self._failed(_result(Reason.EXPIRED, entry.record))
        if scopes and not entry.scopes.issuperset(scopes):
            return self._failed(_result(Reason.INSUFFICIENT_SCOPE, entry.record))
        return entry.valid

    def _failed(self, result: ValidationResult) -> ValidationResult:
        """Audit a failure: at most one line per key ID and reason per second, and at most
        ``AUDIT_LINES_PER_SECOND`` in all (random IDs must not fill the disk either); what
        is held back is counted in a ``suppressed`` line the next second."""
        if not self.audit_failures or self._state.error is not None \
                or self._signature in ("env", "unloaded"):
            return result
        second = int(time.time())
        with self._lock:
            suppressed = 0
            if self._audit_second != second:
                self._audit_second, self._audited = second, set()
                suppressed, self._suppressed = self._suppressed, 0
            pair = (result.key_id, result.reason)
            if pair in self._audited:
                return result
            if len(self._audited) >= AUDIT_LINES_PER_SECOND:
                self._suppressed += 1
                return result
            self._audited.add(pair)
        if suppressed:
            self._audit.append("validation_failed", detail={"suppressed": suppressed})
        self._audit.append("validation_failed", key_id=result.key_id, name=result.name,
                           detail={"reason": result.reason.value})
        return result


_validators: dict[Path, Validator] = {}
_validators_lock = threading.Lock()


def get_validator(store: str | os.PathLike[str] | None = None) -> Validator:
    """The one cached Validator for this store path."""
    path = resolve_path(store).absolute()
    with _validators_lock:
        validator = _validators.get(path)
        if validator is None:
            validator = _validators[path] = Validator(path)
        return validator


def validate_api_key(
    token: str | None, *, store: str | os.PathLike[str] | None = None, scopes: Iterable[str] = ()
) -> ValidationResult:
    """Validate ``token`` with the cached Validator of ``store`` (default: the resolved store)."""
    return get_validator(store).validate(token, scopes)
