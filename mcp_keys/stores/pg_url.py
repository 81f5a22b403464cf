"""A PostgreSQL store URL, and what of it may be shown.

The password is found with libpq's own parser (``psycopg.conninfo.conninfo_to_dict``),
the one that will use it. A URL that libpq cannot parse, or that libpq and a URL parser
read differently (an unencoded ``@``, ``/``, ``?``, ``#`` or ``[`` in the password makes
part of it look like the host, port, database or query), is hidden whole and refused:
mcp-keys cannot know which part is the secret, so it shows none of it. libpq's own error
text is never shown, since it quotes the token it choked on.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

SECRET_PARAMS = frozenset({"password", "sslpassword"})
_FIX = ("percent-encode @ : / ? # [ ] % in the user name and password (%40 %3A %2F %3F "
        "%23 %5B %5D %25), or keep the password out of the URL (PGPASSWORD or ~/.pgpass)")


@dataclass(frozen=True, slots=True)
class PgUrl:
    """A store URL: the text to show, the strings to scrub, and why it cannot be used."""

    url: str
    display: str
    secrets: tuple[str, ...]
    problem: str | None = None

    def scrub(self, text: str) -> str:
        """``text`` with the URL shown as ``display`` and every secret as ``***``."""
        text = text.replace(self.url, self.display)
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text


def parse_url(url: str) -> PgUrl:
    """The URL's display form and secrets; ``problem`` set (and nothing of the URL but its
    scheme shown) when its password cannot be found with certainty."""
    scheme = url.partition("://")[0]
    hidden = PgUrl(url, f"{scheme}://<URL hidden>", _fragments(url))
    try:
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:  # nothing connects without psycopg; show nothing meanwhile
        return hidden
    try:
        fields = conninfo_to_dict(url)
        failure = None
    except Exception as exc:  # any failure: libpq's text quotes the URL, never shown
        fields, failure = {}, _reason(exc, url)
    if failure is not None:
        return _refused(hidden, f"libpq cannot parse it ({failure})")
    shown = _agreed(url, {k: str(v) for k, v in fields.items() if v is not None})
    if shown is None:
        return _refused(hidden, "its user name or password holds a character that must be "
                        "percent-encoded")
    display, secrets = shown
    return PgUrl(url, display, secrets)


def _refused(hidden: PgUrl, why: str) -> PgUrl:
    return PgUrl(hidden.url, hidden.display, hidden.secrets,
                 f"invalid PostgreSQL URL (hidden, as it may hold a password): {why}; {_FIX}")


def _fragments(url: str) -> tuple[str, ...]:
    """For a hidden URL: the whole of it and everything after the scheme."""
    tail = url.partition("://")[2]
    return tuple(s for s in (url, tail) if s)


def _reason(exc: Exception, url: str) -> str:
    """libpq's description of a parse failure, cut before the first quote (where it names
    the offending token), and dropped if it still shares four characters with the URL."""
    text = " ".join(str(exc).split())
    for quote in ('"', "'"):
        text = text.split(quote, 1)[0]
    text = text.strip(" :")
    tail = url.partition("://")[2]
    if (not text or not text.isascii() or not text.isprintable()
            or any(tail[i:i + 4] in text for i in range(len(tail) - 3))):
        return type(exc).__name__
    return text


def _agreed(url: str, fields: dict[str, str]) -> tuple[str, tuple[str, ...]] | None:
    """The display form and the secrets, if a URL parser and libpq agree on where every
    secret is; ``None`` if they do not (or the URL parser fails)."""
    try:
        parts = urlsplit(url)
        userinfo_password = parts.password
        parts.hostname  # noqa: B018 - raises on a broken IPv6 literal
    except ValueError:
        return None
    netloc = parts.netloc
    if "#" in url or netloc.count("@") > 1 or "@" in parts.path:
        return None
    found: list[str] = []  # every secret the URL parser sees, as written and decoded
    if userinfo_password is not None:
        found += [userinfo_password, unquote(userinfo_password)]
        user = netloc.rpartition("@")[0].split(":", 1)[0]
        netloc = f"{user}:***@{netloc.rpartition('@')[2]}"
    pieces = []
    for piece in parts.query.split("&") if parts.query else []:
        name, sep, value = piece.partition("=")
        if unquote(name) in SECRET_PARAMS:
            found += [value, unquote(value)]
            value = "***"
        pieces.append(f"{name}{sep}{value}")
    wanted = [fields[name] for name in SECRET_PARAMS if fields.get(name)]
    if any(secret not in found for secret in wanted) or (any(found) and not wanted):
        return None
    query = "&".join(pieces)
    display = f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")
    secrets = sorted({s for s in found + wanted if s}, key=len, reverse=True)
    return display, tuple(secrets)
