"""Request hygiene: what the caller may put in a request before any rule is consulted.

The upstream host is always the service's; the path is decoded (repeatedly, so double
encoding cannot hide anything), checked segment by segment and re-encoded in one
canonical form, which is what the rules match and what is sent. Headers the caller may
not set, and any CR, LF or NUL, are refused outright. So is anything that asks the
upstream to treat the request as another method (``X-HTTP-Method-Override`` and its
kin, a ``_method`` parameter in the query or the body) or another path
(``X-Original-URL``, ``X-Rewrite-URL``): the rules decide on the method and path that
are sent, so no other may ride along.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, quote, unquote

MAX_PATH = 2048
MAX_HEADERS = 64
MAX_HEADER_VALUE = 8192
MAX_QUERY = 128
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}")
_SEGMENT_SAFE = "-._~!$&'()*+,;=:@"
FORBIDDEN_HEADERS = frozenset({
    "host", "authorization", "cookie", "cookie2", "connection", "content-length",
    "transfer-encoding", "te", "trailer", "upgrade", "keep-alive", "expect", "forwarded",
})
FORBIDDEN_PREFIXES = ("proxy-", "x-forwarded-", "x-amz-", "sec-")
METHOD_OVERRIDES = frozenset({"x-http-method-override", "x-http-method", "x-method-override"})
PATH_OVERRIDES = frozenset({"x-original-url", "x-rewrite-url", "x-override-url"})
GATEWAY_HEADERS = frozenset({"accept-encoding"})  # the gateway chooses what it can scrub
_MULTIPART_METHOD = re.compile(  # name="_method", ".method", "_method[]", name*=utf-8''_method
    rb';\s*name\*?\s*=\s*"?(?:[\w-]*\'[\w-]*\')?\s*[ ._\[]method(?:\[[^"\r\n]*\])?(?:"|\s|;|$)',
    re.IGNORECASE | re.MULTILINE)


class Refused(ValueError):
    """The request is refused before anything is sent; the message says why."""


def _bad_char(text: str) -> str | None:
    for char in text:
        if char in "\r\n\x00":
            return {"\r": "CR", "\n": "LF", "\x00": "NUL"}[char]
        if ord(char) < 0x20 or ord(char) == 0x7F:
            return f"control character {ord(char):#04x}"
    return None


def _routed_as_dots(segment: str) -> str | None:
    """What some upstream would make of ``segment`` that the rules would not see: a
    ``..;x`` (Tomcat drops ``;params``), a ``.. `` or ``...`` (IIS trims spaces and
    dots), a ``\u2025`` or fullwidth ``\uff0e\uff0e`` (NFKC), a fullwidth slash."""
    folded = unicodedata.normalize("NFKC", segment)
    if "/" in folded or "\\" in folded:
        return "a '/' or '\\' (a lookalike that NFKC turns into one)"
    core = folded.split(";", 1)[0].strip()
    if core and not core.strip("."):
        return "a '.' or '..' segment"
    return None


def normalise_path(path: object) -> str:
    """The canonical form of a request path, or ``Refused``.

    Refused: anything but a string starting with one ``/``; an absolute or
    scheme-relative URL; a query or fragment; a backslash, control character, empty,
    ``.`` or ``..`` segment, or an encoded ``/``, in any decoding of the path; and a
    segment an upstream may route as a dot segment or a slash (``_routed_as_dots``).
    """
    if not isinstance(path, str) or not path:
        raise Refused("path must be a string starting with '/'")
    if len(path) > MAX_PATH:
        raise Refused(f"path is longer than {MAX_PATH} characters")
    if not path.startswith("/"):
        raise Refused("path must start with '/': absolute URLs are refused (the host is "
                      "always the service's)")
    if path.startswith("//"):
        raise Refused("path must not start with '//' (a scheme-relative URL)")
    if "?" in path or "#" in path:
        raise Refused("path must not hold '?' or '#': pass query parameters as 'query'")
    segments = []
    for raw in path.split("/")[1:]:
        decoded, previous = raw, None
        for _ in range(4):  # decode until stable: %252e%252e is '..' too
            if decoded == previous:
                break
            try:
                previous, decoded = decoded, unquote(decoded, errors="strict")
            except UnicodeDecodeError:  # %ff: what would the upstream make of it?
                raise Refused("path is not percent-encoded UTF-8") from None
        else:
            raise Refused("path is encoded more than three times over")
        if decoded != previous:
            raise Refused("path is encoded more than three times over")
        problem = _bad_char(decoded)
        if problem:
            raise Refused(f"path holds {problem}")
        if "\\" in decoded:
            raise Refused("path holds a backslash")
        if "/" in decoded:
            raise Refused("path holds an encoded '/' (%2F)")
        if decoded in (".", ".."):
            raise Refused(f"path holds a '{decoded}' segment")
        problem = _routed_as_dots(decoded)
        if problem:
            raise Refused(f"path holds a segment an upstream may read as {problem}")
        segments.append(decoded)
    if any(not s for s in segments[:-1]):
        raise Refused("path holds an empty segment ('//')")
    return "/" + "/".join(quote(s, safe=_SEGMENT_SAFE) for s in segments)


def check_method(method: object, allowed: Iterable[str]) -> str:
    if not isinstance(method, str) or method.upper() not in set(allowed):
        raise Refused(f"method must be one of {', '.join(allowed)}")
    return method.upper()


def check_headers(headers: object, *, reserved: Iterable[str] = ()) -> dict[str, str]:
    """The caller's headers, each a token name and a printable value; ``Host``,
    ``Authorization``, ``Cookie``, ``Proxy-*``, hop-by-hop headers and whatever the
    service's auth kind sets are refused."""
    if headers is None:
        return {}
    if not isinstance(headers, Mapping):
        raise Refused("headers must be an object of name: value")
    if len(headers) > MAX_HEADERS:
        raise Refused(f"more than {MAX_HEADERS} headers")
    blocked = {name.lower() for name in reserved}
    result: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise Refused("header names and values must be strings")
        problem = _bad_char(name) or _bad_char(value.replace("\t", " "))
        if problem:
            raise Refused(f"header {name[:40]!r} holds {problem}")
        if not value.isascii():
            raise Refused(f"header {name[:40]!r} holds non-ASCII characters (encode them, "
                          "e.g. as RFC 8187 or percent-encoding)")
        if not _TOKEN.fullmatch(name):
            raise Refused(f"header name {name[:40]!r} is not a valid HTTP token")
        lower = name.lower()
        if lower in GATEWAY_HEADERS:
            raise Refused(f"header {name} is set by the gateway (to what it can decode and "
                          "scrub)")
        if lower in FORBIDDEN_HEADERS or lower in blocked or lower.startswith(
                FORBIDDEN_PREFIXES):
            raise Refused(f"header {name} may not be set by the caller")
        if len(value) > MAX_HEADER_VALUE:
            raise Refused(f"header {name} is longer than {MAX_HEADER_VALUE} characters")
        if lower in {k.lower() for k in result}:
            raise Refused(f"header {name} is given twice")
        result[name] = value
    return result


