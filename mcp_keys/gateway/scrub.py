"""Scrubbing: the resolved secret, in every form it travels in, never leaves the gateway.

The raw value, its base64 (standard and URL-safe, with and without padding), its
URL-encoded form and, for ``user:password``, each half and the Basic header value are
replaced with ``[redacted]`` wherever they appear in text or bytes that go back to the
caller, to a log or to the audit trail.
"""

from __future__ import annotations

import base64
from urllib.parse import quote, quote_plus

REDACTED = "[redacted]"
MIN_SCRUB = 4  # shorter fragments would redact ordinary text; such secrets are refused


def forms(value: str) -> list[str]:
    """Every spelling of ``value`` worth removing, longest first."""
    found = {value, quote(value, safe=""), quote_plus(value)}
    for raw in {value, *value.split(":", 1)} if ":" in value else {value}:
        encoded = base64.b64encode(raw.encode()).decode()
        found |= {raw, encoded, encoded.rstrip("="),
                  base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")}
    return sorted((f for f in found if len(f) >= MIN_SCRUB), key=len, reverse=True)


class Scrubber:
    """Replaces every form of the given secrets."""

    def __init__(self, values: list[str]) -> None:
        self._text = sorted({f for v in values for f in forms(v)}, key=len, reverse=True)
        self._bytes = [f.encode() for f in self._text]

    def __repr__(self) -> str:
        return f"Scrubber({len(self._text)} forms)"

    def text(self, value: str) -> str:
        for form in self._text:
            if form in value:
                value = value.replace(form, REDACTED)
        return value

    def data(self, value: bytes) -> bytes:
        for form in self._bytes:
            if form in value:
                value = value.replace(form, REDACTED.encode())
        return value
