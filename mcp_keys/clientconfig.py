"""What makes an MCP client send an mcp-keys key, without the key in it.

Each client's documented configuration shape, built from the server URL, a name and the
environment variable (or, for VS Code, the prompt) that holds the key at run time; and
an atomic merge into the client's file, with a 0600 backup of what was there (outside
the project, secrets redacted: see ``backups``).

Sources for the shapes (checked when this was written):
- Claude Code: code.claude.com/docs/en/mcp (``claude mcp add --transport http``,
  ``.mcp.json`` with ``"type": "http"`` and ``${VAR}`` expanded in ``url`` and ``headers``).
- Claude Desktop: its ``claude_desktop_config.json`` takes stdio servers only (entries
  with ``url`` are skipped), so a remote server is reached through ``mcp-remote``, whose
  README documents ``--header "Name:${VAR}"`` with the value taken from its environment.
- Cursor: cursor.com/docs (``.cursor/mcp.json``, ``mcpServers`` with ``url`` and
  ``headers``; ``${env:NAME}`` interpolation).
- VS Code: code.visualstudio.com/docs/copilot (``.vscode/mcp.json``, ``servers`` with
  ``"type": "http"``, ``inputs`` of ``"type": "promptString"`` with ``"password": true``,
  referenced as ``${input:ID}``).
- Windsurf: docs.windsurf.com/windsurf/cascade/mcp (``~/.codeium/windsurf/mcp_config.json``,
  ``serverUrl`` for remote servers, ``${env:NAME}`` in ``headers``).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .errors import McpKeysError, UsageError

CLIENTS = ("claude-code", "claude-desktop", "cursor", "vscode", "windsurf")
HEADERS = ("authorization", "x-api-key")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """One client's configuration: the JSON to merge into ``path`` (under ``section``),
    and, for Claude Code, the equivalent command line."""

    client: str
    path: Path
    section: str
    name: str
    entry: dict[str, Any]
    inputs: tuple[dict[str, Any], ...] = ()
    command: str | None = None
    notes: tuple[str, ...] = field(default=())

    def document(self) -> dict[str, Any]:
        """The smallest complete file holding this entry."""
        document: dict[str, Any] = {}
        if self.inputs:
            document["inputs"] = list(self.inputs)
        document[self.section] = {self.name: self.entry}
        return document


def default_path(client: str, home: Path | None = None) -> Path:
    """Where ``client`` reads its MCP servers (project files relative to the current
    directory, user files under ``home``)."""
    home = Path.home() if home is None else home
    if client == "claude-code":
        return Path(".mcp.json")
    if client == "cursor":
        return Path(".cursor") / "mcp.json"
    if client == "vscode":
        return Path(".vscode") / "mcp.json"
    if client == "windsurf":
        return home / ".codeium" / "windsurf" / "mcp_config.json"
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / "Claude" / "claude_desktop_config.json"
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA", home / "AppData" / "Roaming"))
        return base / "Claude" / "claude_desktop_config.json"
    return home / ".config" / "Claude" / "claude_desktop_config.json"


def user_path(client: str, home: Path | None = None) -> Path:
    """The client's per-user file where it has one (the gateway's entry belongs out of the
    workspace); VS Code's lives in a profile folder, so its project file is kept."""
    home = Path.home() if home is None else home
    if client == "claude-code":
        return home / ".claude.json"
    if client == "cursor":
        return home / ".cursor" / "mcp.json"
    return default_path(client, home)


def _check_names(client: str, name: str, env_var: str) -> None:
    """The client, the server's name and the key's variable, or a ``UsageError``."""
    if client not in CLIENTS:
        raise UsageError(f"unknown client {client!r}; choose one of {', '.join(CLIENTS)}")
    if not _NAME.fullmatch(name):
        raise UsageError(f"invalid server name {name!r}: use letters, digits, '.', '_' and "
                         "'-' (at most 64)")
    if not _VARIABLE.fullmatch(env_var):
        raise UsageError(f"invalid variable name {env_var!r}: use letters, digits and '_'")


