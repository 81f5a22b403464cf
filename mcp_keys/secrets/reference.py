"""Secret references ``SCHEME:REST``, parsed once and checked before any source is asked."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import SecretError, UsageError

SCHEMES = ("env", "dotenv", "file", "keyring", "vault", "aws-sm")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_REFERENCE = re.compile(r"(env|dotenv|file|keyring|vault|aws-sm):(.+)", re.S)
EXTRAS = {"keyring": "keyring", "vault": "vault", "aws-sm": "aws"}


@dataclass(frozen=True, slots=True)
class Reference:
    """A parsed reference: ``scheme``, ``target`` (what to read), ``field`` (after ``#``)."""

    scheme: str
    target: str
    field: str | None
    text: str

    def __str__(self) -> str:
        return self.text


def is_reference(text: str) -> bool:
    """Whether ``text`` is a reference rather than a value (for ``scan`` and ``run``)."""
    match = _REFERENCE.fullmatch(text.strip())
    return match is not None and bool(match.group(2).strip())


def parse_reference(text: str) -> Reference:
    """Parse ``text``; a malformed reference is a ``UsageError`` naming it (a reference is
    not a secret, so it may be shown)."""
    if not isinstance(text, str):
        raise UsageError("a secret reference must be text")
    match = _REFERENCE.fullmatch(text.strip())
    if match is None or any(c in text for c in "\r\n\0"):
        raise UsageError(f"invalid secret reference {_shown(text)}: expected SCHEME:REST with "
                         f"SCHEME one of {', '.join(SCHEMES)} (e.g. env:STRIPE_KEY)")
    scheme, rest = match.group(1), match.group(2).strip()
    target, _, field = rest.partition("#")
    field_or_none = field or None
    text = text.strip()
    if scheme == "env":
        if not _ENV_NAME.fullmatch(rest):
            raise UsageError(f"invalid secret reference {text}: env:NAME takes a variable name")
        return Reference(scheme, rest, None, text)
    if scheme == "dotenv":
        if not target or not field or not _ENV_NAME.fullmatch(field):
            raise UsageError(f"invalid secret reference {text}: use dotenv:PATH#NAME")
        return Reference(scheme, target, field, text)
    if scheme == "file":
        if not rest:
            raise UsageError(f"invalid secret reference {text}: use file:/path/to/secret")
        return Reference(scheme, rest, None, text)
    if scheme == "keyring":
        service, _, user = rest.rpartition("/")
        if not service or not user:
            raise UsageError(f"invalid secret reference {text}: use keyring:SERVICE/USER")
        return Reference(scheme, rest, None, text)
    if scheme == "vault":
        mount, _, path = target.partition("/")
        if not mount or not path or not field:
            raise UsageError(f"invalid secret reference {text}: use vault:MOUNT/PATH#FIELD")
        return Reference(scheme, target, field, text)
    if not target:
        raise UsageError(f"invalid secret reference {text}: use aws-sm:NAME[#FIELD]")
    return Reference(scheme, target, field_or_none, text)


def _shown(text: str) -> str:
    """A bad reference may be a pasted secret: show its shape, never its content."""
    head = text.strip()[:4]
    return f"'{head}…' ({len(text)} characters)" if len(text) > 4 else repr(text)


def missing_extra(scheme: str, package: str) -> SecretError:
    extra = EXTRAS.get(scheme, scheme)
    return SecretError(f"{scheme}: references need {package}: pip install 'mcp-keys[{extra}]'")
