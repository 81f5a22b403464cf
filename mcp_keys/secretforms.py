"""The spellings a secret takes when a program prints it: raw, without the surrounding
whitespace a file gave it, with CRLF line ends, JSON-escaped (``\\n``, ``\\"``, ``\\\\``,
``\\uXXXX``, ``\\/``), URL-encoded, hex, base64, and, for a multi-line secret (a PEM), each
line on its own. Output filters mask every spelling, not only the one they were given.
"""

from __future__ import annotations

import base64
import json
from urllib.parse import quote, quote_plus

MIN_FORM = 4  # shorter spellings would mask ordinary text
MIN_LINE = 16  # a line of a multi-line secret shorter than this is not masked alone


_GO_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"}


def _json_escaped(value: str) -> set[str]:
    """As JSON encoders print it: Python's (ASCII or not), with ``/`` escaped (PHP), and
    with ``<``, ``>`` and ``&`` as ``\\u003c`` etc. (Go's ``encoding/json``)."""
    found = {json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}
    found |= {form.replace("/", "\\/") for form in found}
    go = set()
    for form in found:
        for char, escape in _GO_ESCAPES.items():
            form = form.replace(char, escape)
        go.add(form)
    return found | go


def forms(value: str) -> list[str]:
    """Every spelling of ``value`` worth masking, longest first."""
    bases = {value, value.strip()}
    bases |= {b.replace("\r\n", "\n").replace("\n", "\r\n") for b in bases}
    bases |= {b.replace("\r\n", "\n") for b in bases}
    found = set(bases)
    for base in bases:
        found |= _json_escaped(base) | {quote(base, safe=""), quote_plus(base),
                                        base.encode().hex()}
        raw = base.encode()
        if len(raw) >= 12:  # the part of its base64 that does not depend on what follows
            found.add(base64.b64encode(raw[: len(raw) - len(raw) % 3]).decode())
    if "\n" in value.strip():
        for line in value.splitlines():
            if len(line.strip()) >= MIN_LINE:
                found |= {line.strip(), *_json_escaped(line.strip())}
    return sorted((f for f in found if len(f) >= MIN_FORM), key=len, reverse=True)
