"""What a hard-coded secret looks like: provider formats, mcp-keys keys (format and
checksum, so no false positives), and high-entropy values under secret-sounding names.

References (``${VAR}``, ``${env:VAR}``, ``${input:…}``, mcp-keys references) and obvious
placeholders are never findings.
"""

from __future__ import annotations

import math
import re
from collections import Counter

from .. import tokens
from ..secrets import is_reference

PROVIDERS: list[tuple[str, re.Pattern[str]]] = [
    ("anthropic-api-key", re.compile(r"sk-ant-(?:api|admin)\d{2}-[A-Za-z0-9_-]{80,}")),
    ("openai-api-key", re.compile(r"sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}")),
    ("stripe-secret-key", re.compile(r"(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{16,}")),
    ("github-fine-grained-token", re.compile(r"github_pat_[A-Za-z0-9_]{60,}")),
    ("github-token", re.compile(r"gh[pousr]_[A-Za-z0-9]{36,}")),
    ("aws-access-key-id", re.compile(r"(?:AKIA|ASIA)[0-9A-Z]{16}")),
    ("google-api-key", re.compile(r"AIza[0-9A-Za-z_-]{35}")),
    ("slack-token", re.compile(r"xox[abposr]-[0-9A-Za-z-]{10,}|xapp-\d-[0-9A-Za-z-]{10,}")),
]
_SECRET_NAME = re.compile(r"(?i)(key|token|secret|passw|pwd|auth|credential|bearer|cookie)")
_AWS_SECRET_NAME = re.compile(r"(?i)aws.*secret")
_AWS_SECRET = re.compile(r"[A-Za-z0-9/+=]{40}")
_EXPANSION = re.compile(r"^\$\{[^}]+\}$|^\$[A-Za-z_][A-Za-z0-9_]*$")
_PLACEHOLDER = re.compile(
    r"(?i)^(|x+|\*+|\.+|-+|<[^>]*>|\[[^\]]*\]|\{\{[^}]*\}\}|your[_ -].*|.*[_ -]here|"
    r"changeme|change[_ -]me|placeholder|example|redacted|todo|tbd|none|null|test|secret|"
    r"password|token|api[_-]?key|sk_(?:live|test)_x+|.*xxxx.*)$")
_STRONG = re.compile("|".join([tokens.TOKEN_SEARCH.pattern, r"(?i:aws.*secret)",
                               *(pattern.pattern for _, pattern in PROVIDERS)]))
MIN_GENERIC_LENGTH = 16
MIN_ENTROPY = 3.5


def entropy(value: str) -> float:
    """Shannon entropy in bits per character."""
    counts = Counter(value)
    return -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())


def is_placeholder(value: str) -> bool:
    text = value.strip().strip("\"'")
    return bool(_EXPANSION.match(text) or _PLACEHOLDER.match(text) or is_reference(text))


def classify(value: str, name: str = "") -> str | None:
    """The kind of secret ``value`` is, or ``None``. ``name`` is the variable or header it
    sits under (it decides whether a high-entropy value counts)."""
    if not isinstance(value, str) or is_placeholder(value):
        return None
    text = value.strip()
    bearer = re.match(r"(?i)^(bearer|token|basic)\s+(.+)$", text)
    inner = bearer.group(2).strip() if bearer else text
    if is_placeholder(inner):
        return None
    for match in tokens.TOKEN_SEARCH.finditer(inner):
        if tokens.parse(match.group(0)) is not None:
            return "mcp-keys-key"
    for kind, pattern in PROVIDERS:
        if pattern.search(inner):
            return kind
    if _AWS_SECRET_NAME.search(name) and _AWS_SECRET.fullmatch(inner):
        return "aws-secret-access-key"
    if (bearer or _SECRET_NAME.search(name)) and len(inner) >= MIN_GENERIC_LENGTH \
            and entropy(inner) >= MIN_ENTROPY and " " not in inner:
        return "generic-bearer" if bearer else "generic-secret"
    return None


def may_hold_a_known_format(text: str) -> bool:
    """False when no provider key, mcp-keys key or AWS secret name occurs in ``text``: a
    cheap test that lets a scanner skip a file where only those would count."""
    return _STRONG.search(text) is not None


def mcp_key_ids(value: str) -> list[str]:
    """The IDs of well-formed mcp-keys keys in ``value`` (checksum verified)."""
    return [parsed.key_id for match in tokens.TOKEN_SEARCH.finditer(value)
            if (parsed := tokens.parse(match.group(0))) is not None]


def preview(value: str) -> str:
    """What a finding may show of a secret: its first 4 characters and its length."""
    return f"{value.strip()[:4]}… ({len(value.strip())} chars)"
