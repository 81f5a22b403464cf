"""``scan --fix``: move each hard-coded secret of an MCP client config into a secret
source, and make the server entry read it from there.

A stdio server entry (``command``) is rewritten to launch through ``mcp-keys run`` (by
the absolute path of the installed executable, so the client finds it) with ``--env
VAR=REFERENCE``; a secret in its ``args`` becomes ``${VAR}``, which ``run`` expands. A
header or URL (or an ``env`` value with ``style="env-ref"``) becomes the client's own
variable syntax (``${VAR}`` for Claude Code, ``${env:VAR}`` for Cursor, VS Code and
Windsurf), and the command that starts the client with ``VAR`` set is printed; Claude
Desktop expands nothing, so its remote entries go through ``mcp-keys run`` and
``mcp-remote``. The file is rewritten atomically with its key order and indentation,
after a backup (0600, in the per-user backup directory, never beside the config) in
which each moved value is replaced by where it went. A file that cannot be rewritten
(comments, say) is reported and the others are still fixed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import McpKeysError, UsageError
from .configs import load_json
from .destinations import check_destination, store_secret
from .scanner import Finding

FIXABLE = ("env", "headers", "args", "url")
CLIENT_NAMES = {"claude-code": "Claude Code", "claude-desktop": "Claude Desktop",
                "cursor": "Cursor", "vscode": "VS Code", "windsurf": "Windsurf"}
CLIENT_PROGRAMS = {"claude-code": "claude", "cursor": "cursor", "vscode": "code",
                   "windsurf": "windsurf"}
# How each client writes "the value of environment variable X" in url, headers and env
# (the same choices as clientconfig.py); Claude Desktop has none.
SYNTAX = {"claude-code": "${%s}", "cursor": "${env:%s}", "vscode": "${env:%s}",
          "windsurf": "${env:%s}"}
ARGV_NOTE = ("the value reaches the server in its argv, which other users of this host can "
             "read in /proc/PID/cmdline; if the server also reads it from an environment "
             "variable, use that instead")
_SENTINEL = "\x00mcp-keys:%s\x00"


@dataclass(frozen=True, slots=True)
class Fixed:
    """One moved secret: where it went, how the entry reads it now, and the variable."""

    finding: Finding
    reference: str
    style: str  # "run" (mcp-keys run sets it) or "env-ref" (the client expands it)
    variable: str = ""
    backup: Path | None = None  # the redacted copy of the file as it was
    in_argv: bool = False  # run puts the value in the server's argv


def client_of(path: Path) -> str | None:
    """Which client reads ``path`` (by its usual name and place), or ``None``."""
    name, parent = path.name.lower(), path.parent.name.lower()
    if name == "claude_desktop_config.json":
        return "claude-desktop"
    if name in (".mcp.json", ".claude.json"):
        return "claude-code"
    if parent == ".cursor":
        return "cursor"
    if parent == ".vscode" or (parent == "user" and path.parent.parent.name in
                               ("Code", "Code - Insiders", "VSCodium")):
        return "vscode"
    if parent == "windsurf" or name == "mcp_config.json":
        return "windsurf"
    return None


def mcp_keys_executable() -> str:
    """The absolute path of the installed ``mcp-keys`` (what the client will launch)."""
    found = shutil.which("mcp-keys")
    if found:
        return str(Path(found).resolve())
    candidate = Path(sys.executable).parent / "mcp-keys"
    if candidate.exists():
        return str(candidate)
    raise McpKeysError("cannot find the mcp-keys executable on PATH; install mcp-keys "
                       "where the MCP client can run it")


def variable_for(finding: Finding) -> str:
    """The variable a moved secret is read from: an ``env`` value's own name; anything
    else the server's name and the header, flag or URL part it was under."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", finding.candidate.name if finding.candidate else "")
    if finding.where in ("headers", "args", "url") or not name or name[0].isdigit():
        server = re.sub(r"[^A-Za-z0-9]", "_", finding.server or "server").upper()
        name = f"{server}_{name.upper() or 'SECRET'}".strip("_")
        name = re.sub(r"_+", "_", name)
    return "_" + name if name[0].isdigit() else name


