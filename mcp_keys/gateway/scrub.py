"""Scrubbing: the resolved secret, in every form it travels in, never leaves the gateway.

The data is read through a *view*: blanks (spaces, tabs, NULs, line breaks, invisible
format characters such as zero-width spaces, soft hyphens, BOMs) dropped first, then
lower-cased (ASCII), with percent-encoding (``%XX``, ``%uXXXX``), ``\\x``, ``\\u``, ``\\U``
and octal escapes, HTML numeric references (with or without ``;``) and named entities,
quoted-printable ``=XX`` and soft breaks, and ``\\/`` decoded, fullwidth letters read as
ASCII, in any mix; the blank-free data is searched undecoded too. In that view each
secret (and, for ``user:password``, each half) is looked for raw; as hex
of its own, upper- and lower-case spelling (bytes optionally separated by ``:``, ``-``,
``,``, a space or ``0x``) and of its UTF-16; as decimal bytes (a Node Buffer's JSON); and
as base64, standard and URL-safe (of those spellings and of its UTF-16), and base32, at
every alignment it can have inside a larger blob. Whatever the view matches is replaced,
in the original bytes, with ``[redacted]``. So case, escapes, spacing and line breaks
cannot hide a secret, and ``cut`` scrubs before it truncates and redacts a tail that could
begin a secret. A multi-line secret (a PEM) is also looked for line by line, stripped,
and with CRLF or LF line ends. ``stream`` serves a filter that sees the data in pieces
(``mcp-keys run --mask``, the one other user of this matcher): it holds back only a tail
that could still become a secret; ``stream``, ``tail`` and ``cut`` share one tail finder.
What no fixed list can catch (an upstream that encrypts, compresses,
reverses or splits the secret into separate strings) is beyond a scrubber: see
docs/security-model.md.
"""

from __future__ import annotations

import base64
import bisect
import functools
import re
from dataclasses import dataclass
from html.entities import html5

REDACTED = "[redacted]"
MIN_SCRUB = 4  # shorter fragments would redact ordinary text; such secrets are refused
_WIDEST = 12  # the most bytes one character of the view can take in the data (%XX x 4)
_SEPARATORS = (b"", b":", b"-", b" ", b",", b"0x", b",0x")  # between hex bytes (the
# blank-dropped view reads ", 0x" as ",0x")
_DECIMAL_SEPARATORS = (b",", b" ", b";")  # between decimal bytes: [115, 107, ...]
_INVISIBLE = (  # format characters that render as nothing: dropped between a secret's
    rb"\xc2\xad|\xcd\x8f|\xd8\x9c|\xe1\xa0\x8e|\xe2\x80[\x8b-\x8f\xaa-\xae]"  # characters
    rb"|\xe2\x81[\xa0-\xa4\xa6-\xaf]|\xef\xbb\xbf|\xef\xb8[\x80-\x8f]")
_FULLWIDTH = rb"\xef\xbc[\x81-\xbf]|\xef\xbd[\x80-\x9e]"  # U+FF01..FF5E, ASCII's lookalikes
_ESCAPE = re.compile(
    rb"%[0-9a-fA-F]{2}|%[uU][0-9a-fA-F]{4}|\\x[0-9a-fA-F]{2}|\\U[0-9a-fA-F]{8}"
    rb"|\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|\\u[0-9a-fA-F]{4}"
    rb"|\\[0-3][0-7]{2}|&#[0-9]{1,7};?|&#[xX][0-9a-fA-F]{1,6};?|&[A-Za-z][A-Za-z0-9]{1,31};"
    rb"|=[0-9A-F]{2}|=\r?\n|\\[/\\\"']|\\r\\n|\\n|\\r|\r\n|\n|\r|\x00+|"
    + _INVISIBLE + b"|" + _FULLWIDTH)
_BLANKS = re.compile(  # dropped, nothing decoded: the view's ground floor
    rb"=?\r\n|=?\n|\r|[\x00\t\x0b\x0c ]+|" + _INVISIBLE)
