"""The records mcp-keys hands out: ApiKey, IssuedKey, ValidationResult, SweepReport.

Records are frozen dataclasses. Status is never stored: it is computed from the clock,
so a key past ``expires_at`` is ``expired`` everywhere before any sweep records it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

_DIGEST = re.compile(r"[0-9a-f]{64}")
_REQUIRED_TEXT = ("name", "digest", "created_at")
_OPTIONAL_TEXT = ("description", "expires_at", "revoked_at", "revoke_reason", "rotated_from",
                  "rotated_to", "expiry_recorded_at")


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def to_iso(moment: datetime | None) -> str | None:
    """ISO 8601 UTC with a ``Z`` suffix (``None`` passes through)."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def from_iso(text: str | None) -> datetime | None:
    """Parse what ``to_iso`` wrote; naive or malformed times are a ``ValueError``."""
    if text is None:
        return None
    if not isinstance(text, str):
        raise ValueError(f"expected a timestamp string, got {type(text).__name__}")
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no timezone")
    return moment.astimezone(UTC)


class Status(StrEnum):
    ACTIVE = "active"
    REVOKED = "revoked"
    EXPIRED = "expired"


class Reason(StrEnum):
    VALID = "VALID"
    MISSING = "MISSING"
    MALFORMED = "MALFORMED"
    UNKNOWN = "UNKNOWN"
    REVOKED = "REVOKED"
    EXPIRED = "EXPIRED"
    WRONG_RESOURCE = "WRONG_RESOURCE"
    INSUFFICIENT_SCOPE = "INSUFFICIENT_SCOPE"
    STORE_ERROR = "STORE_ERROR"


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One key's record. ``digest`` is the SHA-256 of the token; it never leaves the store."""

    id: str
    name: str
    digest: str = field(repr=False)
    created_at: datetime
    expires_at: datetime | None
    description: str = ""
    scopes: tuple[str, ...] = ()
    revoked_at: datetime | None = None
    revoke_reason: str | None = None
    rotated_from: str | None = None
    rotated_to: str | None = None
    expiry_recorded_at: datetime | None = None
    resources: tuple[str, ...] = ()  # canonical MCP server URLs; empty: valid anywhere

    def status_at(self, now: datetime) -> Status:
        """Revoked wins; otherwise expired from ``expires_at`` on (inclusive)."""
        if self.revoked_at is not None:
            return Status.REVOKED
        if self.expires_at is not None and now >= self.expires_at:
            return Status.EXPIRED
        return Status.ACTIVE

    @property
    def status(self) -> Status:
        return self.status_at(utcnow())

    def expires_soon(self, now: datetime, within: timedelta) -> bool:
        """Active, expiring within ``within``, and not already replaced by a rotation."""
        return (self.status_at(now) is Status.ACTIVE and self.rotated_to is None
                and self.expires_at is not None and self.expires_at <= now + within)

    def ended_at(self, now: datetime) -> datetime | None:
        """When the key stopped being usable (revocation or expiry), or ``None`` if active."""
        status = self.status_at(now)
        if status is Status.REVOKED:
            return self.revoked_at
        return self.expires_at if status is Status.EXPIRED else None

    def to_dict(self, now: datetime | None = None) -> dict[str, Any]:
        """The public record of DESIGN.md (``--json``): every field but the digest."""
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "scopes": list(self.scopes),
            "status": self.status_at(now or utcnow()).value,
            "created_at": to_iso(self.created_at),
            "expires_at": to_iso(self.expires_at),
            "revoked_at": to_iso(self.revoked_at),
            "revoke_reason": self.revoke_reason,
            "rotated_from": self.rotated_from,
            "rotated_to": self.rotated_to,
            "resources": list(self.resources),
        }

    def to_store(self) -> dict[str, Any]:
        """The stored form: the public record minus status, plus digest and bookkeeping."""
        data = self.to_dict()
        del data["status"], data["id"]
        data["digest"] = self.digest
        data["expiry_recorded_at"] = to_iso(self.expiry_recorded_at)
        if not self.resources:
            del data["resources"]  # a store with no bound key stays version 1
        return data

    @classmethod
    def from_store(cls, key_id: str, data: Any) -> ApiKey:
        """Rebuild a record from the store, raising ``ValueError`` on any schema breach."""
        if not isinstance(data, dict):
            raise ValueError(f"key {key_id!r} is not an object")
        for name in _REQUIRED_TEXT:
            if not isinstance(data.get(name), str):
                raise ValueError(f"key {key_id!r} lacks the text field {name!r}")
        for name in _OPTIONAL_TEXT:
            if not isinstance(data.get(name), str | None):
                raise ValueError(f"key {key_id!r} field {name!r} is not text or null")
        scopes = data.get("scopes", [])
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise ValueError(f"key {key_id!r} field 'scopes' is not a list of strings")
        resources = data.get("resources", [])
        if not isinstance(resources, list) or not all(isinstance(r, str) for r in resources):
            raise ValueError(f"key {key_id!r} field 'resources' is not a list of strings")
        if not _DIGEST.fullmatch(data["digest"]):
            raise ValueError(f"key {key_id!r} has a malformed digest")
        get = data.get
        return cls(
            id=key_id,
            name=data["name"],
            digest=data["digest"],
            created_at=from_iso(data["created_at"]),  # type: ignore[arg-type]
            expires_at=from_iso(get("expires_at")),
            description=get("description") or "",
            scopes=tuple(scopes),
            revoked_at=from_iso(get("revoked_at")),
            revoke_reason=get("revoke_reason"),
            rotated_from=get("rotated_from"),
            rotated_to=get("rotated_to"),
            expiry_recorded_at=from_iso(get("expiry_recorded_at")),
            resources=tuple(resources),
        )


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A newly issued key: the only object that ever holds the plaintext."""

    key: str = field(repr=False)
    record: ApiKey

    def __str__(self) -> str:
        return repr(self)


@dataclass(frozen=True, slots=True)
class ValidationResult:
    """The outcome of one validation; truthy only when the key is valid."""

    reason: Reason
    key_id: str | None = None
    name: str | None = None
    scopes: tuple[str, ...] = ()
    expires_at: datetime | None = None
    detail: str = ""
    resources: tuple[str, ...] = ()  # the servers the key is bound to (empty: any)

    @property
    def valid(self) -> bool:
        return self.reason is Reason.VALID

    def __bool__(self) -> bool:
        return self.valid

    def to_dict(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "reason": self.reason.value,
            "key_id": self.key_id,
            "name": self.name,
            "scopes": list(self.scopes),
            "expires_at": to_iso(self.expires_at),
            "resources": list(self.resources),
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class InitReport:
    """What ``init`` did: whether it created the store, and the .gitignore lines it added."""

    created: bool
    gitignored: tuple[str, ...] = ()
    migrated_from: int | None = None  # a PostgreSQL schema brought up to date


@dataclass(frozen=True, slots=True)
class SweepReport:
    """What one sweep did (or, with ``dry_run``, would do)."""

    now: datetime
    expired: tuple[ApiKey, ...] = ()
    expiring: tuple[ApiKey, ...] = ()
    purged: tuple[ApiKey, ...] = ()
    dry_run: bool = False

    @property
    def quiet(self) -> bool:
        """Nothing happened and nothing is about to: cron should send no mail."""
        return not (self.expired or self.expiring or self.purged)

    def to_dict(self) -> dict[str, Any]:
        return {
            "now": to_iso(self.now),
            "dry_run": self.dry_run,
            "expired": [k.to_dict(self.now) for k in self.expired],
            "expiring": [k.to_dict(self.now) for k in self.expiring],
            "purged": [k.to_dict(self.now) for k in self.purged],
        }
