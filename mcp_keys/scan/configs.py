"""Where MCP client configs live, and the values in them that could be secrets.

Claude Desktop, Claude Code, Cursor, VS Code and Windsurf keep MCP servers under
``mcpServers`` (VS Code: ``servers``, or ``mcp.servers`` in its settings), each with
``env``, ``headers`` and ``args``. JSON with comments and trailing commas (VS Code's) is
read too. Every candidate carries its file, line and JSON path.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import McpKeysError

SKIP_DIRS = {".git", "node_modules", ".venv", "venv", "__pycache__", ".mcp-keys", ".tox"}
MAX_FILE_BYTES = 5 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Candidate:
    """One value found in a file; ``value`` never leaves the process."""

    file: Path
    line: int
    path: str
    name: str
    value: str = field(repr=False)
    server: str | None = None
    where: str = "env"  # env | headers | args | dotenv


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
    """The files below ``root`` worth scanning (see ``worth_scanning``), in order;
    ``sniff=False`` (the default scan of the current folder) goes by names only."""
    for directory, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        for name in sorted(files):
            path = Path(directory) / name
            if path.is_file() and worth_scanning(path, sniff=sniff):
                yield path


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


def _dotenv_candidates(path: Path, text: str) -> Iterator[Candidate]:
    import io

    from dotenv.parser import parse_stream

    for binding in parse_stream(io.StringIO(text)):
        if binding.key and binding.value:
            yield Candidate(path, binding.original.line, binding.key, binding.key,
                            binding.value, None, "dotenv")


def strip_jsonc(text: str) -> str:
    """JSON with ``//`` and ``/* */`` comments and trailing commas, as plain JSON of the
    same length (comments blanked), so offsets and line numbers still match."""
    out = list(text)
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
        elif text.startswith("//", i):
            while i < n and text[i] != "\n":
                out[i] = " "
                i += 1
            continue
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end = n if end < 0 else end + 2
            for j in range(i, end):
                if out[j] != "\n":
                    out[j] = " "
            i = end
            continue
        i += 1
    cleaned = "".join(out)
    return re.sub(r",(\s*[}\]])", lambda m: " " + m.group(1), cleaned)


def load_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return json.loads(strip_jsonc(text))


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
    if "mcpServers" not in text and "servers" not in text and "\\u" not in text:
        return  # no server table can be in it (package.json and friends): no parse
    try:
        data = load_json(text)
    except ValueError:
        return
    for table_path, servers in server_tables(data):
        for server, entry in servers.items():
            if not isinstance(entry, dict):
                continue
            base = f"{table_path}.{_key(server)}"
            anchor = _offset(text, json.dumps(server), 0)
            for where in ("env", "headers"):
                values = entry.get(where)
                if isinstance(values, dict):
                    for name, value in values.items():
                        if isinstance(value, str):
                            yield Candidate(path, _line(text, name, value, anchor),
                                            f"{base}.{where}.{_key(name)}", name, value,
                                            server, where)
            args = entry.get("args")
            if isinstance(args, list):
                for index, value in enumerate(args):
                    if not isinstance(value, str):
                        continue
                    name, _, inline = value.partition("=")
                    if inline and name.startswith("-"):
                        shown, secret = name, inline
                    else:
                        previous = args[index - 1] if index else ""
                        shown = previous if isinstance(previous, str) and \
                            previous.startswith("-") else ""
                        secret = value
                    yield Candidate(path, _line(text, None, value, anchor),
                                    f"{base}.args[{index}]", shown.lstrip("-"), secret,
                                    server, "args")
            for key in ("url", "serverUrl"):  # a key in a remote server's URL
                url = entry.get(key)
                if not isinstance(url, str):
                    continue
                for name, secret in url_parts(url):
                    yield Candidate(path, _line(text, key, url, anchor), f"{base}.{key}",
                                    name, secret, server, "url")


def url_parts(url: str) -> Iterator[tuple[str, str]]:
    """``(name, text)`` for each part of ``url`` that could hold a key, as written: the
    password of its user info, each path segment (name ``""``) and each query value."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    if ":" in userinfo:
        yield "password", userinfo.partition(":")[2]
    for segment in parts.path.split("/"):
        if segment:
            yield "", segment
    for pair in parts.query.split("&"):
        name, _, value = pair.partition("=")
        if value:
            yield name, value


def _offset(text: str, needle: str, start: int) -> int:
    found = text.find(needle, start)
    return found if found >= 0 else start


def _line(text: str, name: str | None, value: str, anchor: int) -> int:
    encoded = json.dumps(value)
    if name is not None:
        match = re.compile(re.escape(json.dumps(name)) + r"\s*:\s*" + re.escape(encoded)
                           ).search(text, anchor)
        position = match.start() if match else _offset(text, encoded, anchor)
    else:
        position = _offset(text, encoded, anchor)
    return text.count("\n", 0, position) + 1


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