def stored_value(finding: Finding) -> str:
    """The part of a finding's value that goes into the secret source: a header without
    its ``Bearer``; in an argument or URL, the key that was recognised, else all of it."""
    assert finding.candidate is not None
    value = finding.candidate.value
    scheme = re.match(r"(?i)^(bearer|token|basic)\s+", value)
    if scheme and finding.where == "headers":
        value = value[scheme.end():]  # the header keeps "Bearer ", the source the token
    if finding.where in ("args", "url"):
        from .detectors import find_formats

        for _, token in find_formats(value):
            return token
    return value


def url_parts(finding: Finding) -> list[Finding]:
    """A URL finding as one finding per credential the URL carries (its password, a key in
    a path segment, a query value), each under its own name (``api_key``, ``password``):
    each moves to its own variable. Any other finding as it is."""
    if finding.where != "url" or finding.candidate is None:
        return [finding]
    from .detectors import url_credentials

    candidate = finding.candidate
    return [finding.replace(candidate=candidate.replace(name=name, value=written))
            for _, name, written in url_credentials(candidate.value)] or [finding]


def fix_findings(findings: list[Finding], destination: str, *, style: str = "run",
                 confirm: Callable[[Finding, str], bool] = lambda f, r: True,
                 say: Callable[[str], None] = print, allow_plaintext: bool = False,
                 store: str | None = None) -> list[Finding]:
    """Fix every file that can be fixed, say what was done and what the user must do
    next, and return the findings that remain (a file that could not be fixed is said
    and skipped; its findings remain)."""
    by_file: dict[Path, list[Finding]] = {}
    parts: dict[int, list[Finding]] = {}  # a finding -> what moves (a URL: each credential)
    for finding in findings:
        if finding.commit is None and finding.where in FIXABLE:
            parts[id(finding)] = url_parts(finding)
            by_file.setdefault(finding.file, []).extend(parts[id(finding)])
    if by_file:
        check_destination(destination, allow_plaintext=allow_plaintext)
    moved: set[int] = set()
    for path, items in by_file.items():
        try:
            fixed = fix_file(path, items, destination, style=style, confirm=confirm,
                             allow_plaintext=allow_plaintext)
        except UsageError:
            raise
        except McpKeysError as exc:
            say(f"Not fixed: {exc}")
            continue
        for item in fixed:
            moved.add(id(item.finding))
            say(f"Fixed {path}: {item.finding.path} -> {item.reference} ({item.style}); "
                f"backup (secrets redacted) in {item.backup}")
            say_after(item, say, store)
        exports = {item.variable: item.reference for item in fixed if item.style == "env-ref"}
        if exports:
            say(start_command(client_of(path), exports))
    # a finding is fixed when all that was in it moved (every credential of a URL)
    return [f for f in findings
            if not all(id(part) in moved for part in parts.get(id(f), [None]))]


def say_after(item: Fixed, say: Callable[[str], None], store: str | None) -> None:
    """What the user must know about one moved secret."""
    finding = item.finding
    if item.in_argv:
        say(f"  note: {finding.path}: {ARGV_NOTE}")
    if finding.kind == "mcp-keys-key" and finding.key_id:
        prefix = f"mcp-keys --store {shlex.quote(store)}" if store else "mcp-keys"
        rotate = f"{prefix} rotate {finding.key_id}"
        if item.reference.startswith("dotenv:"):
            env_path, _, var = item.reference[len("dotenv:"):].rpartition("#")
            rotate += f" --env-file {shlex.quote(env_path)} --env-var {var}"
        elif item.reference.startswith("keyring:"):
            rotate += (f", then store the new key: mcp-keys secret set "
                       f"{item.reference} < new-key.txt")
        else:
            rotate += f", then write the new key to {item.reference}"
        status = finding.key_status or "unknown"
        state = "is still active" if status == "active" else f"is {status} in the local store"
        say(f"  note: mcp-keys key {finding.key_id} {state}: moving it did not retire "
            "the value that was in the file (and its copies, history and backups). "
            f"Retire it: {rotate}")


def start_command(client: str | None, exports: dict[str, str]) -> str:
    """The command that starts ``client`` with each variable set from its reference."""
    binds = " ".join(f"--env {shlex.quote(f'{var}={ref}')}" for var, ref in exports.items())
    names = ", ".join(exports)
    program = CLIENT_PROGRAMS.get(client or "")
    if program is None:
        return (f"  next: the client must see {names} in its environment; start it as: "
                f"mcp-keys run {binds} -- CLIENT")
    return (f"  next: {CLIENT_NAMES[client or '']} must see {names}; start it with: "
            f"mcp-keys run {binds} -- {program}")


