"""``env:NAME``: the process environment."""

from __future__ import annotations

import os

from ...errors import SecretError
from ..reference import Reference


def from_env(ref: Reference) -> str:
    value = os.environ.get(ref.target)
    if value is None:
        raise SecretError(f"env: {ref.target} is not set")
    return value
