"""``file:/path``: a file's contents (Docker and Kubernetes secrets), refused when group
or others can read it."""

from __future__ import annotations

import stat

from ...errors import SecretError
from ..reference import Reference


def from_file(ref: Reference) -> str:
    from ...safefs import read_regular

    try:
        found = read_regular(ref.target, limit=1024 * 1024)
    except OSError as exc:
        raise SecretError(f"file: cannot read {ref.target}: {exc.strerror}") from None
    except Exception as exc:
        raise SecretError(f"file: {exc}") from None
    if found is None:
        raise SecretError(f"file: {ref.target} does not exist")
    data, info = found
    if stat.S_IMODE(info.st_mode) & 0o077:
        raise SecretError(f"file: {ref.target} is readable by group or others (mode "
                          f"{stat.S_IMODE(info.st_mode):04o}); run: chmod 600 {ref.target}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretError(f"file: {ref.target} is not UTF-8 text") from None
    return text[:-1] if text.endswith("\n") else text
