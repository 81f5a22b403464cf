"""Every string of a parsed config, with the name it sits under and where (a server's
``env``, ``headers``, ``args`` or ``url``, or anywhere else), for the detectors to classify; a
JSON path and a line are worked out only for a string a detector reports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from .configs import Candidate, _key
from .detectors import is_secret_name

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: the scan path does not import typing
if TYPE_CHECKING:
    from typing import Any

    Keys = tuple[Any, ...]  # (parent keys, key): a JSON path built in O(1) per step


class Walker:
    """Collects the strings of one parsed config with where they sit; a JSON path is
    spelled out only for a string a detector could care about. ``entries``: the server
    entries by ``id``; ``formats``: the provider keys anywhere in the file's text."""

    __slots__ = ("entries", "file", "formats", "found")

    def __init__(self, file: Path, entries: dict[int, str], formats: list[str]) -> None:
        self.file = file
        self.entries = entries
        self.formats = formats
        self.found: list[Candidate] = []

    def walk(self, node: Any, keys: Keys, server: str | None, name: str, where: str) -> None:
        if type(node) is dict:  # json.loads makes exact dicts, lists and strs: type() is
            entry = self.entries.get(id(node))  # cheaper than isinstance, per node
            if entry is not None:
                server = entry
            # [{"name": "API_KEY", "value": "…"}] (Kubernetes style): the name it gives
            pair = node.get("name", node.get("key")) if "value" in node else None
            for key, value in node.items():
                kind = type(value)
                if kind is str:
                    if len(value) >= 8:
                        self.string(value, (keys, key), server,
                                    pair if key == "value" and type(pair) is str else key,
                                    where if entry is None else _table(key))
                elif kind is dict or kind is list:
                    self.walk(value, (keys, key), server, key,
                              where if entry is None else _table(key))
                if len(key) >= 20 and _STRONG_KEY.fullmatch(key):
                    self.add((keys, key), server, "", key, where)
        elif type(node) is list:
            args = where == "args"
            for index, value in enumerate(node):
                kind = type(value)
                if kind is str:
                    if len(value) < 8:
                        continue  # nor can a part of it (--k=v) be a secret
                    if args and (value[:1] == "-" or (index
                                                      and str(node[index - 1])[:1] == "-")):
                        item_name, value = _arg(node, index, value)
                    else:
                        item_name = name
                    if len(value) >= 8:
                        self.string(value, (keys, index), server, item_name, where)
                elif kind is dict or kind is list:
                    self.walk(value, (keys, index), server, name, where)

    def string(self, value: str, keys: Keys, server: str | None, name: str,
               where: str) -> None:
        if value[0] in "{[" and value[-1] in "}]":  # JSON in a string (OPENAPI_MCP_HEADERS)
            try:
                inner = json.loads(value)
            except ValueError:
                inner = None
            if isinstance(inner, (dict, list)):
                self.walk(inner, keys, server, name, "config")
                return
        if value[:2] == "${" and value[-1] == "}" and "}" not in value[2:-1]:
            return  # ${VAR}, ${env:VAR}, ${input:id}: a reference, whatever its name
        if is_secret_name(name) or (self.formats and any(t in value for t in self.formats)) \
                or ("://" in value and ("@" in value or "?" in value)) \
                or (("=" in value or ":" in value) and (assignment := _ASSIGNMENT.match(value))
                    and is_secret_name(assignment.group(1))) \
                or value[:6].lower() in ("bearer", "basic ", "token ") \
                or ("=" in value and " " in value):
            self.add(keys, server, name, value, where)  # else: no detector could report it

    def add(self, keys: Keys, server: str | None, name: str, value: str,
            where: str) -> None:
        path = _flatten(keys)
        if (where == "url" and (not path or path[-1] not in _URLS)) \
                or (where in _TABLES and (len(path) < 2 or path[-2] != where)):
            where = "config"  # nested deeper than the table (or the URL) itself
        self.found.append(Candidate(self.file, 0, "", name, value, server, where, path))


_TABLES = ("env", "headers", "args")
_URLS = ("url", "serverUrl")  # a remote server's address: ``scan --fix`` moves a key out


def _table(key: str) -> str:
    """Where a value directly under a server entry sits: its table, ``url``, or
    ``config``."""
    return key if key in _TABLES else "url" if key in _URLS else "config"


def _flatten(keys: Keys) -> tuple[str | int, ...]:
    out: list[str | int] = []
    while keys:
        keys, last = keys
        out.append(last)
    return tuple(reversed(out))


_ASSIGNMENT = re.compile(r"^-{0,2}([A-Za-z_][A-Za-z0-9_.-]*)\s*[=:]")
_STRONG_KEY = re.compile(r"[A-Za-z0-9_-]{20,}")


def _arg(args: list[Any], index: int, value: str) -> tuple[str, str]:
    """``(name, secret)`` of one ``args`` item: ``--flag=VALUE`` or the item after
    ``--flag``, under the flag's name; any other item under no name."""
    flag, equals, inline = value.partition("=")
    if equals and inline and flag.startswith("-"):
        return flag.lstrip("-"), inline
    previous = args[index - 1] if index else ""
    if isinstance(previous, str) and previous.startswith("-") and "=" not in previous:
        return previous.lstrip("-"), value
    return "", value


def locate(item: Candidate, text: str) -> Candidate:
    """``item`` with its JSON path and line worked out (a walk leaves them out: most
    strings are no secret and never need them)."""
    if item.keys is None:
        return item
    keys = item.keys
    path = "".join(f"[{k}]" if isinstance(k, int) else f".{_key(k)}" for k in keys)
    anchor = _offset(text, json.dumps(item.server), 0) if item.server is not None else 0
    last = keys[-1] if keys else None
    line = _line(text, last if isinstance(last, str) else None, item.value, anchor)
    return item.replace(line=line, path=path.lstrip("."), keys=None)


def _offset(text: str, needle: str, start: int) -> int:
    found = text.find(needle, start)
    return found if found >= 0 else start


def _line(text: str, name: str | None, value: str, anchor: int) -> int:
    encoded = json.dumps(value)
    position = -1
    if name is not None:  # "name": "value", from the server's entry on
        key = json.dumps(name)
        found = text.find(key, anchor)
        while found >= 0 and position < 0:
            after = found + len(key)
            rest = text[after:after + 200].lstrip()
            if rest.startswith(":") and rest[1:].lstrip().startswith(encoded):
                position = found
            found = text.find(key, after)
    if position < 0:
        position = _offset(text, encoded, anchor)
    for needle in (json.dumps(encoded)[1:-1], encoded[1:-1]):  # JSON in a string; --k=v
        if position != anchor or encoded in text:
            break
        position = _offset(text, needle, anchor)
    return text.count("\n", 0, position) + 1
