"""The key format ``mcpk_<id>_<secret><checksum>``: generate, parse, checksum, digest.

Pure functions. The checksum lets a typo or a foreign string be rejected without touching
the store, and lets leak scanners recognise real keys; the digest is all the store keeps.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import zlib
from dataclasses import dataclass

PREFIX = "mcpk_"
ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
ID_LENGTH = 12
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
SECRET_LENGTH = 43  # 43 * log2(62) = 256.03 bits
CHECKSUM_LENGTH = 6
TOKEN_PATTERN = re.compile(r"^mcpk_[a-z0-9]{12}_[A-Za-z0-9]{49,}$")
TOKEN_SEARCH = re.compile(r"mcpk_[a-z0-9]{12}_[A-Za-z0-9]{49,}")  # for scanners: parse() decides
_PARTS = re.compile(r"mcpk_([a-z0-9]{12})_([A-Za-z0-9]{43,})([A-Za-z0-9]{6})")
MAX_TOKEN_LENGTH = 512


@dataclass(frozen=True, slots=True)
class ParsedToken:
    """A token that passed the format and checksum check; ``repr`` hides the secret."""

    key_id: str
    token: str

    def __repr__(self) -> str:
        return f"ParsedToken(key_id={self.key_id!r})"


def _base62(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, rem = divmod(number, 62)
        chars.append(BASE62[rem])
    return "".join(reversed(chars))


def checksum(body: str) -> str:
    """Six base62 characters encoding the CRC32 of ``body``."""
    return _base62(zlib.crc32(body.encode("ascii")), CHECKSUM_LENGTH)


def generate_id() -> str:
    """A fresh 12-character public key ID."""
    import secrets  # deferred: only issuing needs it, and it costs start-up time

    return "".join(secrets.choice(ID_ALPHABET) for _ in range(ID_LENGTH))


def generate(key_id: str | None = None) -> str:
    """A fresh token for ``key_id`` (or a new ID), with 256 bits of secret."""
    import secrets

    key_id = key_id or generate_id()
    secret = "".join(secrets.choice(BASE62) for _ in range(SECRET_LENGTH))
    body = f"{PREFIX}{key_id}_{secret}"
    return body + checksum(body)


def parse(token: str) -> ParsedToken | None:
    """The token's ID if its format and checksum are right, else ``None``."""
    if len(token) > MAX_TOKEN_LENGTH:
        return None
    match = _PARTS.fullmatch(token)
    if match is None:
        return None
    body = token[:-CHECKSUM_LENGTH]
    if not hmac.compare_digest(checksum(body), match.group(3)):
        return None
    return ParsedToken(key_id=match.group(1), token=token)


def digest(token: str) -> str:
    """The SHA-256 hex digest the store keeps in place of the token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def matches(token: str, stored_digest: str) -> bool:
    """Constant-time comparison of a token against a stored digest."""
    return hmac.compare_digest(digest(token), stored_digest)