def build(client: str, url: str, *, name: str = "mcp-keys", env_var: str = "MCP_API_KEY",
          header: str = "authorization", secret: str | None = None,
          path: Path | None = None) -> ClientConfig:
    """The configuration for ``client``; a ``UsageError`` names a bad argument."""
    from .resources import canonical

    _check_names(client, name, env_var)
    canonical(url)  # an http(s) URL with no user info, query or fragment
    if header not in HEADERS:
        raise UsageError(f"unknown header {header!r}; choose authorization or x-api-key")
    target = default_path(client) if path is None else path
    header_name = "Authorization" if header == "authorization" else "X-API-Key"

    def value(reference: str) -> str:
        return f"Bearer {reference}" if header == "authorization" else reference

    if client == "claude-code":
        entry = {"type": "http", "url": url, "headers": {header_name: value(f"${{{env_var}}}")}}
        command = shlex.join(["claude", "mcp", "add", "--transport", "http", "--scope",
                              "project", name, url, "--header",
                              f"{header_name}: {value('${' + env_var + '}')}"])
        return ClientConfig(client, target, "mcpServers", name, entry, command=command, notes=(
            f"set {env_var} in the environment that starts Claude Code; .mcp.json holds "
            f"only ${{{env_var}}}",))
    if client == "claude-desktop":
        reference = secret or f"keyring:mcp-keys/{name}"
        from .secrets.reference import parse_reference

        parse_reference(reference)
        import shutil

        # Claude Desktop starts servers with a bare PATH: name the executable in full.
        entry = {"command": shutil.which("mcp-keys") or "mcp-keys", "args": [
            "run", "--env", f"{env_var}={reference}", "--", "npx", "-y", "mcp-remote", url,
            "--header", f"{header_name}:{value('${' + env_var + '}')}"]}
        notes = [f"Claude Desktop reads only stdio servers: mcp-keys run resolves {reference} "
                 "and mcp-remote sends the header"]
        if reference.startswith("keyring:"):
            notes.append(f"store the key first: mcp-keys secret set {reference} < key.txt")
        return ClientConfig(client, target, "mcpServers", name, entry, notes=tuple(notes))
    if client == "vscode":
        prompt = f"{name}-api-key"
        inputs = ({"type": "promptString", "id": prompt, "password": True,
                   "description": f"mcp-keys key for {name}"},)
        entry = {"type": "http", "url": url,
                 "headers": {header_name: value(f"${{input:{prompt}}}")}}
        return ClientConfig(client, target, "servers", name, entry, inputs=inputs, notes=(
            "VS Code asks for the key once and keeps it in its secret storage",))
    key = "serverUrl" if client == "windsurf" else "url"
    entry = {key: url, "headers": {header_name: value(f"${{env:{env_var}}}")}}
    return ClientConfig(client, target, "mcpServers", name, entry, notes=(
        f"set {env_var} in the environment that starts the editor",))


def gateway_store_argument(store: str | None) -> str:
    """The gateway's store as the client must name it: an absolute path (a client starts
    servers in a directory of its own choosing, often the agent's workspace, where a
    relative path would find a store the agent can write), or a URL without a password."""
    from urllib.parse import urlsplit

    from .gateway.workspace import gateway_store
    from .stores import is_url

    location = gateway_store(store)
    if is_url(location):
        if urlsplit(location).password:
            raise UsageError("the store URL holds a password, which would be written into "
                             "the client's file: put it in ~/.pgpass or PGPASSWORD instead")
        return location
    return os.path.abspath(os.path.expanduser(location))


def gateway(client: str, *, store: str | None = None, name: str = "mcp-keys-gateway",
            env_var: str = "MCP_API_KEY", secret: str | None = None,
            path: Path | None = None) -> ClientConfig:
    """A stdio entry that starts ``mcp-keys gateway serve --store /absolute/keys.json``
    with the agent's mcp-keys key resolved from a reference by ``mcp-keys run``."""
    import shutil

    from .secrets.reference import parse_reference

    _check_names(client, name, env_var)
    reference = secret or f"keyring:mcp-keys/{name}"
    parse_reference(reference)
    program = shutil.which("mcp-keys") or "mcp-keys"
    args = ["run", "--env", f"{env_var}={reference}", "--", program, "gateway", "serve",
            "--store", gateway_store_argument(store)]
    entry: dict[str, Any] = {"command": program, "args": args}
    if client in ("claude-code", "vscode"):
        entry = {"type": "stdio", **entry}
    target = user_path(client) if path is None else path
    section = "servers" if client == "vscode" else "mcpServers"
    notes = [f"the gateway reads its store and services.toml from {args[-1]}, named in full "
             "so the directory the client starts it in does not matter"]
    if not target.is_absolute():
        notes.append(f"{target} is in the workspace, where an agent could change this "
                     "entry: prefer the client's user configuration (--file)")
    if reference.startswith("keyring:"):
        notes.append(f"store the agent's key first: mcp-keys secret set {reference} < "
                     "agent-key.txt")
    command = None
    if client == "claude-code":
        command = shlex.join(["claude", "mcp", "add", "--scope", "user", name, "--",
                              program, *args])
    return ClientConfig(client, target, section, name, entry, command=command,
                        notes=tuple(notes))


