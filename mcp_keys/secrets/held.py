"""Source credentials (``VAULT_TOKEN``, an ``env:`` reference's variable...) that a
long-running process took out of its environment: kept in memory for the sources that
still need them to refresh a secret, out of ``os.environ`` so that nothing started later
inherits them and ``getenv`` in any library finds nothing."""

from __future__ import annotations

import os
from collections.abc import Iterable

_held: dict[str, str] = {}


def getenv(name: str) -> str | None:
    """``name`` from the held credentials, else from the environment."""
    return _held[name] if name in _held else os.environ.get(name)


def hold(names: Iterable[str]) -> list[str]:
    """Move each of ``names`` that is set from ``os.environ`` into memory; the names moved."""
    moved = []
    for name in dict.fromkeys(names):
        value = os.environ.pop(name, None)
        if value is not None:
            _held[name] = value
            moved.append(name)
    return moved


def held_values() -> list[str]:
    """The values held (so that ``run --proxy`` can scrub them wherever else they show)."""
    return list(_held.values())
