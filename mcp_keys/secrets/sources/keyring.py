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


# Backends known to keep what they store encrypted at rest (by the operating system's
# keychain, or with a key the user holds); any other backend counts as plaintext.
ENCRYPTING = frozenset({
    "keyring.backends.macOS.Keyring",
    "keyring.backends.Windows.WinVaultKeyring",
    "keyring.backends.SecretService.Keyring",
    "keyring.backends.libsecret.Keyring",
    "keyring.backends.kwallet.DBusKeyring",
    "keyring.backends.kwallet.DBusKeyringKWallet4",
    "keyrings.alt.file.EncryptedKeyring",
    "keyrings.alt.Windows.EncryptedKeyring",
    "keyrings.alt.Windows.RegistryKeyring",
    "keyrings.alt.Gnome.Keyring",
    "keyrings.cryptfile.cryptfile.CryptFileKeyring",
})


def backend_name(backend: object) -> str:
    """A backend's full class name (what ``PYTHON_KEYRING_BACKEND`` takes)."""
    kind = type(backend)
    return f"{kind.__module__}.{kind.__qualname__}"


def writer() -> object:
    """The one backend a write goes to: the configured backend, or for keyring's chainer
    its first (highest-priority) backend, so a write never falls through to another."""
    import keyring
    from keyring.backends import chainer

    backend = keyring.get_keyring()
    if isinstance(backend, chainer.ChainerBackend):
        chained = list(backend.backends)
        if chained:
            return chained[0]
    return backend


def plaintext_reason(backend: object) -> str | None:
    """Why ``backend`` is no safe home for a secret, or ``None`` when it encrypts."""
    name = backend_name(backend)
    if name in ENCRYPTING:
        return None
    where = getattr(backend, "file_path", None)
    if name == "keyrings.alt.file.PlaintextKeyring":
        return f"{name} keeps secrets in a plaintext file ({where})"
    return f"{name} is not a backend mcp-keys knows to encrypt what it stores"


def store(ref: Reference, value: str, *, allow_plaintext: bool = False) -> None:
    """Put ``value`` in the keychain; refused (``SecretError``, nothing written) when the
    backend would keep it in plaintext, unless ``allow_plaintext``."""
    try:
        import keyring
        import keyring.errors
    except ImportError:
        raise missing_extra("keyring", "keyring") from None
    if not available():
        raise SecretError("keyring: no keychain backend on this machine; store the secret "
                          "elsewhere (--to dotenv:PATH or --to vault:PATH)")
    backend = writer()
    reason = plaintext_reason(backend)
    if reason is not None and not allow_plaintext:
        raise SecretError(f"keyring: {reason}; nothing was stored there. Use the OS "
                          "keychain (or --to dotenv:PATH / --to vault:MOUNT/PATH), or give "
                          "--allow-plaintext-keyring to accept it")
    service, _, user = ref.target.rpartition("/")
    try:
        backend.set_password(service, user, value)  # type: ignore[attr-defined]
    except keyring.errors.KeyringError as exc:
        raise SecretError(f"keyring: {service}/{user}: {type(exc).__name__}") from None