_NOTHING = {"\\r\\n", "\\n", "\\r", "\r\n", "\n", "\r"}  # line breaks, dropped
_NAMED = {"&amp;": "&", "&lt;": "<", "&gt;": ">", "&quot;": '"', "&apos;": "'"}
_PARTIAL_ESCAPE = re.compile(  # the start of an escape, cut off at the end of the data
    rb"(?:%[0-9a-fA-F]?|%[uU][0-9a-fA-F]{0,3}|\\x[0-9a-fA-F]?|\\u[0-9a-fA-F]{0,3}"
    rb"|\\U[0-9a-fA-F]{0,7}|\\[0-3][0-7]?|=[0-9A-F]?|=\r|\xef(?:\xbc|\xbd)?|[\xc2-\xe2][\x80-\xbf]?"
    rb"|\\u[dD][89abAB][0-9a-fA-F]{2}(?:\\u?[0-9a-fA-F]{0,3})?|\\r?\\?"
    rb"|&(?:#(?:[xX][0-9a-fA-F]{0,6}|[0-9]{0,7})|[a-zA-Z][a-zA-Z0-9]{0,31})?)\Z")
_DEPTH = 3  # decodings of decodings: %2573 is 's' too
MIN_LINE = 16  # a line of a multi-line secret (a PEM) this long is redacted on its own too
_RESYNC = 2 * _WIDEST * _DEPTH  # bytes a stream's cut may move back to split no escape
_CONTEXT = 16 * _RESYNC  # bytes before a stream's cut that decide how it decodes
_HEAD = 8  # atoms of a form that find where a tail could begin it (``Scrubber.tail``)

Form = tuple[tuple[bytes, ...], ...]  # each position: the bytes the view may hold there


def _decoded(match: re.Match[bytes]) -> bytes:
    return _decode(match.group())


@functools.lru_cache(maxsize=4096)
def _decode(token: bytes) -> bytes:
    """One escape as the UTF-8 bytes it stands for; a line break, a quoted-printable soft
    break, an invisible format character or a NUL (UTF-16 and UTF-32 interleave ASCII
    with NULs) as nothing; a fullwidth letter as its ASCII one."""
    if token[:1] >= b"\x80":
        if re.fullmatch(_FULLWIDTH, token):
            return bytes([ord(token.decode()) - 0xFEE0])
        return b""  # an invisible character
    original = token.decode("ascii")
    text = original.lower()
    if text in _NOTHING or not text.strip("\x00\t\x0b\x0c =\r\n"):  # blanks, soft breaks
        return b""
    if text.startswith("&") and not text.startswith("&#"):
        named = _NAMED.get(text) or html5.get(original[1:])
        return named.encode() if named else token
    if len(text) == 2 and text[0] == "\\":
        return text[1].encode()
    if (text[0] in "%=" and text[1] != "u") or text.startswith("\\x"):
        decoded = bytes([int(text[-2:], 16)])
    elif text.startswith(("%u", "\\u")) and not original.startswith("\\U"):
        units = bytes.fromhex(text.replace("\\u", "").replace("%u", ""))
        decoded = units.decode("utf-16-be", "surrogatepass").encode("utf-8", "surrogatepass")
    elif text[0] == "\\":  # \U0001f600 or octal \163
        code = int(text[2:], 16) if original[1] == "U" else int(text[1:], 8)
        decoded = chr(min(code, 0x10FFFF)).encode("utf-8", "surrogatepass")
    else:
        digits = text.rstrip(";")
        code = int(digits[3:], 16) if digits.startswith("&#x") else int(digits[2:])
        decoded = chr(min(code, 0x10FFFF)).encode("utf-8", "surrogatepass")
    return b"" if decoded == b"\x00" else decoded


