"""Services and their rules: what an agent may ask of which upstream API."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import unquote

from ..errors import UsageError

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_HEADER = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")
_QUERY = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_PATTERN_SEGMENT = re.compile(r"[A-Za-z0-9._~!$&'()+,;=:@%*-]*")
_PERIODS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60,
            "h": 3600, "hour": 3600, "d": 86400, "day": 86400}
_SCOPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9:._/-]{0,127}")


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise UsageError(f"invalid service name {name!r}: use lower-case letters, digits, "
                         "'-' and '_' (at most 63)")
    return name


def loose_path(path: str) -> str:
    """``path`` as loosely as upstreams route it, for deny rules: each segment decoded,
    NFKC-normalised and case-folded, a ``;params`` tail and a ``.suffix`` dropped (not a
    leading dot), spaces trimmed; trailing slashes dropped."""
    return _loosen(path.split("/")[1:])


def _loosen(segments: list[str]) -> str:
    loose = []
    for raw in segments:
        if raw in ("*", "**"):
            loose.append(raw)
            continue
        text = unicodedata.normalize("NFKC", unquote(raw)).casefold().split(";", 1)[0]
        loose.append((text[:1] + text[1:].split(".", 1)[0]).strip())
    while loose and not loose[-1]:
        loose.pop()
    return "/" + "/".join(loose)


@dataclass(frozen=True, slots=True)
class Rule:
    """``METHOD PATH``: METHOD an HTTP method or ``*``; PATH a glob over path segments,
    ``*`` within one segment and ``**`` for any depth. ``scope`` limits it to callers
    holding that scope. An allow rule matches the path that is sent, exactly; a deny
    rule also matches its loose form (``loose_path``), and a deny of ``GET`` also
    covers ``HEAD``, so it denies whatever an upstream would route to what it names."""

    effect: str  # "allow" or "deny"
    method: str
    pattern: str
    scope: str | None = None
    _regex: re.Pattern[str] = field(repr=False, compare=False, default=re.compile(""))
    _loose: re.Pattern[str] = field(repr=False, compare=False, default=re.compile(""))

    @property
    def text(self) -> str:
        return f"{self.method} {self.pattern}"

    def describe(self) -> str:
        suffix = f" (scope {self.scope})" if self.scope else ""
        return f"{self.effect} {self.text}{suffix}"

    def matches(self, method: str, path: str) -> bool:
        if self.effect != "deny":
            return (self.method == "*" or self.method == method) and bool(
                self._regex.fullmatch(path))
        verb = method.upper()
        return (self.method in ("*", verb) or (self.method, verb) == ("GET", "HEAD")) and (
            bool(self._regex.fullmatch(path)) or bool(self._loose.fullmatch(loose_path(path))))

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"rule": self.text}
        if self.scope:
            data["scope"] = self.scope
        return data


def _compile(pattern: str) -> re.Pattern[str]:
    parts = []
    for segment in pattern.split("/")[1:]:
        if segment == "**":
            parts.append("(?:/[^/]*)*")
        else:
            parts.append("/" + "[^/]*".join(re.escape(p) for p in segment.split("*")))
    return re.compile("".join(parts) or "/")


_NAME_START = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
_NAME_CHAR = _NAME_START | {".", "-"}  # what a wildcard may stand for: a name, no list
_SLASH = frozenset("/")


@dataclass(frozen=True, slots=True)
class _Glob:
    """An argument pattern as a small automaton, run over the argument in one pass: a
    backtracking regex takes time exponential in the wildcards (``*.*.*.*`` against 400
    characters held the gateway's event loop for minutes)."""

    edges: tuple[tuple[tuple[frozenset[str], int], ...], ...]  # per state: (chars, next)
    empty: tuple[tuple[int, ...], ...]  # per state: states reached on no character
    final: int

    def _closure(self, states: set[int]) -> set[int]:
        todo, seen = list(states), set(states)
        while todo:
            for nxt in self.empty[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    def fullmatch(self, text: str) -> bool:
        current = self._closure({0})
        for char in text:
            current = self._closure({nxt for state in current
                                     for chars, nxt in self.edges[state] if char in chars})
            if not current:
                return False
        return self.final in current


def _compile_glob(pattern: str) -> _Glob:
    """``*`` one run of name characters, ``**`` such runs joined by '/'; what starts
    the argument, a '/'-segment, an ``=`` value or an ``@file`` is not empty and never
    starts with '.' or '-', and ``**`` never starts with '/'."""
    edges: list[list[tuple[frozenset[str], int]]] = [[]]
    empty: list[list[int]] = [[]]

    def state() -> int:
        edges.append([])
        empty.append([])
        return len(edges) - 1

    cur, index = 0, 0
    for piece in re.split(r"(\*\*|\*)", pattern):
        starts = index == 0 or pattern[index - 1] in "/=@"
        if piece in ("*", "**"):
            name = state()  # inside a name
            if starts:
                edges[cur].append((_NAME_START, name))
            else:
                empty[cur].append(name)
            edges[name].append((_NAME_CHAR, name))
            if piece == "**":  # then '/' and another name, any number of times
                slash = state()
                edges[name].append((_SLASH, slash))
                nxt = state()
                edges[slash].append((_NAME_START, nxt))
                edges[nxt].append((_NAME_CHAR, nxt))
                edges[nxt].append((_SLASH, slash))
                out = state()
                empty[name].append(out)
                empty[nxt].append(out)
                name = out
            cur = name
        else:
            for char in piece:
                nxt = state()
                edges[cur].append((frozenset(char), nxt))
                cur = nxt
        index += len(piece)
    return _Glob(tuple(tuple(e) for e in edges), tuple(tuple(e) for e in empty), cur)


@dataclass(frozen=True, slots=True)
class ArgPattern:
    """One argument of an exec rule: literal text, or a glob whose ``*`` stands for
    letters, digits and ``._-`` (``**`` also ``/``), never starting an argument with
    ``-`` or a path segment with ``.``. Everything else must be written out."""

    text: str
    _glob: _Glob | None = field(repr=False, compare=False, default=None)

    @property
    def literal(self) -> bool:
        return "*" not in self.text

    def matches(self, arg: str) -> bool:
        if self.literal or self._glob is None:
            return arg == self.text
        if arg.startswith("-") and not self.text.startswith("-"):
            return False  # an option is never a wildcard's to grant
        return self._glob.fullmatch(arg)


def parse_arg_pattern(text: str) -> ArgPattern:
    """One argument pattern, or a ``UsageError``: an option (``-x``, ``--name``) is
    named exactly, a wildcard allowed only in its ``=value`` part."""
    if not text or not text.isprintable() or not text.isascii() or " " in text:
        raise UsageError(f"argument pattern {text!r} must be printable ASCII without spaces")
    if "***" in text:
        raise UsageError(f"argument pattern {text!r}: use '*' or '**', not '***'")
    if text.startswith("-") and "*" in text.partition("=")[0]:
        raise UsageError(f"argument pattern {text!r}: an option must be named exactly (a "
                         "wildcard may follow '=' only, e.g. '--state=*')")
    return ArgPattern(text, _compile_glob(text))


def parse_args_rule(text: str) -> tuple[ArgPattern, ...]:
    """An exec rule: space-separated argument patterns, one per argument."""
    if not isinstance(text, str) or not text.split():
        raise UsageError(f"args rule {text!r} must list argument patterns, e.g. 'api repos/**'")
    return tuple(parse_arg_pattern(part) for part in text.split())


def args_match(rule: tuple[ArgPattern, ...], args: list[str]) -> bool:
    """Argument by argument: as many arguments as patterns, each matching its own."""
    return len(rule) == len(args) and all(p.matches(a) for p, a in zip(rule, args, strict=True))


def parse_rule(text: str, effect: str, scope: str | None = None) -> Rule:
    """A rule from ``'GET /v1/charges/**'``, or a ``UsageError`` saying what is wrong."""
    if not isinstance(text, str) or not text.isprintable():
        raise UsageError(f"rule {text!r} must be printable text like 'GET /v1/charges/**'")
    parts = text.split()
    if len(parts) != 2:
        raise UsageError(f"rule {text!r} must be 'METHOD PATH', e.g. 'GET /v1/charges/**'")
    method, pattern = parts[0].upper(), parts[1]
    if method != "*" and method not in METHODS:
        raise UsageError(f"rule {text!r}: method must be one of {', '.join(METHODS)} or *")
    if not pattern.startswith("/") or "//" in pattern or "?" in pattern or "#" in pattern:
        raise UsageError(f"rule {text!r}: the path must start with '/' and hold no '//', "
                         "'?' or '#'")
    for segment in pattern.split("/")[1:]:
        if segment in (".", "..") or (segment != "**" and "**" in segment) or \
                not _PATTERN_SEGMENT.fullmatch(segment):
            raise UsageError(f"rule {text!r}: bad path segment {segment!r} (use '*' within a "
                             "segment, '**' alone for any depth)")
    if scope is not None and not _SCOPE.fullmatch(scope):
        raise UsageError(f"invalid scope {scope!r} for rule {text!r}")
    return Rule(effect, method, pattern, scope, _compile(pattern),
                _compile(_loosen(pattern.split("/")[1:])))


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``count`` calls per ``period`` seconds (a token bucket of that size)."""

    count: int
    period: float

    @property
    def text(self) -> str:
        for name in ("s", "min", "hour", "day"):
            if _PERIODS[name] == self.period:
                return f"{self.count}/{name}"
        return f"{self.count}/{self.period:g}s"


def parse_rate(text: str) -> RateLimit:
    """``100/min``, ``10/s``, ``1000/hour``, ``5/30s``."""
    from ..durations import parse_duration

    count, sep, period = str(text).partition("/")
    if not sep or not count.isdigit() or int(count) < 1 or int(count) > 1_000_000:
        raise UsageError(f"rate limit {text!r} must be N/PERIOD, e.g. 100/min or 10/s")
    seconds: float | None = _PERIODS.get(period)
    if seconds is None:
        try:
            delta = parse_duration(period)
            seconds = delta.total_seconds() if delta is not None else 0.0
        except UsageError:
            raise UsageError(f"rate limit {text!r}: the period must be s, min, hour, day or "
                             "a duration like 30s") from None
    if seconds <= 0:
        raise UsageError(f"rate limit {text!r}: the period must be positive")
    return RateLimit(int(count), float(seconds))


def check_auth(kind: str) -> str:
    """``bearer``, ``basic``, ``header:NAME``, ``query:NAME`` or ``sigv4:REGION:SERVICE``."""
    if kind in ("bearer", "basic"):
        return kind
    name, _, value = kind.partition(":")
    if name == "header" and _HEADER.fullmatch(value) and value.lower() not in (
            "host", "cookie", "content-length", "transfer-encoding", "connection"):
        return kind
    if name == "query" and _QUERY.fullmatch(value):
        return kind
    if name == "sigv4":
        region, _, service = value.partition(":")
        if re.fullmatch(r"[a-z0-9-]{2,32}", region) and re.fullmatch(r"[a-z0-9-]{2,32}",
                                                                      service):
            return kind
    raise UsageError(f"unknown auth kind {kind!r}: use bearer, basic, header:NAME, "
                     "query:NAME or sigv4:REGION:SERVICE")


@dataclass(frozen=True, slots=True)
class Service:
    """One upstream API: where it is, how its credential is injected, what is allowed."""

    name: str
    base_url: str
    auth: str
    secret: str  # a reference (keyring:..., env:..., vault:...), never a value
    allow: tuple[Rule, ...] = ()
    deny: tuple[Rule, ...] = ()
    rate_limit: RateLimit | None = None
    timeout: float = 30.0
    description: str = ""
    enabled: bool = True
    env: str | None = None  # the variable a vendor's MCP server reads its key from
    placeholder: str | None = None  # run --proxy: its format, e.g. "sk_live_{random}"
    websocket: bool = False  # run --proxy: allow WebSocket upgrades to this service
    kind: str = "http"  # or "exec": run one configured executable
    command: str | None = None  # exec: the absolute path, resolved when configured
    allow_args: tuple[str, ...] = ()  # exec: rules of argument patterns, one per argument
    secret_env: tuple[tuple[str, str], ...] = ()  # exec: (VARIABLE, reference)
    cwd: str | None = None  # exec: the directory it runs in (default: a fresh temp dir)
    _arg_rules: tuple[tuple[ArgPattern, ...], ...] = field(
        init=False, repr=False, compare=False, default=())

    def __post_init__(self) -> None:
        """Exec rules are parsed here, so a bad one is refused wherever it comes from."""
        object.__setattr__(self, "_arg_rules",
                           tuple(parse_args_rule(rule) for rule in self.allow_args))

    @property
    def host(self) -> str:
        from urllib.parse import urlsplit

        return urlsplit(self.base_url).netloc

    def decide(self, method: str, path: str, scopes: frozenset[str]) -> tuple[bool, str]:
        """``(allowed, why)``: deny rules win, then allow rules (a scoped rule counts only
        for callers holding its scope); anything unmatched is denied."""
        for rule in self.deny:
            if rule.matches(method, path) and (rule.scope is None or rule.scope in scopes):
                return False, f"denied by rule '{rule.describe()}'"
        held = None
        for rule in self.allow:
            if rule.matches(method, path):
                if rule.scope is None or rule.scope in scopes:
                    return True, f"allowed by rule '{rule.describe()}'"
                held = held or rule
        if held is not None:
            return False, (f"rule '{held.describe()}' would allow it, but the caller's key "
                           f"lacks scope {held.scope}")
        if not self.allow:
            return False, f"service {self.name} has no allow rule: it denies everything"
        return False, f"no rule allows {method} {path} (unmatched requests are denied)"

    def rules_for(self, scopes: frozenset[str]) -> list[str]:
        """The allow rules this caller can use."""
        if self.kind == "exec":
            return [f"exec {pattern}" for pattern in self.allow_args]
        return [rule.text for rule in self.allow if rule.scope is None or rule.scope in scopes]

    def args_allowed(self, args: list[str]) -> tuple[bool, str]:
        """Whether a rule matches ``args`` argument by argument (see ``ArgPattern``)."""
        for text, rule in zip(self.allow_args, self._arg_rules, strict=True):
            if args_match(rule, args):
                return True, f"allowed by args rule '{text}'"
        if not self.allow_args:
            return False, f"service {self.name} allows no arguments: it runs nothing"
        return False, (f"no args rule allows {args!r}"[:240] + " (each argument must match "
                       "its own pattern; options are allowed only when a rule names them)")

    def with_changes(self, **changes: Any) -> Service:
        return replace(self, **changes)
