"""The ``mcp-keys`` executable. ``mcp-keys run`` with plain arguments starts the command
without loading the CLI framework (click costs more than the whole budget of a launcher
that sits in front of every MCP server start), and so do ``mcp-keys list --json`` (what
monitoring and scripts poll) and ``mcp-keys scan PATH... --json`` (CI gates); everything
else goes to the Click CLI. Each fast path calls
the same library as its Click command and prints the same bytes (a test compares them)."""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: `mcp-keys run` must not import typing
if TYPE_CHECKING:
    from typing import NoReturn


def _plain_run(args: list[str]) -> tuple[list[str], str | None, bool, list[str]] | None:
    """``--env``, ``--env-file-refs``, ``--mask`` and ``-- COMMAND``, or ``None`` for
    anything else (help, an unknown option, no ``--``): Click handles those."""
    pairs: list[str] = []
    ref_file: str | None = None
    mask = False
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return pairs, ref_file, mask, args[i + 1:]
        if arg == "--mask":
            mask = True
        elif arg in ("--env", "--env-file-refs") and i + 1 < len(args):
            if arg == "--env":
                pairs.append(args[i + 1])
            else:
                ref_file = args[i + 1]
            i += 1
        elif arg.startswith("--env="):
            pairs.append(arg[len("--env="):])
        else:
            return None
        i += 1
    return None


def _take_store(args: list[str]) -> tuple[str | None, list[str]]:
    """Every ``--store X`` and ``--store=X`` taken out of ``args``: the store (the last
    wins, as in Click) and the other arguments in order (a ``--store`` with no value stays
    among them, for the caller to refuse)."""
    store: str | None = None
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--store" and i + 1 < len(args):
            store = args[i + 1]
            i += 1
        elif arg.startswith("--store="):
            store = arg[len("--store="):]
        else:
            rest.append(arg)
        i += 1
    return store, rest


def _plain_list(args: list[str]) -> tuple[str | None] | None:
    """``[--store X] list --json [--store X]``: the store (the last ``--store`` wins, as
    in Click), or ``None`` for any other command line."""
    store, rest = _take_store(args)
    seen: list[str] = []
    for arg in rest:
        if arg in ("list", "--json") and arg not in seen:
            if arg == "--json" and "list" not in seen:
                return None  # a global --json is Click's to refuse
            seen.append(arg)
        else:
            return None
    return (store,) if seen == ["list", "--json"] else None


def _list_json(store: str | None) -> NoReturn:
    import json

    from .errors import McpKeysError, set_warning_sink
    from .manager import KeyManager
    from .terminal import error_line, warning_line

    set_warning_sink(lambda message: print(warning_line(message), file=sys.stderr))
    try:
        manager = KeyManager(store)
        manager.require_store()
        keys = manager.list()
        sys.stdout.write(json.dumps([key.to_dict() for key in keys], indent=2,
                                    ensure_ascii=False) + "\n")
        sys.stdout.flush()
    except McpKeysError as exc:
        print(error_line(str(exc)), file=sys.stderr)
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        sys.exit(1)
    sys.exit(0)


def _plain_scan(args: list[str]) -> tuple[str | None, list[str]] | None:
    """``[--store X] scan PATH... --json [--store X]`` with every PATH there: the store
    and the paths, or ``None`` for any other command line (Click's to handle)."""
    import os

    store, rest = _take_store(args)
    paths: list[str] = []
    seen: list[str] = []
    for arg in rest:
        if arg in ("scan", "--json") and arg not in seen and (arg == "scan" or seen):
            seen.append(arg)
        elif seen and not arg.startswith("-") and os.path.exists(arg):
            paths.append(arg)
        else:
            return None
    return (store, paths) if seen == ["scan", "--json"] and paths else None


def _scan_json(store: str | None, paths: list[str]) -> NoReturn:
    """What ``mcp-keys scan PATH... --json`` prints, without loading Click."""
    import os
    from pathlib import Path

    from .scan import scan
    from .scan.configs import expand
    from .scan.report import json_lines
    from .scan.scanner import NOTE

    store = store if store is not None else os.environ.get("MCP_KEYS_STORE") or None
    findings = scan(expand([Path(p) for p in paths]), store=store)
    try:
        sys.stdout.write(json_lines(findings))
        sys.stdout.flush()
    except BrokenPipeError:
        sys.exit(1)
    sys.exit(1 if any(f.level != NOTE for f in findings) else 0)


def main() -> NoReturn:
    argv = sys.argv[1:]
    listing = _plain_list(argv) if "list" in argv else None
    if listing is not None:
        _list_json(listing[0])
    scanning = _plain_scan(argv) if "scan" in argv and "--json" in argv else None
    if scanning is not None:
        _scan_json(*scanning)
    plain = _plain_run(argv[1:]) if argv[:1] == ["run"] else None
    if plain is not None and plain[3]:
        from .errors import McpKeysError
        from .launch import (
            exec_command,
            parse_bindings,
            read_reference_file,
            resolve_all,
            run_masked,
        )
        from .terminal import error_line

        pairs, ref_file, mask, command = plain
        try:
            bindings = read_reference_file(ref_file) if ref_file else {}
            bindings.update(parse_bindings(pairs))
            resolved = resolve_all(bindings)
            if mask:
                sys.exit(run_masked(command, resolved))
            exec_command(command, resolved)
        except McpKeysError as exc:
            print(error_line(str(exc)), file=sys.stderr)
            sys.exit(exc.exit_code)
    from .cli import main as cli_main

    cli_main()