def _redacted(path: Path, old: bytes, new: bytes) -> bytes:
    """The old file with its hard-coded secrets replaced by a marker, for the backup. A
    secret the new file no longer holds (it sat in the entry being replaced) would be
    lost with the backup redacted: that write is refused."""
    from .backups import hard_coded, redact_config

    text = old.decode("utf-8")
    kept = new.decode("utf-8")
    for item in hard_coded(path, text):
        if json.dumps(item.value, ensure_ascii=False)[1:-1] not in kept:
            raise McpKeysError(
                f"{path}: {item.path} holds a hard-coded secret that this write would replace; "
                f"move it first (mcp-keys scan --fix {path}) or remove it by hand; nothing "
                "was changed")
    return redact_config(path, text).encode("utf-8")


@dataclass(frozen=True, slots=True)
class WriteReport:
    path: Path
    created: bool
    replaced: bool
    backup: Path | None


def _load(path: Path, follow_symlink: bool) -> tuple[dict[str, Any] | None, int | None]:
    from .safefs import read_regular

    if path.is_symlink() and not follow_symlink:
        raise McpKeysError(f"{path} is a symlink; give --follow-symlink to write through it, "
                           "or --file for another path; nothing was changed")
    try:
        found = read_regular(path)
    except OSError as exc:
        raise McpKeysError(f"cannot read {path}: {exc.strerror or exc}; nothing was changed"
                           ) from None
    if found is None:
        return None, None
    raw, info = found
    try:
        document = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except (UnicodeDecodeError, ValueError):
        raise McpKeysError(f"{path} is not plain JSON (comments or trailing commas?); add the "
                           "entry printed without --write by hand; nothing was changed"
                           ) from None
    if not isinstance(document, dict):
        raise McpKeysError(f"{path} is not a JSON object; nothing was changed")
    return document, info.st_mode & 0o7777


def write(config: ClientConfig, *, follow_symlink: bool = False,
          now: datetime | None = None) -> WriteReport:
    """Merge ``config`` into its file: other servers, inputs and settings are kept, an
    entry of the same name is replaced, the old file is copied first to a 0600 backup in
    the per-user backup directory (hard-coded secrets redacted), and the new one replaces
    it atomically under a lock."""
    from .atomic import write_atomic
    from .locking import LockFile, LockTimeout
    from .safefs import make_private_dirs

    path = config.path
    if path.parent != Path() and not path.parent.exists():
        make_private_dirs(path.parent)
    lock = LockFile(path.with_name(f".{path.name}.mcp-keys.lock"), timeout=10)
    try:
        lock.acquire()
    except LockTimeout:
        raise McpKeysError(f"another mcp-keys is writing {path}; try again") from None
    except OSError as exc:
        raise McpKeysError(f"cannot lock {path}: {exc.strerror or exc}") from None
    try:
        found, mode = _load(path, follow_symlink)
        document = {} if found is None else found
        section = document.setdefault(config.section, {})
        if not isinstance(section, dict):
            raise McpKeysError(f"{path}: {config.section!r} is not an object; nothing was "
                               "changed")
        replaced = config.name in section
        section[config.name] = config.entry
        if config.inputs:
            inputs = document.setdefault("inputs", [])
            if not isinstance(inputs, list):
                raise McpKeysError(f"{path}: 'inputs' is not a list; nothing was changed")
            ids = {item.get("id") for item in inputs if isinstance(item, dict)}
            inputs.extend(item for item in config.inputs if item["id"] not in ids)
        data = (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode()
        target = Path(os.path.realpath(path)) if follow_symlink else path
        backup = None
        try:
            if found is not None:
                from .backups import write_backup

                old = target.read_bytes()
                backup = write_backup(target, _redacted(path, old, data), now=now)
            write_atomic(target, data, mode=0o600 if mode is None else mode)
        except OSError as exc:
            raise McpKeysError(f"cannot write {path}: {exc.strerror or exc}") from None
        return WriteReport(path, created=found is None, replaced=replaced, backup=backup)
    finally:
        lock.remove()
        lock.release()
