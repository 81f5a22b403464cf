"""A PostgreSQL store URL never shows its password, however malformed the URL.

A corpus of URLs (an unclosed ``[``, unencoded ``@ : / # ?`` in the password, broken
percent-escapes, Unicode, an empty host, a garbage port, a very long password, a password
in the query) goes through every CLI command (as ``--store`` and as ``MCP_KEYS_STORE``),
through the real executable, and through ``KeyManager`` and ``Validator``. No output,
``repr``, exception or exception it chains may hold the password or any four characters
of it, and nothing may print a traceback.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from mcp_keys import KeyManager, Reason, Validator
from mcp_keys.audit_verify import verify
from mcp_keys.cli import COMMANDS, cli
from mcp_keys.errors import McpKeysError
from mcp_keys.tokens import generate
from tests.conftest import free_port, mcp_keys_cmd, one_error_line

A, B = "Zq7Wv9Xk", "Jm3Yp8Rt"  # four-character pieces that no message holds
CLOSED = free_port()  # nothing listens: a URL that parses fails to connect at once
SLOW_VERIFY = ("Unicode", "very long")  # the parsed cases whose validator waits 10 s


@dataclass(frozen=True)
class Case:
    """A URL and the password hidden in it."""

    name: str
    url: str
    password: str
    hidden: bool  # the URL cannot be parsed with certainty: shown as <URL hidden>


def case(name: str, password: str, template: str, *, hidden: bool) -> Case:
    return Case(name, template.format(pw=password, port=CLOSED), password, hidden)


CORPUS = [
    case("unclosed [", f"{A}[{B}", "postgresql://u:{pw}@127.0.0.1:{port}/db", hidden=True),
    case("lone ]", f"{A}]{B}", "postgresql://u:{pw}@127.0.0.1:{port}/db", hidden=True),
    case("unclosed [ in the host", f"{A}{B}", "postgresql://u:{pw}@[::1/db", hidden=True),
    case("unencoded @", f"{A}@{B}", "postgresql://u:{pw}@127.0.0.1:{port}/db", hidden=True),
    case("two unencoded @", f"{A}@{B}@x", "postgresql://u:{pw}@127.0.0.1:{port}/db",
         hidden=True),
    case("unencoded /", f"{A}/{B}", "postgresql://u:{pw}@127.0.0.1:{port}/db", hidden=True),
    case("digits then /", f"5432/{A}{B}", "postgresql://u:{pw}@127.0.0.1:{port}/db",
         hidden=True),
    case("unencoded #", f"{A}#{B}", "postgresql://u:{pw}@127.0.0.1:{port}/db", hidden=True),
    case("unencoded ?", f"{A}?{B}", "postgresql://u:{pw}@127.0.0.1:{port}/db", hidden=True),
    case("broken escape", f"{A}%zz{B}", "postgresql://u:{pw}@127.0.0.1:{port}/db",
         hidden=True),
    case("cut escape", f"{A}%{B}", "postgresql://u:{pw}@127.0.0.1:{port}/db", hidden=True),
    case("escape of no UTF-8", f"{A}%FF{B}", "postgresql://u:{pw}@127.0.0.1:{port}/db",
         hidden=True),
    case("unknown parameter", f"{A}{B}", "postgresql://u:{pw}@127.0.0.1:{port}/db?bogus=1",
         hidden=True),
    case("& in a query password", f"{A}&{B}",
         "postgresql://u@127.0.0.1:{port}/db?password={pw}", hidden=True),
    case("a space", f"{A} {B}", "postgresql://u:{pw}@127.0.0.1:{port}/db", hidden=True),
    case("an escaped NUL", f"{A}%00{B}", "postgresql://u:{pw}@127.0.0.1:{port}/db",
         hidden=True),
    case("user with @", f"{A}@{B}", "postgres://{pw}@127.0.0.1:{port}/db", hidden=True),
    case("unencoded :", f"{A}:{B}", "postgresql://u:{pw}@127.0.0.1:{port}/db", hidden=False),
    case("Unicode", f"{A}ключé☃{B}", "postgresql://u:{pw}@127.0.0.1:{port}/db", hidden=False),
    case("encoded @", f"{A}%40{B}", "postgresql://u:{pw}@127.0.0.1:{port}/db", hidden=False),
    case("empty host", f"{A}{B}", "postgresql://u:{pw}@/db?host=/nonexistent", hidden=False),
    case("garbage port", f"{A}{B}", "postgresql://u:{pw}@127.0.0.1:99x/db", hidden=False),
    case("very long", (A + B) * 400, "postgresql://u:{pw}@127.0.0.1:{port}/db", hidden=False),
    case("query password", f"{A}+{B}", "postgresql://u@127.0.0.1:{port}/db?password={pw}",
         hidden=False),
    case("escaped parameter name", f"{A}{B}",
         "postgresql://u@127.0.0.1:{port}/db?%70assword={pw}", hidden=False),
    case("quotes", f"{A}'\"{B}", "postgresql://u:{pw}@127.0.0.1:{port}/db", hidden=False),
    case("sslpassword", f"{A}{B}",
         "postgresql://u@127.0.0.1:{port}/db?sslpassword={pw}&sslmode=disable", hidden=False),
]


def pieces(password: str) -> set[str]:
    """Every four-character piece of the password, and its decoded form's."""
    from urllib.parse import unquote

    found = set()
    for text in {password, unquote(password)}:
        found |= {text[i:i + 4] for i in range(len(text) - 3)}
    return found


