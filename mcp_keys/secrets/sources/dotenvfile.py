"""``dotenv:PATH#NAME``: one variable of a .env file, read with python-dotenv."""

from __future__ import annotations

from ...errors import McpKeysError, SecretError
from ..reference import Reference


def from_dotenv(ref: Reference) -> str:
    from ...envfile import read_values

    try:
        values = read_values(ref.target)
    except OSError as exc:
        raise SecretError(f"dotenv: cannot read {ref.target}: {exc.strerror}") from None
    except McpKeysError as exc:
        raise SecretError(f"dotenv: {exc}") from None
    if values is None:
        raise SecretError(f"dotenv: {ref.target} does not exist")
    value = values.get(ref.field or "")
    if value is None:
        raise SecretError(f"dotenv: {ref.field} is not set in {ref.target}")
    return value
