"""``scan --fix``: move each hard-coded secret of an MCP client config into a secret
source, and make the server entry read it from there.

A stdio server entry (``command``) is rewritten to launch through ``mcp-keys run`` (by
the absolute path of the installed executable, so the client finds it) with ``--env
VAR=REFERENCE``; a header, or any entry with ``style="env-ref"``, becomes ``${VAR}`` for
clients that expand it. The file is rewritten atomically with its key order and
indentation, after a backup (0600, in the per-user backup directory, never beside the
config) in which each moved value is replaced by where it went. Files with comments are
left for a person.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import McpKeysError, UsageError
from .configs import load_json
from .scanner import Finding


@dataclass(frozen=True, slots=True)
class Fixed:
    finding: Finding
    reference: str
    style: str  # "run" or "env-ref"
    backup: Path | None = None  # the redacted copy of the file as it was


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
    name = re.sub(r"[^A-Za-z0-9_]", "_", finding.candidate.name if finding.candidate else "")
    if finding.where == "headers" or not name or name[0].isdigit():
        server = re.sub(r"[^A-Za-z0-9]", "_", finding.server or "server").upper()
        name = f"{server}_{name.upper() or 'SECRET'}".strip("_")
    return name


def stored_value(finding: Finding) -> str:
    """The part of a finding's value that goes into the secret source."""
    assert finding.candidate is not None
    value = finding.candidate.value
    scheme = re.match(r"(?i)^(bearer|token|basic)\s+", value)
    if scheme and finding.where == "headers":
        value = value[scheme.end():]  # the header keeps "Bearer ", the source the token
    return value


def store_secret(destination: str, finding: Finding, variable: str) -> str:
    """Put the value where ``destination`` says; return the reference that reads it."""
    value = stored_value(finding)
    server = re.sub(r"[^A-Za-z0-9_.-]", "-", finding.server or "server")
    if destination == "keyring":
        from ..secrets.reference import parse_reference
        from ..secrets.sources.keyring import store

        ref = f"keyring:mcp-keys/{server}.{variable}"
        store(parse_reference(ref), value)
        return ref
    if destination.startswith("dotenv:"):
        from ..envfile import set_variable

        path = Path(destination[len("dotenv:"):]).expanduser().resolve()
        set_variable(path, variable, value)
        return f"dotenv:{path}#{variable}"
    if destination.startswith("vault:"):
        from ..secrets.sources.vault import vault_path, write

        ref = f"vault:{destination[len('vault:'):].rstrip('/')}/{server}#{variable}"
        from ..secrets.reference import parse_reference

        parsed = parse_reference(ref)
        write(*vault_path(parsed), parsed.field or variable, value)
        return ref
    raise UsageError(f"--to {destination!r}: use keyring, dotenv:PATH or vault:MOUNT/PATH")


def fix_file(path: Path, findings: list[Finding], destination: str, *, style: str = "run",
             confirm: Callable[[Finding, str], bool] = lambda f, r: True) -> list[Fixed]:
    """Fix every finding of one config file; returns what was done."""
    from ..atomic import write_atomic

    shown = path  # the client's name for it decides the ${...} style
    path = Path(os.path.realpath(path))  # a symlinked (dotfiles) config: write its target
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise McpKeysError(f"cannot rewrite {path}: {getattr(exc, 'strerror', None) or exc}; "
                           "nothing was changed") from None
    try:
        data = json.loads(text)
    except ValueError:
        load_json(text)  # raises if it is not even JSON with comments
        raise McpKeysError(f"{path} has comments; fix it by hand (mcp-keys keeps every byte "
                           "it rewrites, and cannot keep comments)") from None
    indent = _indent(text)
    fixed: list[Fixed] = []
    for finding in findings:
        if finding.candidate is None or finding.where not in ("env", "headers"):
            continue
        entry = _entry(data, finding.path)
        if entry is None:
            continue
        variable = variable_for(finding)
        use = "env-ref" if finding.where == "headers" or "command" not in entry else style
        if not confirm(finding, destination):
            continue
        ref = store_secret(destination, finding, variable)
        if use == "run":
            _launch_through_run(entry, finding.candidate.name, variable, ref)
        else:
            _env_ref(entry, finding, variable, shown)
        fixed.append(Fixed(finding, ref, use))
    if fixed:
        from ..backups import marker, redact_config, write_backup

        moved = {stored_value(f.finding): marker(f.reference) for f in fixed}
        backup = write_backup(path, redact_config(path, text, moved).encode("utf-8"))
        fixed = [Fixed(f.finding, f.reference, f.style, backup) for f in fixed]
        body = json.dumps(data, indent=indent, ensure_ascii=False)
        write_atomic(path, (body + ("\n" if text.endswith("\n") else "")).encode("utf-8"),
                     mode=os.stat(path).st_mode & 0o777 & ~0o077)
    return fixed


def _indent(text: str) -> int | str:
    match = re.search(r"\n([ \t]+)\S", text)
    if match is None:
        return 2
    whitespace = match.group(1)
    return "\t" if whitespace.startswith("\t") else len(whitespace)


def _entry(data: Any, json_path: str) -> dict[str, Any] | None:
    """The server entry a finding's path points into."""
    parts = re.findall(r'"(?:[^"\\]|\\.)*"|[^.]+', json_path)
    keys = [json.loads(p) if p.startswith('"') else p for p in parts]
    node = data
    for key in keys[:-2]:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node if isinstance(node, dict) else None


def _launch_through_run(entry: dict[str, Any], name: str, variable: str, ref: str) -> None:
    env = entry.get("env", {})
    env.pop(name, None)
    if not env:
        entry.pop("env", None)
    binding = f"{name}={ref}"
    executable = mcp_keys_executable()
    args = [a for a in entry.get("args", []) if isinstance(a, str)]
    if Path(str(entry.get("command", ""))).name == "mcp-keys" and args[:1] == ["run"]:
        split = args.index("--") if "--" in args else len(args)
        entry["args"] = [*args[:split], "--env", binding, *args[split:]]
        entry["command"] = executable
        return
    entry["args"] = ["run", "--env", binding, "--", str(entry.get("command", "")), *args]
    entry["command"] = executable


def _env_ref(entry: dict[str, Any], finding: Finding, variable: str, path: Path) -> None:
    assert finding.candidate is not None
    table = entry[finding.where]
    value = table[finding.candidate.name]
    braces = "${env:" + variable + "}" if path.parent.name in (".cursor", ".vscode") \
        else "${" + variable + "}"
    prefix = re.match(r"(?i)^(bearer|token|basic)\s+", value)
    table[finding.candidate.name] = (prefix.group(0) if prefix else "") + braces