def fix_file(path: Path, findings: list[Finding], destination: str, *, style: str = "run",
             confirm: Callable[[Finding, str], bool] = lambda f, r: True,
             allow_plaintext: bool = False) -> list[Fixed]:
    """Fix every finding of one config file; returns what was done."""
    from ..atomic import write_atomic

    client = client_of(path)  # the client's name for it decides the ${...} style
    path = Path(os.path.realpath(path))  # a symlinked (dotfiles) config: write its target
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise McpKeysError(f"cannot rewrite {path}: {getattr(exc, 'strerror', None) or exc}; "
                           "nothing was changed") from None
    try:
        data = json.loads(text)
    except ValueError:
        try:
            load_json(text)
        except ValueError:
            raise McpKeysError(f"{path} is not JSON; fix it by hand") from None
        raise McpKeysError(f"{path} has comments; fix it by hand (mcp-keys keeps every byte "
                           "it rewrites, and cannot keep comments)") from None
    if "\x00" in text:
        raise McpKeysError(f"{path} holds a NUL character; fix it by hand")
    indent = _indent(text)
    fixed: list[Fixed] = []
    bound: dict[int, tuple[dict[str, Any], set[str]]] = {}  # entries run now sets vars for
    names: dict[str, str] = {}  # variable -> value, unique in this file
    # arguments first: their indices are those of the file as it was
    for finding in sorted(findings, key=lambda f: f.where != "args"):
        if finding.candidate is None or finding.where not in FIXABLE:
            continue
        entry = _entry(data, finding.path, 2 if finding.where in ("env", "headers") else 1)
        if entry is None or (finding.where == "args" and "command" not in entry):
            continue
        if not confirm(finding, destination):
            continue
        variable = _unique(variable_for(finding), stored_value(finding), names)
        ref = store_secret(destination, finding.server, variable, stored_value(finding),
                           allow_plaintext=allow_plaintext)
        use, in_argv = _apply(entry, finding, variable, ref, client, style)
        if use == "run":
            bound.setdefault(id(entry), (entry, set()))[1].add(variable)
        fixed.append(Fixed(finding, ref, use, variable, None, in_argv))
    for entry, variables in bound.values():
        _finish_run(entry, variables)
    body = json.dumps(data, indent=indent, ensure_ascii=False)
    # a value still in the file was not moved (it sat somewhere no rewrite reached): it
    # stays a finding, never "Fixed"
    fixed = [f for f in fixed
             if json.dumps(stored_value(f.finding), ensure_ascii=False)[1:-1] not in body]
    if fixed:
        from ..backups import marker, redact_config, write_backup

        moved = {stored_value(f.finding): marker(f.reference) for f in fixed}
        backup = write_backup(path, redact_config(path, text, moved).encode("utf-8"))
        fixed = [Fixed(f.finding, f.reference, f.style, f.variable, backup, f.in_argv)
                 for f in fixed]
        write_atomic(path, (body + ("\n" if text.endswith("\n") else "")).encode("utf-8"),
                     mode=os.stat(path).st_mode & 0o777 & ~0o077)
    return fixed


def _unique(variable: str, value: str, names: dict[str, str]) -> str:
    candidate, n = variable, 2
    while names.get(candidate, value) != value:
        candidate, n = f"{variable}_{n}", n + 1
    names[candidate] = value
    return candidate


