"""A frozen, slotted record for the scan's findings and candidates, without ``dataclasses``.

``import dataclasses`` pulls in ``inspect`` (and ``ast``, ``dis``, ``tokenize`` …): about
10 ms of every ``mcp-keys scan``, a quarter of the time it takes to read and parse 1,000
configs. ``Record`` gives what those records used from a frozen dataclass: equality and
a hash over the compared fields, a ``repr`` that leaves out some (a secret's
value), no assignment after ``__init__``, and ``replace``.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: the scan path does not import typing
if TYPE_CHECKING:
    from typing import Any, Self


class Record:
    """Subclasses list their fields in ``_fields`` (in order) and make them their
    ``__slots__``; ``_unshown`` names those left out of ``repr``, ``_uncompared`` those
    left out of equality and hashing."""

    __slots__ = ()
    _fields: tuple[str, ...] = ()
    _unshown: frozenset[str] = frozenset()
    _uncompared: frozenset[str] = frozenset()

    def _set(self, **values: Any) -> None:
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}")

    def _compared(self) -> tuple[object, ...]:
        skip = self._uncompared
        return tuple(getattr(self, name) for name in self._fields if name not in skip)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Record)
        return self._compared() == other._compared()

    def __hash__(self) -> int:
        return hash(self._compared())

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields
                          if name not in self._unshown)
        return f"{type(self).__name__}({shown})"

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes`` (as ``dataclasses.replace``)."""
        values = {name: getattr(self, name) for name in self._fields}
        unknown = set(changes) - set(values)
        if unknown:
            raise TypeError(f"no such field: {', '.join(sorted(unknown))}")
        values.update(changes)
        return type(self)(**values)
