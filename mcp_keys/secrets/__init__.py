"""Upstream secrets as references (``env:``, ``dotenv:``, ``file:``, ``keyring:``,
``vault:``, ``aws-sm:``) resolved when needed, never stored in a config.

    from mcp_keys.secrets import resolve, SecretCache
    secret = resolve("vault:secret/stripe#api_key")     # Secret: repr shows no value
    secret.reveal()                                     # the value, for the one call
"""

from __future__ import annotations

from .reference import SCHEMES, Reference, is_reference, parse_reference
from .value import Secret

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: `mcp-keys run` must not import typing

if TYPE_CHECKING:
    from typing import Any

    from .cache import SecretCache, with_refresh_on_401

__all__ = ["SCHEMES", "Reference", "Secret", "SecretCache", "fingerprint", "is_reference",
           "parse_reference", "resolve", "with_refresh_on_401"]


def __getattr__(name: str) -> Any:
    """The cache is loaded on first use: ``mcp-keys run`` never needs it."""
    if name in ("SecretCache", "with_refresh_on_401"):
        from . import cache

        return getattr(cache, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def resolve(ref: str) -> Secret:
    """The secret ``ref`` names, or ``SecretError`` naming the reference and the source."""
    from .sources import read

    parsed = parse_reference(ref)
    return Secret(read(parsed), parsed.text)


def fingerprint(secret: Secret) -> str:
    """8 hex characters of an HMAC of the value under a salt kept on this host: enough to
    tell two values apart, useless for recovering one (it is not the value's hash)."""
    import hashlib
    import hmac

    return hmac.new(_host_salt(), secret.reveal().encode(), hashlib.sha256).hexdigest()[:8]


def _host_salt() -> bytes:
    import os
    import secrets as random_source
    from pathlib import Path

    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "mcp-keys"
    path = base / "fingerprint-salt"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    from ..safefs import make_private_dirs

    make_private_dirs(base)
    salt = random_source.token_bytes(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return path.read_bytes()
    with os.fdopen(fd, "wb") as handle:
        handle.write(salt)
    return salt