def _apply(entry: dict[str, Any], finding: Finding, variable: str, ref: str,
           client: str | None, style: str) -> tuple[str, bool]:
    """Make ``entry`` read ``variable`` instead of the value: "run" or "env-ref", and
    whether the value will sit in the server's argv."""
    assert finding.candidate is not None
    value = stored_value(finding)
    syntax = SYNTAX.get(client or "", "${%s}")
    if finding.where == "args":
        index = int(finding.path.rpartition("[")[2].rstrip("]"))
        args = entry["args"]
        # mcp-remote expands ${VAR} in --header itself, from run's environment: the value
        # stays out of argv ($$ keeps run from expanding it first)
        header = _mcp_remote_header(entry, index)
        args[index] = args[index].replace(value, ("$" if header else "") + _SENTINEL % variable)
        _bind(entry, variable, ref)
        return "run", not header
    if finding.where == "env" and "command" in entry and \
            (style == "run" or client == "claude-desktop"):
        env = entry.get("env", {})
        env.pop(finding.candidate.name, None)
        if not env:
            entry.pop("env", None)
        _bind(entry, finding.candidate.name, ref)
        return "run", False
    if client == "claude-desktop" and finding.where in ("headers", "url"):
        _remote_through_run(entry)  # Desktop expands nothing: mcp-remote under run
        header = finding.where == "headers"
        placeholder = ("$" if header else "") + _SENTINEL % variable
        entry["args"] = [a.replace(value, placeholder) if isinstance(a, str) else a
                         for a in entry["args"]]
        _bind(entry, variable, ref)
        return "run", not header
    if finding.where == "url":
        key = finding.path.rpartition(".")[2]
        entry[key] = entry[key].replace(value, syntax % variable)
        return "env-ref", False
    table = entry[finding.where]
    table[finding.candidate.name] = table[finding.candidate.name].replace(
        value, syntax % variable)
    return "env-ref", False


def _mcp_remote_header(entry: dict[str, Any], index: int) -> bool:
    """Whether ``args[index]`` is the value of an ``mcp-remote --header``."""
    args = [a if isinstance(a, str) else "" for a in entry.get("args", [])]
    program = [str(entry.get("command", "")), *args[:index]]
    return index > 0 and args[index - 1] == "--header" and any(
        re.search(r"(^|/)mcp-remote(@[^/]*)?$", word) for word in program)


def _bind(entry: dict[str, Any], variable: str, ref: str) -> None:
    """Launch ``entry`` through ``mcp-keys run`` with ``--env variable=ref``."""
    binding = f"{variable}={ref}"
    executable = mcp_keys_executable()
    args = [a for a in entry.get("args", []) if isinstance(a, str)]
    if Path(str(entry.get("command", ""))).name == "mcp-keys" and args[:1] == ["run"]:
        split = args.index("--") if "--" in args else len(args)
        if binding not in args[:split]:
            entry["args"] = [*args[:split], "--env", binding, *args[split:]]
        entry["command"] = executable
        return
    entry["args"] = ["run", "--env", binding, "--", str(entry.get("command", "")), *args]
    entry["command"] = executable


def _finish_run(entry: dict[str, Any], variables: set[str]) -> None:
    """Escape what would now expand by mistake (a literal ``${VAR}`` for a variable just
    bound), then put the ``${VAR}`` placeholders in."""
    from ..launch import escape_arguments

    args = entry["args"]
    split = args.index("--") + 1 if "--" in args else len(args)
    tail = escape_arguments(args[split + 1:], variables)
    for variable in variables:
        tail = [arg.replace(_SENTINEL % variable, "${" + variable + "}") for arg in tail]
    entry["args"] = [*args[:split + 1], *tail]


def _remote_through_run(entry: dict[str, Any]) -> None:
    """Turn a remote entry (``url`` and ``headers``) into the stdio entry Claude Desktop
    runs: ``mcp-keys run … -- npx -y mcp-remote URL --header Name:value``."""
    if "command" in entry:
        return
    url = str(entry.pop("url", entry.pop("serverUrl", "")))
    headers = entry.pop("headers", {}) or {}
    entry.pop("type", None)
    args = ["npx", "-y", "mcp-remote", url]
    for name, value in headers.items():
        args += ["--header", f"{name}:{value}"]
    entry["command"] = "npx"
    entry["args"] = args[1:]


def _indent(text: str) -> int | str:
    match = re.search(r"\n([ \t]+)\S", text)
    if match is None:
        return 2
    whitespace = match.group(1)
    return "\t" if whitespace.startswith("\t") else len(whitespace)


def _entry(data: Any, json_path: str, depth: int) -> dict[str, Any] | None:
    """The server entry a finding's path points into (``depth`` keys above its end)."""
    parts = re.findall(r'"(?:[^"\\]|\\.)*"|[^.]+', json_path)
    keys = [json.loads(p) if p.startswith('"') else p for p in parts]
    node = data
    for key in keys[:-depth]:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node if isinstance(node, dict) else None
