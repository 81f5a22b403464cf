"""``env:NAME``: the process environment."""

from __future__ import annotations

from ...errors import SecretError
from ..held import getenv
from ..reference import Reference


def from_env(ref: Reference) -> str:
    value = getenv(ref.target)
    if value is None:
        raise SecretError(f"env: {ref.target} is not set")
    return value