@dataclass(slots=True, eq=False)  # levels are told apart by identity
class _Level:
    """``data`` lower-cased and decoded once. The map from the text back to the data is
    worked out only when a secret was found in it (``data_span``)."""

    data: bytes
    text: bytes
    decoded: bool  # False: the text is the data, lower-cased
    plain: bytes = b""  # the text before lower-casing (escapes are case-sensitive)
    _spans: list[tuple[int, int, int, int, bool]] | None = None

    tokens: re.Pattern[bytes] = _ESCAPE

    @classmethod
    def of(cls, data: bytes, tokens: re.Pattern[bytes] = _ESCAPE) -> _Level:
        if not tokens.search(data):
            return cls(data, data.lower(), False, data, tokens=tokens)
        plain = tokens.sub(_decoded, data)
        return cls(data, plain.lower(), True, plain, tokens=tokens)

    def spans(self) -> list[tuple[int, int, int, int, bool]]:
        """(text start, text length, data start, data end, literal) for each run."""
        if self._spans is not None:
            return self._spans
        spans, at, last = [], 0, 0
        for match in self.tokens.finditer(self.data):
            if match.start() > last:
                spans.append((at, match.start() - last, last, match.start(), True))
                at += match.start() - last
            size = len(_decoded(match))
            if size:
                spans.append((at, size, match.start(), match.end(), False))
                at += size
            last = match.end()
        if last < len(self.data):
            spans.append((at, len(self.data) - last, last, len(self.data), True))
        self._spans = spans
        return spans

    def data_span(self, start: int, end: int) -> tuple[int, int]:
        """The bytes of the data that text[start:end] came from."""
        if not self.decoded:
            return start, end
        spans = self.spans()
        starts = [span[0] for span in spans]
        first = spans[bisect.bisect_right(starts, start) - 1]
        final = spans[bisect.bisect_right(starts, end - 1) - 1]
        begin = first[2] + (start - first[0]) if first[4] else first[2]
        finish = final[2] + (end - final[0]) if final[4] else final[3]
        return begin, finish


@dataclass(frozen=True, slots=True)
class _View:
    """``data`` with blanks dropped (``ground``: spaces, tabs, NULs, line breaks and
    invisible characters between a secret's characters or escapes), then decoded until
    stable (at most ``_DEPTH`` times), lower-cased."""

    ground: _Level
    levels: tuple[_Level, ...]

    @classmethod
    def of(cls, data: bytes) -> _View:
        ground = _Level.of(data, _BLANKS)
        levels = [_Level.of(ground.plain)]
        while levels[-1].decoded and len(levels) < _DEPTH:
            deeper = _Level.of(levels[-1].text)
            if not deeper.decoded:
                break
            levels.append(deeper)
        return cls(ground, tuple(levels))

    @property
    def text(self) -> bytes:
        return self.levels[-1].text

    def texts(self) -> list[tuple[_Level, bytes]]:
        """Each text worth searching, with the level it was decoded at: the data with
        only blanks dropped, and every decoding of it, so an escape that swallows the
        start of a secret (``%4`` before ``f3a...``) hides it from none."""
        return [(self.ground, self.ground.text),
                *((level, level.text) for level in self.levels if level.decoded)]

    def data_span(self, start: int, end: int, level: _Level | None = None
                  ) -> tuple[int, int]:
        """The bytes of the data that text[start:end] of ``level`` (default the deepest)
        came from."""
        if level is not self.ground:
            depth = len(self.levels) if level is None else self.levels.index(level) + 1
            for each in reversed(self.levels[:depth]):
                start, end = each.data_span(start, end)
        return self.ground.data_span(start, end)


def _splits_cleanly(data: bytes, end: int) -> bool:
    """Whether the blank-free data and every level of the view of ``data`` are those of
    ``data[:end]`` followed by those of ``data[end:]``: ``end`` cuts no escape, at any
    depth (``%25`` | ``41``), and no blank (``=`` | ``\\n``, half a zero-width space)."""
    def texts(part: bytes) -> list[bytes]:
        view = _View.of(part)
        levels = view.levels
        return [view.ground.text, *(levels[min(k, len(levels) - 1)].text
                                    for k in range(_DEPTH))]

    whole, head, rest = texts(data), texts(data[:end]), texts(data[end:])
    return all(w == h + r for w, h, r in zip(whole, head, rest, strict=True))


