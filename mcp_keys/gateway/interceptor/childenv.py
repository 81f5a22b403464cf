"""The environment of the command ``run --proxy`` starts: built from an allow-list, never
copied from ours. The command gets what a program needs to run at all (``BASE``, the
locale categories ``LC_*``), each only when its value has that variable's shape (a locale
name, a terminal name, absolute paths...), the proxy and trust variables, its
placeholders, and the variables the operator names with ``--pass-env``; never a source
credential (``VAULT_*``, ``AWS_*``, ``PGPASSWORD``), mcp-keys' own (``MCP_KEYS_*``,
``MCP_API_KEY``), a variable a reference names, or any variable whose value holds a
credential we know of, raw or encoded (URL, hex, base64)."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import unquote, unquote_plus, urlsplit

from ...errors import UsageError
from ...secrets.reference import is_variable_name

BASE = ("PATH", "HOME", "LANG", "LANGUAGE", "TERM", "TZ", "USER", "LOGNAME", "SHELL",
        "TMPDIR")
LOCALE_CATEGORIES = ("LC_ALL", "LC_ADDRESS", "LC_COLLATE", "LC_CTYPE", "LC_IDENTIFICATION",
                     "LC_MEASUREMENT", "LC_MESSAGES", "LC_MONETARY", "LC_NAME", "LC_NUMERIC",
                     "LC_PAPER", "LC_TELEPHONE", "LC_TIME")
FORBIDDEN_PREFIXES = ("VAULT_", "AWS_", "MCP_KEYS_")
FORBIDDEN = ("MCP_API_KEY", "PGPASSWORD", "PGPASSFILE")  # PG*: a PostgreSQL store's login

_LOCALE = r"(?:C|POSIX|[a-z]{2,3}(?:_[A-Z]{2})?)(?:\.[A-Za-z0-9-]{1,16})?(?:@[a-z]{1,16})?"
_PATH = r"/[^\0:]{0,4095}"
SHAPES: dict[str, Callable[[str], object]] = {  # what each BASE value must look like
    "PATH": re.compile(rf"(?:{_PATH})?(?::(?:{_PATH})?)*").fullmatch,
    "HOME": re.compile(_PATH).fullmatch, "SHELL": re.compile(_PATH).fullmatch,
    "TMPDIR": re.compile(_PATH).fullmatch,
    "LANG": re.compile(f"(?:{_LOCALE})?").fullmatch,
    "LANGUAGE": re.compile(f"(?:{_LOCALE})?(?::{_LOCALE})*").fullmatch,
    "TERM": re.compile(r"[A-Za-z0-9][A-Za-z0-9.+_-]{0,31}").fullmatch,
    "TZ": re.compile(r":?[A-Za-z0-9/_+,.:<>-]{0,64}").fullmatch,
    "USER": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}\$?").fullmatch,
    "LOGNAME": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}\$?").fullmatch,
    **dict.fromkeys(LOCALE_CATEGORIES, re.compile(f"(?:{_LOCALE})?").fullmatch)}
_CREDENTIAL_WORDS = re.compile(r"TOKEN|SECRET|KEY|PASS|PWD|CRED|AUTH|SESSION|ROLE_ID|"
                               r"PRIVATE|SIGNATURE")
SHORTEST = 8  # a known credential shorter than this is not searched for in other values


def forbidden(name: str) -> bool:
    """Whether ``name`` is a credential's variable no child is ever given (in any case:
    some tools read ``vault_token`` as well)."""
    upper = name.upper()
    return upper in FORBIDDEN or upper.startswith(FORBIDDEN_PREFIXES)


def referenced_variables(services: Iterable[Any]) -> list[str]:
    """Every variable an ``env:`` reference of ``services`` names: an HTTP service's
    ``secret`` and an exec service's ``secret_env`` alike, parsed (``env: X`` is ``X``).
    What ``run --proxy`` should pass as ``named_by_references``."""
    from ...secrets.reference import parse_reference

    names = []
    for service in services:
        for text in (service.secret, *(ref for _, ref in service.secret_env)):
            if text and parse_reference(text).scheme == "env":
                names.append(parse_reference(text).target)
    return names


def _names(named_by_references: Iterable[str]) -> set[str]:
    """The variables references name, however the reference was spaced (``env: X``)."""
    return {name.strip() for name in named_by_references}


def check_pass_env(names: Iterable[str], named_by_references: Iterable[str]) -> list[str]:
    """The ``--pass-env`` names, each a variable name the child may have."""
    referenced = _names(named_by_references)
    checked = []
    for name in names:
        if not is_variable_name(name):
            raise UsageError(f"--pass-env takes a variable name, not {name!r}")
        if forbidden(name) or name in referenced:
            raise UsageError(f"--pass-env {name}: a credential's variable is never passed to "
                             "the command (run --proxy exists to keep it away)")
        checked.append(name)
    return checked


def _base64_cores(raw: bytes) -> list[str]:
    """The part of ``raw``'s base64 that is the same wherever ``raw`` sits in a longer
    text (one per alignment), in both alphabets."""
    cores = []
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw).decode()
        core = encoded[4 if shift else 0:4 * ((shift + len(raw)) // 3)]
        if len(core) >= SHORTEST:
            cores += [core, core.replace("+", "-").replace("/", "_")]
    return cores


def encodings(value: str) -> set[str]:
    """``value`` as a variable could carry it: raw, hex, base64 (lower case, for comparing
    without case); URL encoding is undone on the text instead (``holds_any``)."""
    raw = value.encode()
    forms = {value, binascii.hexlify(raw).decode(), *_base64_cores(raw)}
    return {form.lower() for form in forms if form}


def known_credentials(source: Mapping[str, str], named_by_references: Iterable[str]
                      ) -> list[str]:
    """The credentials ``source`` holds: a reference's variable, a forbidden variable whose
    name says credential (``VAULT_TOKEN``, not ``AWS_REGION``), and the password of a URL
    in a forbidden variable (``MCP_KEYS_STORE=postgresql://user:password@...``)."""
    referenced = _names(named_by_references)
    found = []
    for name, value in source.items():
        if name in referenced or (forbidden(name) and
                                  _CREDENTIAL_WORDS.search(name.upper()) is not None):
            found.append(value)
        if (name in referenced or forbidden(name)) and "://" in value:
            try:
                password = urlsplit(value).password
            except ValueError:
                password = None
            if password:
                found.append(unquote(password))
    return [value for value in found if len(value) >= SHORTEST]


def holds_any(text: str, values: Iterable[str]) -> bool:
    """Whether ``text`` holds one of ``values`` in any of their ``encodings``."""
    texts = {text.lower(), unquote(text).lower(), unquote_plus(text).lower()}
    return any(form in folded for value in values if value for form in encodings(value)
               for folded in texts)


def child_environment(source: Mapping[str, str], passed: Iterable[str],
                      avoid_values: Iterable[str], named_by_references: Iterable[str]
                      ) -> dict[str, str]:
    """The allowed variables of ``source`` (a ``BASE`` one only in its shape), minus any
    that a reference names or whose value holds one of ``avoid_values`` (the resolved
    credentials) or a credential ``source`` itself holds, in any encoding."""
    passed = set(passed)
    referenced = _names(named_by_references)
    values = [v for v in avoid_values if v] + known_credentials(source, referenced)
    env = {}
    for name, text in source.items():
        shape = SHAPES.get(name)
        if name not in passed and (shape is None or shape(text) is None):
            continue
        if forbidden(name) or name in referenced or holds_any(text, values):
            continue
        env[name] = text
    return env
