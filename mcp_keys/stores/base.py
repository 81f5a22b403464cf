"""What every store offers KeyManager: records by ID, in one transaction.

``Records`` is a mapping of key ID to record. The JSON file backend holds all of them in
memory; the PostgreSQL backend answers each lookup, write and delete with one row-level
statement inside the transaction, so a write never reads or rewrites the whole table.
``with_prefix`` and ``linked_to`` have scanning defaults that a backend may answer with
an index instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Protocol

from ..models import ApiKey

if TYPE_CHECKING:
    from ..audit import AuditTrail


class Records(MutableMapping[str, ApiKey]):
    """Key ID -> record, with the two lookups KeyManager needs beyond a mapping."""

    def all(self) -> list[ApiKey]:
        """Every record, oldest first."""
        return sorted(self.values(), key=lambda k: (k.created_at, k.id))

    def with_prefix(self, prefix: str) -> list[str]:
        """The IDs that start with ``prefix``."""
        return [key_id for key_id in self if key_id.startswith(prefix)]

    def linked_to(self, key_id: str) -> list[ApiKey]:
        """Records whose rotation links name ``key_id``."""
        return [k for k in self.values() if key_id in (k.rotated_to, k.rotated_from)]


class DictRecords(Records):
    """Records held in a dict (the JSON backend, and snapshots)."""

    def __init__(self, data: dict[str, ApiKey] | None = None) -> None:
        self.data: dict[str, ApiKey] = dict(data or {})

    def __getitem__(self, key_id: str) -> ApiKey:
        return self.data[key_id]

    def __setitem__(self, key_id: str, record: ApiKey) -> None:
        self.data[key_id] = record

    def __delitem__(self, key_id: str) -> None:
        del self.data[key_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def __contains__(self, key_id: object) -> bool:
        return key_id in self.data

    def __eq__(self, other: object) -> bool:
        if isinstance(other, DictRecords):
            return self.data == other.data
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]


class Transaction(Protocol):
    """The records under the store's lock or in one database transaction."""

    @property
    def keys(self) -> Records:
        """The records, changed in place."""

    def commit_with(self, action: Callable[[], None]) -> None:
        """Make the changes durable together with ``action`` (a .env write): if
        ``action`` fails, the store is left as it was and the error propagates."""


class KeyStore(Protocol):
    """A place where key records live, chosen by ``open_store(location)``."""

    kind: str

    @property
    def display(self) -> str:
        """The location as it may be shown: a path, or a URL without its password."""

    def exists(self) -> bool: ...

    def check_trusted(self, *, reader: bool = False) -> None: ...

    def read(self) -> Records: ...

    def transaction(
        self, *, create: bool = False
    ) -> AbstractContextManager[Transaction, bool | None]: ...

    def audit_log(self) -> AuditTrail: ...
