"""``keyring:SERVICE/USER``: the OS keychain through the ``keyring`` package; and the write
``secret set`` and ``scan --fix`` need."""

from __future__ import annotations

from ...errors import SecretError
from ..reference import Reference, missing_extra


def from_keyring(ref: Reference) -> str:
    try:
        import keyring
        import keyring.errors
    except ImportError:
        raise missing_extra("keyring", "keyring") from None
    service, _, user = ref.target.rpartition("/")
    try:
        value = keyring.get_password(service, user)
    except keyring.errors.KeyringError as exc:
        raise SecretError(f"keyring: {service}/{user}: {type(exc).__name__}: {exc}") from None
    if value is None:
        raise SecretError(f"keyring: no entry for service {service!r}, user {user!r}")
    return value


def available() -> bool:
    """Whether a real keychain backend is configured (not keyring's "fail" backend)."""
    try:
        import keyring
        from keyring.backends import fail
    except ImportError:
        return False
    return not isinstance(keyring.get_keyring(), fail.Keyring)


def store(ref: Reference, value: str) -> None:
    try:
        import keyring
        import keyring.errors
    except ImportError:
        raise missing_extra("keyring", "keyring") from None
    if not available():
        raise SecretError("keyring: no keychain backend on this machine; store the secret "
                          "elsewhere (--to dotenv:PATH or --to vault:PATH)")
    service, _, user = ref.target.rpartition("/")
    try:
        keyring.set_password(service, user, value)
    except keyring.errors.KeyringError as exc:
        raise SecretError(f"keyring: {service}/{user}: {type(exc).__name__}") from None
