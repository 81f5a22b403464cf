"""Where MCP client configs live, and the values in them that could be secrets.

Claude Desktop, Claude Code, Cursor, VS Code and Windsurf keep MCP servers under
``mcpServers`` (VS Code: ``servers``, or ``mcp.servers`` in its settings), each with
``env``, ``headers`` and ``args``; every other string of a config is read too
(``strings.py``), and so are the comments of JSON with comments and trailing commas (VS
Code's). Every candidate carries its file, line and JSON path.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from ..errors import McpKeysError
from .record import Record

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: the scan path does not import typing
if TYPE_CHECKING:
    from typing import Any

SKIP_DIRS = {".git", "node_modules", ".venv", "venv", "__pycache__", ".mcp-keys", ".tox"}
MAX_FILE_BYTES = 5 * 1024 * 1024


class Candidate(Record):
    """One value found in a file; ``value`` never leaves the process (no ``repr``).
    ``where``: env | headers | args | url | config (any other field) | dotenv | comment |
    text; ``keys``: the JSON path, until ``strings.locate`` spells it out."""

    _fields = ("file", "line", "path", "name", "value", "server", "where", "keys")
    __slots__ = _fields
    _unshown = frozenset({"value", "keys"})
    _uncompared = frozenset({"keys"})
    file: Path
    line: int
    path: str
    name: str
    value: str
    server: str | None
    where: str
    keys: tuple[str | int, ...] | None

    def __init__(self, file: Path, line: int, path: str, name: str, value: str,
                 server: str | None = None, where: str = "env",
                 keys: tuple[str | int, ...] | None = None) -> None:
        self._set(file=file, line=line, path=path, name=name, value=value, server=server,
                  where=where, keys=keys)


def default_paths(home: Path | None = None, cwd: Path | None = None) -> list[Path]:
    """The configs a user has (those that exist), and the files below ``cwd`` whose names
    say config or ``.env`` (backups and copies included)."""
    home = home or Path.home()
    cwd = cwd or Path.cwd()
    appdata = Path(os.environ.get("APPDATA", home / "AppData" / "Roaming"))
    candidates = [
        home / "Library" / "Application Support" / "Claude" / "claude_desktop_config.json",
        appdata / "Claude" / "claude_desktop_config.json",
        home / ".config" / "Claude" / "claude_desktop_config.json",
        home / ".claude.json",
        cwd / ".mcp.json",
        home / ".cursor" / "mcp.json",
        cwd / ".cursor" / "mcp.json",
        cwd / ".vscode" / "mcp.json",
        home / ".config" / "Code" / "User" / "settings.json",
        home / ".config" / "Code" / "User" / "mcp.json",
        home / "Library" / "Application Support" / "Code" / "User" / "settings.json",
        home / ".codeium" / "windsurf" / "mcp_config.json",
    ]
    found = [p for p in dict.fromkeys(candidates) if p.is_file()]
    return found + [p for p in walk(cwd, sniff=False) if p not in found]


_CONFIG_NAME = re.compile(r"\.(?:env|jsonc?|json5)(?:\.|$)")
_CONFIG_START = re.compile(rb"\A(?:\xef\xbb\xbf)?(?:\s|//[^\n]*|/\*(?:[^*]|\*(?!/))*\*/)*\{")
_SNIFF_BYTES = 64 * 1024


def worth_scanning(path: Path, *, sniff: bool = True) -> bool:
    """Whether a folder walk scans ``path``: a name with a ``.json`` or ``.env`` part,
    whatever follows (``mcp.json.bak``, ``.mcp.json.orig``, ``.env.local``, ``prod.env``,
    ``settings.json~``; not ``env.py``), or any other file that opens as a JSON object
    naming MCP servers (a backup renamed beyond recognition)."""
    if _CONFIG_NAME.search(path.name.lower().rstrip("~#")):
        return True
    if not sniff:
        return False
    try:
        with open(path, "rb") as handle:
            head = handle.read(256)
            if not _CONFIG_START.match(head):
                return False  # most files: one short read
            head += handle.read(_SNIFF_BYTES)
    except OSError:
        return False
    return bool(_CONFIG_START.match(head)) and (b'"mcpServers"' in head
                                                 or b'"servers"' in head)


def walk(root: Path, *, sniff: bool = True) -> Iterator[Path]:
    """The files below ``root`` worth scanning (see ``worth_scanning``), and any other
    that holds an mcp-keys key (``holds_a_key``), in order; ``sniff=False`` (the default
    scan of the current folder) goes by names and keys only."""
    try:
        entries = sorted(os.scandir(root), key=lambda entry: entry.name)
    except OSError:
        return
    folders = []
    for entry in entries:  # a folder's files first, then its folders, each in name order
        if entry.is_dir(follow_symlinks=False):
            if entry.name not in SKIP_DIRS:
                folders.append(entry.path)
        elif entry.is_file():
            path = Path(entry.path)
            if _CONFIG_NAME.search(entry.name.lower().rstrip("~#")) \
                    or worth_scanning(path, sniff=sniff) or holds_a_key(path):
                yield path
    for folder in folders:
        yield from walk(Path(folder), sniff=sniff)


def holds_a_key(path: Path) -> bool:
    """Whether a file of any name (``key.txt``, ``notes.md``) holds something shaped like
    an mcp-keys key; the scan then reports it if the key checks out."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            return False
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError:
        return False
    return b"mcpk_" in data and b"\0" not in data[:8000]


