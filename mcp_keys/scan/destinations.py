"""Where ``scan --fix`` puts a secret (``--to keyring``, ``dotenv:PATH``,
``vault:MOUNT/PATH``): never a keyring that keeps it in plaintext unless allowed, and
never over a different value already there."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from ..errors import McpKeysError, UsageError


def check_destination(destination: str, *, allow_plaintext: bool = False) -> None:
    """Refuse before anything moves: an unknown ``--to`` (a usage error), a destination
    whose extra is not installed (one line naming it, not a "Not fixed" per file), or a
    keyring that would keep the secret in plaintext."""
    if destination.startswith("vault:"):
        _require("vault", "hvac")
        return
    if destination != "keyring":
        if not destination.startswith("dotenv:"):
            raise UsageError(f"--to {destination!r}: use keyring, dotenv:PATH or "
                             "vault:MOUNT/PATH")
        return
    _require("keyring", "keyring")
    from ..errors import SecretError
    from ..secrets.sources.keyring import available, plaintext_reason, writer

    if not available():
        raise SecretError("keyring: no keychain backend on this machine; store the secret "
                          "elsewhere (--to dotenv:PATH or --to vault:PATH)")
    reason = plaintext_reason(writer())
    if reason is not None and not allow_plaintext:
        raise SecretError(f"keyring: {reason}; --fix never moves a secret somewhere weaker, "
                          "and nothing was changed. Use the OS keychain, --to dotenv:PATH or "
                          "--to vault:MOUNT/PATH, or give --allow-plaintext-keyring")


def _require(scheme: str, module: str) -> None:
    """Raise the one-line missing-extra error when ``module`` is not installed."""
    from importlib.util import find_spec

    if find_spec(module) is None:
        from ..secrets.reference import missing_extra

        raise missing_extra(scheme, module)


def store_secret(destination: str, server: str | None, variable: str, value: str, *,
                 allow_plaintext: bool = False) -> str:
    """Put ``value`` where ``destination`` says; return the reference that reads it. A
    place that already holds another value (a server of the same name in another file)
    is never overwritten: the next free name is used (``stripe-2``, ``VAR_2``)."""
    server = re.sub(r"[^A-Za-z0-9_.-]", "-", server or "server")
    if destination == "keyring":
        from ..secrets.reference import parse_reference
        from ..secrets.sources.keyring import store

        ref = _free(lambda n: f"keyring:mcp-keys/{server}{_nth(n, '-')}.{variable}", value)
        store(parse_reference(ref), value, allow_plaintext=allow_plaintext)
        return ref
    if destination.startswith("dotenv:"):
        from ..envfile import set_variable

        path = Path(destination[len("dotenv:"):]).expanduser().resolve()
        ref = _free(lambda n: f"dotenv:{path}#{variable}{_nth(n, '_')}", value)
        set_variable(path, ref.rpartition("#")[2], value)
        return ref
    if destination.startswith("vault:"):
        from ..secrets.reference import parse_reference
        from ..secrets.sources.vault import vault_path, write

        mount = destination[len("vault:"):].rstrip("/")
        ref = _free(lambda n: f"vault:{mount}/{server}{_nth(n, '-')}#{variable}", value)
        parsed = parse_reference(ref)
        write(*vault_path(parsed), parsed.field or variable, value)
        return ref
    raise UsageError(f"--to {destination!r}: use keyring, dotenv:PATH or vault:MOUNT/PATH")


def _nth(n: int, separator: str) -> str:
    return "" if n == 1 else f"{separator}{n}"


def _free(reference: Callable[[int], str], value: str) -> str:
    """The first of ``reference(1)``, ``reference(2)``, … that is empty or holds ``value``;
    a place that cannot be read is not taken for empty (the error stops the fix)."""
    import hmac

    for n in range(1, 1000):
        ref = reference(n)
        held = _held(ref)
        if held is None or hmac.compare_digest(held.encode(), value.encode()):
            return ref
    raise McpKeysError(f"no free name left for {reference(1)}")


def _held(ref: str) -> str | None:
    """What ``ref`` holds now, or ``None`` when nothing is there."""
    from ..errors import SecretError
    from ..secrets import parse_reference, resolve

    parsed = parse_reference(ref)
    if parsed.scheme == "keyring":
        from ..secrets.sources.keyring import writer

        service, _, user = parsed.target.rpartition("/")
        try:
            held: str | None = writer().get_password(service, user)  # type: ignore[attr-defined]
        except Exception as exc:  # any backend failure: do not guess that it is empty
            raise SecretError(f"keyring: {service}/{user}: {type(exc).__name__}") from None
        return held
    if parsed.scheme == "dotenv":
        from ..envfile import read_values

        try:
            found = read_values(parsed.target)
        except OSError as exc:
            raise SecretError(f"cannot read {parsed.target}: {exc.strerror}") from None
        return None if found is None else found.get(parsed.field or "")
    try:
        return resolve(ref).reveal()
    except SecretError as exc:
        if str(exc).endswith(" not found") or "has no text field" in str(exc):
            return None
        raise