def _literal(text: bytes) -> Form:
    return tuple((bytes([b]),) for b in text)


def _base64_cores(raw: bytes) -> set[bytes]:
    """What base64 of any blob holding ``raw`` must contain, at each alignment."""
    cores = set()
    for pad in range(3):
        encoded = base64.b64encode(b"\0" * pad + raw)
        core = encoded[-(-8 * pad // 6):8 * (pad + len(raw)) // 6]
        cores |= {core, core.translate(bytes.maketrans(b"+/", b"-_"))}
    return {core.lower() for core in cores if len(core) >= MIN_SCRUB}


def _base32_cores(raw: bytes) -> set[bytes]:
    """What base32 of any blob holding ``raw`` must contain, at each of its alignments."""
    cores = set()
    for pad in range(5):
        encoded = base64.b32encode(b"\0" * pad + raw)
        cores.add(encoded[-(-8 * pad // 5):8 * (pad + len(raw)) // 5].lower())
    return {core for core in cores if len(core) >= MIN_SCRUB}


def _separated(raw: bytes, separators: tuple[bytes, ...], digits: str) -> Form:
    """``raw`` one number a byte (``digits`` a format: hex or decimal), separated."""
    return tuple(atom for i, b in enumerate(raw) for atom in (
        ((separators,) if i else ()) + _literal(format(b, digits).encode())))


def forms(value: str) -> list[Form]:
    """Every spelling of ``value`` the view can hold, longest first."""
    found: set[Form] = set()
    parts = _halves(value)
    for part in parts:
        if len(part) < MIN_SCRUB:
            continue
        for spelling in {part, part.replace(" ", "+")}:  # '+' is a space in a form
            found |= {_literal(spelling.encode().lower()),
                      _literal(_View.of(spelling.encode()).text)}  # if it holds escapes
        for variant in {part, part.upper(), part.lower()}:
            found |= _encoded(variant.encode())
        raw = part.encode()
        found.add(_separated(raw, _DECIMAL_SEPARATORS, "d"))  # a Node Buffer's JSON
        for wide in ("utf-16-le", "utf-16-be"):  # hex and base64 of a UTF-16 string
            found.add(_separated(part.encode(wide), _SEPARATORS, "02x"))
            found |= {_literal(core) for core in _base64_cores(part.encode(wide))}
    found |= _alone(value)
    return sorted(found, key=len, reverse=True)


def _encoded(raw: bytes) -> set[Form]:
    """``raw`` as hex (bytes optionally separated) and as base64 and base32 at any
    alignment."""
    return {_separated(raw, _SEPARATORS, "02x"),
            *(_literal(core) for core in _base64_cores(raw) | _base32_cores(raw))}


def _halves(value: str) -> set[str]:
    """``value`` and what of it is secret alone: each side of ``user:password``; of a URL
    (``postgres://app:pw@db/x``) its password, never its scheme (``postgres``)."""
    if "://" not in value:
        return {value, *value.split(":", 1)} if ":" in value else {value}
    from urllib.parse import urlsplit

    try:
        password = urlsplit(value).password
    except ValueError:  # not a URL after all: the whole value is the secret
        password = None
    return {value, password} if password else {value}


def _alone(value: str) -> set[Form]:
    """The forms of what a program may print for ``value`` besides the value itself: the
    value stripped of the whitespace a file gave it, with its line ends as CRLF or LF
    (which hex and base64 keep), and each long line of a multi-line value (a PEM printed
    line by line)."""
    variants = {value, value.strip()}
    variants |= {v.replace("\r\n", "\n").replace("\n", "\r\n") for v in variants}
    variants |= {v.replace("\r\n", "\n") for v in variants}
    found: set[Form] = set()
    for variant in variants - {value}:
        raw = variant.encode()
        found |= _encoded(raw) | {_literal(raw.lower()), _literal(_View.of(raw).text)}
    if "\n" in value.strip():
        for line in value.splitlines():
            if len(line.strip()) >= MIN_LINE:
                spelling = line.strip().encode()
                found |= {_literal(spelling.lower()), _literal(_View.of(spelling).text)}
    return found


def _pattern(form: Form) -> bytes:
    return b"".join(_atom(atom) for atom in form)


@functools.lru_cache(maxsize=1024)
def _atom(atom: tuple[bytes, ...]) -> bytes:
    """One position of a form as a regex (a long hex form repeats the same few)."""
    if len(atom) == 1:
        return re.escape(atom[0])
    return b"(?:" + b"|".join(re.escape(a) for a in atom) + b")"


def _prefix_of(text: bytes, form: Form) -> bool:
    """Whether ``text`` (a view) is the start of something ``form`` spells."""
    todo, seen = [(0, 0)], set()
    while todo:
        state = todo.pop()
        if state in seen:
            continue
        seen.add(state)
        at, atom = state
        if at == len(text):
            return True
        if atom == len(form):
            continue
        rest = text[at:]
        for spelling in form[atom]:
            if len(rest) < len(spelling) and spelling.startswith(rest):
                return True
            if rest.startswith(spelling):
                todo.append((at + len(spelling), atom + 1))
    return False


class Scrubber:
    """Replaces every form of the given secrets."""

    def __init__(self, values: list[str], marker: str = REDACTED) -> None:
        self._forms = sorted({f for v in values for f in forms(v)}, key=len, reverse=True)
        self._marker = marker.encode()
        longest = max((sum(max(len(s) for s in atom) for atom in form)
                       for form in self._forms), default=0)
        self.lookahead = longest * _WIDEST  # bytes of data a whole form can take
        self._longest = longest  # characters of the view a whole form can take
        self._regex = re.compile(b"|".join(_pattern(f) for f in self._forms)) \
            if self._forms else None

    def __repr__(self) -> str:
        return f"Scrubber({len(self._forms)} forms)"

    def text(self, value: str) -> str:
        """``value`` scrubbed; a lone surrogate (any text an agent sent may hold one)
        becomes U+FFFD rather than an error."""
        return self.data(value.encode("utf-8", "surrogatepass")).decode("utf-8", "replace")

    def data(self, value: bytes) -> bytes:
        found = self._found(value)
        return self._redacted(value, found) if found else value

    def _found(self, value: bytes) -> list[tuple[int, int]]:
        """The spans of ``value`` to redact, in order; overlapping matches of two levels
        joined into their union."""
        if self._regex is None:
            return []
        view = _View.of(value)
        found: list[tuple[int, int]] = []
        for start, end in sorted(view.data_span(*m.span(), level)
                                 for level, text in view.texts()
                                 for m in self._regex.finditer(text)):
            if found and start < found[-1][1]:
                found[-1] = (found[-1][0], max(end, found[-1][1]))
            else:
                found.append((start, end))
        return found

    def _redacted(self, value: bytes, found: list[tuple[int, int]]) -> bytes:
        out, last = [], 0
        for start, end in found:
            out += [value[last:start], self._marker]
            last = end
        return b"".join([*out, value[last:]])

    def cut(self, value: bytes, limit: int, more: bool = False) -> tuple[bytes, bool]:
        """``value`` scrubbed, then at most ``limit`` bytes of it, and whether anything
        was cut. Read ``limit + lookahead`` bytes (``more`` if there were more still): a
        secret that straddles the cut is then whole, and redacted before the cut; a tail
        of the kept part that could begin a secret is redacted too."""
        clean = self.data(value)
        if len(clean) <= limit and not more:
            return clean, False
        marker = self._marker
        kept = clean[:limit]
        straddling = clean.find(marker, max(0, limit - len(marker) + 1), limit + len(marker))
        start = straddling if 0 <= straddling < limit else self.tail(kept)
        if start >= len(kept):
            return kept, True
        return kept[:max(0, min(start, limit - len(marker)))] + marker, True

    # Streaming: a filter that sees the data in pieces (``run --mask``) writes what no
    # later byte can change and holds back the rest, at most about 2 x ``lookahead`` bytes.

    def stream(self, data: bytes) -> tuple[bytes, int]:
        """The scrubbed start of ``data`` that no later byte can change, and where the
        rest begins (hold ``data[end:]`` back and put it before the next piece): the tail
        that could still grow into a secret, and a redaction that tail could widen, wait.
        Whatever the pieces, the output is what ``data`` of the whole stream gives."""
        found = self._found(data)
        end = self.tail(data)
        for _ in range(_RESYNC):
            for start, stop in found:
                if start < end < stop:
                    end = start
            low = max(0, end - _CONTEXT)  # escapes are short: the bytes just before do
            if end in (0, len(data)) or _splits_cleanly(data[low:], end - low):
                break
            end -= 1  # inside an escape (of an escape): the rest would decode otherwise
        return self._redacted(data[:end], [span for span in found if span[1] <= end]), end

    def tail(self, data: bytes) -> int:
        """Where the tail of ``data`` that more bytes could make (part of) a secret
        begins, at any level of decoding: the start of a form, or of an escape, cut off
        at the end; ``len(data)`` when there is none (a line break is no end: a secret
        may be printed across lines). The region that could hold one is read once, in
        every text of its view, and only the last characters of each (as many as the
        longest form) are tried. It is measured in data without blanks, so a secret spread
        out with runs of spaces, NULs or invisible characters between its characters is in
        it from its first character (``cut`` at ``--max-body`` and ``stream`` both rely on
        this one finder)."""
        if not self._forms:
            return len(data)
        base = self._region(data)
        region = data[base:]
        partial = _PARTIAL_ESCAPE.search(region)
        whole = region[:partial.start()] if partial else region
        view, end = _View.of(whole), len(whole)
        for level, text in view.texts():
            cut = _PARTIAL_ESCAPE.search(text)  # %25 then 41: a level ends in %
            begins = (self._begins(text[:cut.start()] if cut else text),
                      cut.start() if cut else None)
            for at in begins:
                if at is not None:
                    end = min(end, view.data_span(at, len(text), level)[0])
        return base + end

    def _region(self, data: bytes) -> int:
        """Where the last ``lookahead`` bytes of ``data`` without its blanks begin: the
        suffix read grows (doubling) until it holds that many, so a long stream is not
        read whole for every piece."""
        size = self.lookahead
        while True:
            low = max(0, len(data) - size)
            ground = _Level.of(data[low:], _BLANKS)
            edge = len(ground.text) - self.lookahead  # lookahead > 0: edge < len(text)
            if edge >= 0:
                return low + ground.data_span(edge, edge + 1)[0]
            if low == 0:
                return 0
            size *= 2

    def _begins(self, text: bytes) -> int | None:
        """The first place from which ``text`` (a view) is the start of a form."""
        heads, reach, by_first = self._heads
        low = max(0, len(text) - self._longest)
        places = {m.start() + low for m in heads.finditer(text[low:])}
        places.update(range(max(low, len(text) - reach), len(text)))
        for at in sorted(places):
            rest = text[at:]
            if any(_prefix_of(rest, form) for form in by_first.get(text[at], ())):
                return at
        return None

    @functools.cached_property
    def _heads(self) -> tuple[re.Pattern[bytes], int, dict[int, list[Form]]]:
        """Where the first ``_HEAD`` atoms of a form match (a cheap test before
        ``_prefix_of``), the most bytes they take, and the forms by their first byte."""
        heads = {_pattern(form[:_HEAD]) for form in self._forms}
        reach = max(sum(max(len(s) for s in atom) for atom in form[:_HEAD])
                    for form in self._forms)
        by_first: dict[int, list[Form]] = {}
        for form in self._forms:
            for first in {spelling[0] for spelling in form[0] if spelling}:
                by_first.setdefault(first, []).append(form)
        return re.compile(b"(?=" + b"|".join(sorted(heads)) + b")"), reach, by_first
