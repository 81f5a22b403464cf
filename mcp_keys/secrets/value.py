"""``Secret``: a resolved upstream secret that does not show itself.

``repr``, ``str``, formatting and logging show ``Secret(<reference>, N chars)``; pickling
and copying to JSON are refused. ``reveal()`` is the one way to the value, so every use of
it is visible in the code that needs it.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: `mcp-keys run` must not import typing
if TYPE_CHECKING:
    from typing import Any, NoReturn


class Secret:
    """A secret value and the reference it came from."""

    __slots__ = ("_value", "reference")

    def __init__(self, value: str, reference: str) -> None:
        self._value = value
        self.reference = reference

    def reveal(self) -> str:
        """The value itself: pass it straight to the code that uses it, never to a log."""
        return self._value

    def __len__(self) -> int:
        return len(self._value)

    def __repr__(self) -> str:
        return f"Secret({self.reference!r}, {len(self._value)} chars)"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        import hmac

        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(self.reference)

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret cannot be pickled (it would carry the value)")

    def __getstate__(self) -> NoReturn:
        raise TypeError("a Secret cannot be pickled (it would carry the value)")

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Secret:
        return self
