"""``dotenv:PATH#NAME``: one variable of a .env file, read with python-dotenv."""

from __future__ import annotations

from ...errors import SecretError
from ..reference import Reference


def from_dotenv(ref: Reference) -> str:
    from dotenv import dotenv_values

    from ...safefs import read_regular

    try:
        found = read_regular(ref.target)
    except OSError as exc:
        raise SecretError(f"dotenv: cannot read {ref.target}: {exc.strerror}") from None
    if found is None:
        raise SecretError(f"dotenv: {ref.target} does not exist")
    import io

    values = dotenv_values(stream=io.StringIO(found[0].decode("utf-8", "replace")),
                           interpolate=False)
    value = values.get(ref.field or "")
    if value is None:
        raise SecretError(f"dotenv: {ref.field} is not set in {ref.target}")
    return value