def expand(paths: list[Path]) -> list[Path]:
    """Files as given, whatever their names; folders walked (``walk``)."""
    result: list[Path] = []
    for path in paths:
        result += walk(path) if path.is_dir() else [path]
    return result


def candidates(path: Path, text: str) -> Iterator[Candidate]:
    """Every value in ``path`` worth classifying: a file that opens as a JSON object (after
    comments) is read as a client config, any other as a ``.env`` file, whatever its name."""
    if looks_like_json(text):
        yield from _json_candidates(path, text)
    else:
        yield from _dotenv_candidates(path, text)


def looks_like_json(text: str) -> bool:
    """Whether ``text`` opens as a JSON object (after whitespace and comments)."""
    return _CONFIG_START.match(text[:_SNIFF_BYTES].encode("utf-8", "replace")) is not None


_COMMENT_PAIR = re.compile(r'"([^"\\\n]{1,200})"\s*:\s*"([^"\\\n]*)"'
                           r"|([A-Za-z_][A-Za-z0-9_.-]*)\s*[=:]\s*[\"']?([^\s\"',]+)")
_WORD = re.compile(r"[^\s\"'`,;()\[\]{}]{8,}")


def _dotenv_candidates(path: Path, text: str) -> Iterator[Candidate]:
    import io

    from dotenv.parser import parse_stream

    for binding in parse_stream(io.StringIO(text)):
        if binding.key and binding.value:
            yield Candidate(path, binding.original.line, binding.key, binding.key,
                            binding.value, None, "dotenv")
        elif binding.key is None and binding.original.string.lstrip().startswith("#"):
            yield from _loose_candidates(path, binding.original.string,
                                         binding.original.line, "comment")
        elif binding.key is None or binding.value is None:  # a bare key in a text file
            yield from _loose_candidates(path, binding.original.string,
                                         binding.original.line, "text")


def _loose_candidates(path: Path, text: str, line: int, where: str) -> Iterator[Candidate]:
    """Values in free text (a comment, a line that is no assignment): ``"NAME": "value"``
    and ``NAME=value`` pairs under their names, and every other word on its own."""
    taken: list[tuple[int, int]] = []
    for match in _COMMENT_PAIR.finditer(text):
        name = match.group(1) or match.group(3)
        value = match.group(2) if match.group(1) is not None else match.group(4)
        if value:
            taken.append(match.span())
            yield Candidate(path, line + text.count("\n", 0, match.start()),
                            f"({where}).{_key(name)}", name, value, None, where)
    for match in _WORD.finditer(text):
        if not any(a <= match.start() < b for a, b in taken):
            yield Candidate(path, line + text.count("\n", 0, match.start()),
                            f"({where})", "", match.group(0), None, where)


