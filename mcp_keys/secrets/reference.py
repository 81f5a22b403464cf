"""Secret references ``SCHEME:REST``, parsed once and checked before any source is asked."""

from __future__ import annotations

from ..errors import SecretError, UsageError

SCHEMES = ("env", "dotenv", "file", "keyring", "vault", "aws-sm")
EXTRAS = {"keyring": "keyring", "vault": "vault", "aws-sm": "aws"}


class Reference:
    """A parsed reference: ``scheme``, ``target`` (what to read), ``field`` (after ``#``).
    A plain class rather than a dataclass: ``mcp-keys run`` parses references on its fast
    path, where importing ``dataclasses`` (and ``inspect``, ``typing``) would cost more
    than the whole launch."""

    __slots__ = ("field", "scheme", "target", "text")

    def __init__(self, scheme: str, target: str, field: str | None, text: str) -> None:
        self.scheme, self.target, self.field, self.text = scheme, target, field, text

    def __repr__(self) -> str:
        return f"Reference({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Reference) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __str__(self) -> str:
        return self.text


def is_variable_name(name: str) -> bool:
    """``[A-Za-z_][A-Za-z0-9_]*`` (string methods, not ``re``: see ``Reference``)."""
    return name.isascii() and name.isidentifier()


def _split(text: str) -> tuple[str, str] | None:
    scheme, sep, rest = text.strip().partition(":")
    return (scheme, rest.strip()) if sep and scheme in SCHEMES and rest.strip() else None


def is_reference(text: str) -> bool:
    """Whether ``text`` is a reference rather than a value (for ``scan`` and ``run``)."""
    return isinstance(text, str) and _split(text) is not None


def parse_reference(text: str) -> Reference:
    """Parse ``text``; a malformed reference is a ``UsageError`` naming it (a reference is
    not a secret, so it may be shown)."""
    if not isinstance(text, str):
        raise UsageError("a secret reference must be text")
    parts = _split(text)
    if parts is None or any(c in text for c in "\r\n\0"):
        raise UsageError(f"invalid secret reference {_shown(text)}: expected SCHEME:REST with "
                         f"SCHEME one of {', '.join(SCHEMES)} (e.g. env:STRIPE_KEY)")
    scheme, rest = parts
    target, _, field = rest.partition("#")
    field_or_none = field or None
    text = text.strip()
    if scheme == "env":
        if not is_variable_name(rest):
            raise UsageError(f"invalid secret reference {text}: env:NAME takes a variable name")
        return Reference(scheme, rest, None, text)
    if scheme == "dotenv":
        if not target or not field or not is_variable_name(field):
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


def shown(text: str) -> str:
    """How a reference may be printed: as written if it is one, else only its shape (a
    bad reference may be a pasted secret)."""
    return text.strip() if is_reference(text) else _shown(text)


def _shown(text: str) -> str:
    """A bad reference may be a pasted secret: show its shape, never its content."""
    head = text.strip()[:4]
    return f"'{head}…' ({len(text)} characters)" if len(text) > 4 else repr(text)


def missing_extra(scheme: str, package: str) -> SecretError:
    from ..extras import install_hint

    extra = EXTRAS.get(scheme, scheme)
    return SecretError(f"{scheme}: references need {package}: {install_hint(extra)}")
