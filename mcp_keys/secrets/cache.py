"""``SecretCache``: resolve each reference at most once per ``ttl``, ride out a source
that is briefly down, and pick up a secret rotated at the source without a restart.

A failed refresh is retried with exponential backoff and jitter; if it still fails, the
cached value is served for up to ``max_stale`` after it was fetched (one WARNING per
reference), then the error propagates. ``invalidate(ref)`` forces the next ``get`` to ask
the source: the answer to an upstream 401 (see ``with_refresh_on_401``).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from ..errors import SecretError, warn
from .value import Secret

T = TypeVar("T")


@dataclass(slots=True)
class _Cached:
    secret: Secret
    fetched: float
    warned: bool = False


class SecretCache:
    """Resolved secrets by reference, with a TTL and stale-on-error."""

    def __init__(self, ttl: float = 300.0, *, max_stale: float = 3600.0, retries: int = 3,
                 backoff: float = 0.1,
                 resolver: Callable[[str], Secret] | None = None) -> None:
        from . import resolve

        self.ttl = ttl
        self.max_stale = max_stale
        self.retries = retries
        self.backoff = backoff
        self._resolve = resolver or resolve
        self._entries: dict[str, _Cached] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SecretCache({len(self._entries)} references, ttl={self.ttl:g}s)"

    def get(self, ref: str) -> Secret:
        """The secret for ``ref``: cached while fresh, refreshed when not."""
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(ref)
        if entry is not None and now - entry.fetched < self.ttl:
            return entry.secret
        try:
            secret = self._fetch(ref)
        except SecretError as error:
            if entry is not None and now - entry.fetched < self.max_stale:
                if not entry.warned:
                    entry.warned = True
                    warn("serving the cached value of %s: the source is failing (%s)",
                         ref, error)
                return entry.secret
            raise
        with self._lock:
            self._entries[ref] = _Cached(secret, time.monotonic())
        return secret

    def invalidate(self, ref: str) -> None:
        """Forget ``ref``: the next ``get`` asks the source."""
        with self._lock:
            self._entries.pop(ref, None)

    def _fetch(self, ref: str) -> Secret:
        delay = self.backoff
        for attempt in range(self.retries):
            try:
                return self._resolve(ref)
            except SecretError:
                if attempt == self.retries - 1:
                    raise
                time.sleep(delay * (0.5 + random.random()))
                delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover


class _HasStatus(Protocol):
    @property
    def status_code(self) -> int: ...


R = TypeVar("R", bound=_HasStatus)


def with_refresh_on_401(cache: SecretCache, ref: str, call: Callable[[Secret], R]) -> R:
    """``call(secret)``; if the upstream answers 401, invalidate ``ref`` and call once more
    with a freshly resolved secret (a key rotated at the source needs no restart)."""
    response = call(cache.get(ref))
    if response.status_code != 401:
        return response
    cache.invalidate(ref)
    return call(cache.get(ref))