def strip_jsonc(text: str, comments: list[tuple[int, int]] | None = None) -> str:
    """JSON with ``//`` and ``/* */`` comments and trailing commas, as plain JSON of the
    same length (comments blanked), so offsets and line numbers still match; each
    comment's span is added to ``comments`` when given."""
    out = list(text)
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
        elif text.startswith("//", i):
            start = i
            while i < n and text[i] != "\n":
                out[i] = " "
                i += 1
            if comments is not None:
                comments.append((start, i))
            continue
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end = n if end < 0 else end + 2
            for j in range(i, end):
                if out[j] != "\n":
                    out[j] = " "
            if comments is not None:
                comments.append((i, end))
            i = end
            continue
        i += 1
    cleaned = "".join(out)
    return re.sub(r",(\s*[}\]])", lambda m: " " + m.group(1), cleaned)


def load_json(text: str, comments: list[tuple[int, int]] | None = None) -> Any:
    """A config's data, read as JSON, else as JSON with comments (their spans go into
    ``comments``)."""
    try:
        return json.loads(text)
    except ValueError:
        return json.loads(strip_jsonc(text, comments))


def server_tables(data: Any, prefix: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """``(json path, {name: server})`` for every server table in a config."""
    if not isinstance(data, dict):
        return
    for key in ("mcpServers", "servers"):
        if isinstance(data.get(key), dict):
            yield f"{prefix}{key}", data[key]
    if isinstance(data.get("mcp"), dict):
        yield from server_tables(data["mcp"], f"{prefix}mcp.")
    if isinstance(data.get("projects"), dict):  # ~/.claude.json keeps one table per project
        for project, settings in data["projects"].items():
            yield from server_tables(settings, f"{prefix}projects.{_key(project)}.")


def _key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)


def _json_candidates(path: Path, text: str) -> Iterator[Candidate]:
    """Every string of the document (and of JSON held in a string), under the name of the
    field it sits in; an ``args`` item under the flag before it (``--api-key VALUE``,
    ``--api-key=VALUE``); and the text of every comment."""
    from .detectors import find_formats, worth_a_look

    if not worth_a_look(text):
        return  # nothing a detector could report: no parse
    formats = [token for _, token in find_formats(text)]
    comments: list[tuple[int, int]] = []
    try:
        data = load_json(text, comments)
    except ValueError:
        return
    entries = {id(entry): server for _, table in server_tables(data)
               for server, entry in table.items() if isinstance(entry, dict)}
    from .strings import Walker

    walker = Walker(path, entries, formats)
    walker.walk(data, (), None, "", "config")
    yield from walker.found
    for start, end in comments:
        line = text.count("\n", 0, start) + 1
        yield from _loose_candidates(path, text[start:end], line, "comment")


def read_text(path: Path) -> str | None:
    """A file's text (UTF-8, or UTF-16 with a byte-order mark; undecodable bytes replaced,
    since secrets are ASCII), or ``None`` for what is not a regular file of sane size; a
    file given but not read is said on stderr, never skipped in silence."""
    from ..errors import warn
    from ..safefs import read_regular

    try:
        found = read_regular(path, limit=MAX_FILE_BYTES)
    except (OSError, McpKeysError) as exc:
        warn("%s was not scanned: %s", path, getattr(exc, "strerror", None) or exc)
        return None
    if found is None:
        warn("%s was not scanned: no such file", path)
        return None
    raw = found[0]
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16", "replace")
    return raw.decode("utf-8-sig", "replace")


if sys.platform == "win32":  # pragma: no cover
    SKIP_DIRS.add("AppData")