def assert_hidden(text: str, item: Case, where: str) -> None:
    leaked = [piece for piece in pieces(item.password) if piece in text]
    assert not leaked, f"{item.name}: {len(leaked)} pieces of the password in {where}"
    assert "Traceback" not in text, f"{item.name}: a traceback in {where}"


def chain(exc: BaseException | None) -> Iterator[BaseException]:
    """The exception, its cause and its context, all the way down."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        if exc.__cause__ is not None:
            yield from chain(exc.__cause__)
        exc = exc.__context__


def assert_exception_hidden(exc: BaseException | None, item: Case, where: str) -> None:
    for link in chain(exc):
        assert_hidden(f"{link!s} {link!r} {link.args!r}", item, f"{where} (exception chain)")


def commands(tmp: Path) -> list[list[str]]:
    """One invocation of every command and subcommand (arguments just enough to run)."""
    token = generate()
    return [
        ["init"], ["create", "svc"], ["list"], ["list", "--json"], ["show", "abcd"],
        ["verify", token], ["revoke", "abcd"], ["rotate", "abcd"], ["delete", "abcd", "--yes"],
        ["sweep"], ["sweep", "--json"], ["require", "on", "--env-file", str(tmp / ".env")],
        ["audit"], ["audit", "--json"], ["audit", "verify"], ["doctor"], ["doctor", "--json"],
        ["migrate", "--to", str(tmp / "copy.json")],
        ["secret", "check", "env://HOME"], ["secret", "set", "env://X"],
        ["run", "--mask", "--", "/bin/true"],
        ["run", "--proxy", "--", "/bin/true"], ["scan", str(tmp)],
        ["service", "add", "svc", "--base-url", "https://api.example.com"],
        ["service", "disable", "svc"], ["service", "edit", "svc"], ["service", "enable", "svc"],
        ["service", "list"], ["service", "remove", "svc"], ["service", "show", "svc"],
        ["service", "test", "svc"], ["gateway", "serve"], ["ca", "rotate"], ["ca", "show"],
        ["client-config", "claude-code", "--url", "http://127.0.0.1:1/mcp"],
        ["completion", "bash"],
    ]


def test_every_command_is_in_the_corpus_run(tmp_path: Path) -> None:
    ctx = click.Context(cli)

    def leaves(command: click.Command | None, path: tuple[str, ...]) -> set[tuple[str, ...]]:
        assert command is not None, path
        if isinstance(command, click.Group):
            return {leaf for name in command.list_commands(ctx)
                    for leaf in leaves(command.get_command(ctx, name), (*path, name))}
        return {path}

    everything = {leaf for name in COMMANDS for leaf in leaves(cli.get_command(ctx, name),
                                                               (name,))}
    run = [tuple(argv) for argv in commands(tmp_path)]
    missing = [" ".join(leaf) for leaf in everything
               if not any(argv[:len(leaf)] == leaf for argv in run)]
    assert not missing, f"commands not run with the corpus: {missing}"


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MCP_KEYS_STORE", raising=False)
    return tmp_path


@pytest.mark.parametrize("item", CORPUS, ids=[c.name for c in CORPUS])
def test_no_command_shows_the_password(item: Case, workdir: Path) -> None:
    runner = CliRunner()
    for argv in commands(workdir):
        if argv[0] == "run":  # it needs real file descriptors: run as a process
            done = subprocess.run(mcp_keys_cmd("--store", item.url, *argv), cwd=workdir,
                                  capture_output=True, text=True, check=False, timeout=60)
            assert_hidden(done.stdout + done.stderr, item, " ".join(argv[:2]))
            continue
        ways = [("--store", ["--store", item.url, *argv], {}),
                ("MCP_KEYS_STORE", argv, {"MCP_KEYS_STORE": item.url})]
        if argv[0] == "verify" and not item.hidden and item.name not in SLOW_VERIFY:
            continue  # waits for a database that is not there (10 s): two cases suffice
        for how, args, env in ways[:1] if argv[0] == "verify" and not item.hidden else ways:
            result = runner.invoke(cli, args, env=env, input="value\n")
            where = f"{how} {argv[0]} {argv[1] if len(argv) > 1 else ''}"
            assert_hidden(result.stdout + result.stderr, item, where)
            assert result.exception is None or isinstance(result.exception, SystemExit), \
                f"{item.name}: {where} raised {type(result.exception).__name__}"
            assert result.exit_code in (0, 1, 2), f"{item.name}: {where}: {result.exit_code}"
    KeyManager(workdir / "keys.json").create("svc")
    copied = runner.invoke(cli, ["migrate", "--from", str(workdir / "keys.json"),
                                 "--to", item.url])
    assert_hidden(copied.stdout + copied.stderr, item, "migrate --to")
    assert copied.exit_code in (1, 2) and isinstance(copied.exception, SystemExit)
    listed = runner.invoke(cli, ["--store", item.url, "list"])
    line = one_error_line(listed.stderr)
    if item.hidden:
        assert listed.exit_code == 2 and "invalid PostgreSQL URL" in line and \
            "percent-encode" in line, f"{item.name}: {line}"
    else:
        assert listed.exit_code == 1 and "PostgreSQL store" in line, f"{item.name}: {line}"


@pytest.mark.parametrize("item", CORPUS, ids=[c.name for c in CORPUS])
def test_the_library_never_shows_the_password(item: Case, workdir: Path) -> None:
    manager = KeyManager(item.url)
    assert_hidden(repr(manager) + repr(manager.store) + repr(manager.audit), item, "repr")
    operations: dict[str, Callable[[], object]] = {"init": manager.init, "list": manager.list,
                  "create": lambda: manager.create("svc"),
                  "revoke": lambda: manager.revoke("abcd"),
                  "audit": lambda: manager.audit.read(), "verify": lambda: verify(manager.audit)}
    for name, operation in operations.items():
        with pytest.raises(McpKeysError) as caught:
            operation()
        assert_exception_hidden(caught.value, item, name)
    if not item.hidden and item.name not in SLOW_VERIFY:
        return  # the validator waits 10 s for a database that is not there
    check = Validator(item.url, refresh_interval=0)
    try:
        result = check.validate(generate())
        assert result.reason is Reason.STORE_ERROR, f"{item.name}: {result.reason}"
        assert_hidden(repr(check) + repr(result) + str(result.to_dict()
                      if hasattr(result, "to_dict") else ""), item, "validator")
    finally:
        check.close()


@pytest.mark.parametrize("item", [c for c in CORPUS if c.name in (
    "unclosed [", "unencoded @", "broken escape", "Unicode")], ids=lambda c: c.name)
def test_the_executable_never_shows_the_password(item: Case, tmp_path: Path) -> None:
    """The real entry point, including the ``list --json`` fast path."""
    env = {**os.environ, "MCP_KEYS_STORE": item.url}
    for argv in (["list", "--json"], ["list"], ["create", "svc"], ["doctor"]):
        done = subprocess.run(mcp_keys_cmd(*argv), env=env, cwd=tmp_path, capture_output=True,
                              text=True, check=False, timeout=60)
        assert_hidden(done.stdout + done.stderr, item, f"mcp-keys {' '.join(argv)}")
        assert done.returncode in (1, 2), f"{item.name}: exit {done.returncode}"