def check_query(query: object, *, reserved: Iterable[str] = ()) -> list[tuple[str, str]]:
    """Query parameters as pairs; the one the service's auth kind sets is refused."""
    if query is None:
        return []
    if isinstance(query, Mapping):
        pairs = list(query.items())
    elif isinstance(query, list) and all(isinstance(p, list | tuple) and len(p) == 2
                                         for p in query):
        pairs = [(p[0], p[1]) for p in query]
    else:
        raise Refused("query must be an object of name: value")
    if len(pairs) > MAX_QUERY:
        raise Refused(f"more than {MAX_QUERY} query parameters")
    blocked = set(reserved)
    result = []
    for name, value in pairs:
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(name, str) or not isinstance(value, str) or not name:
            raise Refused("query names and values must be strings")
        problem = _bad_char(name) or _bad_char(value)
        if problem:
            raise Refused(f"query parameter {name[:40]!r} holds {problem}")
        if name in blocked:
            raise Refused(f"query parameter {name} may not be set by the caller")
        result.append((name, value))
    return result


def _is_method_field(name: str) -> bool:
    """Whether a parser may read the field ``name`` as ``_method``: any case, blanks
    around it, a ``[]`` after it (an array), and PHP's rewriting of a leading ' ', '.' or
    '[' to '_' (``.method`` is ``$_POST['_method']``); older parsers split on ';' too."""
    core = name.strip(" \t\r\n\x00").split("]", 1)[0]
    core = re.sub(r"^[ .\[]", "_", core).split("[", 1)[0]
    return core.strip().lower() == "_method"


def check_overrides(headers: Iterable[str], query: Iterable[str], body: bytes) -> None:
    """Refuse a request that asks the upstream to take it as another method or path:
    an override header (``headers`` are the names), a ``_method`` query parameter
    (``query`` the names), or a ``_method`` field in ``body`` read as a form, as JSON and
    as multipart whatever the declared type (frameworks read it from each), spelled any
    way a parser reads as ``_method`` (``_is_method_field``); header names with ``_`` are
    read with ``-``."""
    for name in headers:
        name = name.replace("_", "-")  # CGI, WSGI and Rack read X_HTTP_Method as X-HTTP-Method
        if name.lower() in METHOD_OVERRIDES:
            raise Refused(f"header {name[:40]} would override the method: send the method "
                          "you mean (the rules decide on it)")
        if name.lower() in PATH_OVERRIDES:
            raise Refused(f"header {name[:40]} would override the path: send the path you "
                          "mean (the rules decide on it)")
    if any(_is_method_field(name) for name in query):
        raise Refused("query parameter _method would override the method: send the method "
                      "you mean")
    if not body:
        return
    text = body.decode("utf-8", "replace")
    fields = [name for name, _ in parse_qsl(text.replace(";", "&"), keep_blank_values=True)]
    try:
        data = json.loads(body)  # UTF-8, -16 or -32, a BOM or none, as parsers take it
    except ValueError:
        data = None
    if isinstance(data, dict):
        fields += list(data)
    if any(_is_method_field(name) for name in fields if isinstance(name, str)) \
            or _MULTIPART_METHOD.search(body):
        raise Refused("the body holds a _method field, which would override the method: "
                      "send the method you mean")
