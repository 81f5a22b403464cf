"""The ``mcp-keys`` command: parse arguments, call the library, render. No logic here.

Every McpKeysError becomes one ``Error: ...`` line on stderr with exit 1 (2 for bad
arguments); ``--json`` output is the only thing on stdout. The library is imported only
by the commands that use it, so ``--help`` and read-only commands start fast.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from importlib import import_module
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from ..errors import McpKeysError
from ..terminal import error_line


def error(message: str) -> None:
    click.echo(error_line(message), err=True)

if TYPE_CHECKING:
    from ..manager import KeyManager

F = TypeVar("F", bound=Callable[..., Any])

# A bare group (``mcp-keys``, ``mcp-keys service``): Click 8.2+ raises this to show the
# group's help; older Clicks print the help themselves and exit 0.
_BARE_GROUP: Any = getattr(click.exceptions, "NoArgsIsHelpError", ())


# Each command lives in the module named here and is imported only when it runs; --help
# lists them from these summaries (each the first line of the command's own help, which a
# test keeps in step), so start-up stays flat as commands are added.
COMMANDS = {
    "init": ("upkeep:init", "Create the store and git-ignore it (idempotent)."),
    "create": ("keys:create", "Issue a key and print it once (stdout: the key alone)."),
    "list": ("keys:list_keys", "List keys (never their secrets)."),
    "show": ("keys:show", "Show every field of one key (ID or a unique 4+ character prefix)."),
    "verify": ("keys:verify", "Check a key given as an argument or on stdin ('-'); exit 0 if "
               "valid, 1 if not."),
    "revoke": ("keys:revoke", "Revoke a key now; the record stays. Revoking twice changes "
               "nothing."),
    "rotate": ("keys:rotate", "Issue a successor key with the same name, description, scopes "
               "and resources."),
    "delete": ("keys:delete", "Delete a key's record for good (asks unless --yes)."),
    "sweep": ("upkeep:sweep", "For cron: record expirations, warn of keys expiring soon, "
              "purge old records."),
    "require": ("upkeep:require", "Write API_KEY_REQUIRED=true|false into the .env file."),
    "audit": ("audit:audit", "Read the audit log, newest last; 'audit verify' checks its hash "
              "chain."),
    "doctor": ("upkeep:doctor", "Check ownership, permissions, git exposure and expiries; exit "
               "1 on any failure."),
    "migrate": ("migrate:migrate", "Copy every record and the audit history to another store; "
                "idempotent."),
    "secret": ("secret:secret", "Check references and put secrets in the keychain; values are "
               "never printed."),
    "run": ("secret:run", "Run a command with secret references resolved into its "
            "environment."),
    "scan": ("scan:scan", "Find hard-coded secrets; exit 1 when something is found (a CI "
             "gate), 0 when clean."),
    "service": ("service:service", "Services the gateway calls for agents: base URL, "
                "credential reference, rules."),
    "gateway": ("service:gateway", "The MCP gateway: agents call services through it and "
                "never hold their keys."),
    "ca": ("ca:ca", "The proxy's local CA: constrained to the services' hosts, key 0600."),
    "client-config": ("clientconfig:client_config", "Print (or --write) the config that makes "
                      "an MCP client send a key, without the key in it."),
    "completion": ("completion:completion", "Print the completion script for a shell; key IDs "
                   "complete from the store."),
}


def _help_width(max_width: int) -> int:
    """The width Click's formatter would pick, without importing ``shutil`` (and the
    compression modules it loads) just to ask the terminal its size."""
    import os

    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return max(min(columns or 80, max_width) - 2, 50)


class _Context(click.Context):
    def make_formatter(self) -> click.HelpFormatter:
        from click import formatting

        width = self.terminal_width
        if width is None and formatting.FORCED_WIDTH is None:
            width = _help_width(self.max_content_width or 80)
        return self.formatter_class(width=width, max_width=self.max_content_width)


class KeysGroup(click.Group):
    """Loads commands on demand, and maps every expected failure to one stderr line and
    the documented exit code."""

    context_class = _Context

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, attribute = COMMANDS[cmd_name][0].split(":")
        command: click.Command = getattr(import_module(f".{module}", __name__), attribute)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from the summaries, importing no command module."""
        with formatter.section("Commands"):
            formatter.write_dl([(name, summary) for name, (_, summary) in COMMANDS.items()])

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> NoReturn:
        try:
            code = super().main(args, prog_name or "mcp-keys", complete_var,
                                standalone_mode=False, **extra)
        except _BARE_GROUP as exc:  # a bare group: its whole help, not one Error line
            exc.show()
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            error("aborted")
            sys.exit(1)
        except click.ClickException as exc:
            error(exc.format_message())
            sys.exit(exc.exit_code)
        except McpKeysError as exc:
            error(str(exc))
            sys.exit(exc.exit_code)
        except BrokenPipeError:
            sys.exit(1)
        except ImportError as exc:  # an optional dependency: name its extra
            from ..extras import missing_module

            missing = missing_module(exc)
            if missing is None:
                raise
            error(str(missing))
            sys.exit(missing.exit_code)
        sys.exit(code if isinstance(code, int) else 0)


def _set_store(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.find_root().ensure_object(dict)["store"] = value


def store_option(command: F) -> F:
    """``--store`` after the subcommand too (``mcp-keys list --store X``)."""
    return click.option("--store", type=click.Path(), expose_value=False, callback=_set_store,
                        is_eager=True, help="Store file or URL (as before the command).")(command)


def manager(ctx: click.Context, *, existing: bool = False) -> KeyManager:
    """The KeyManager for this invocation's store; library warnings print as warnings.
    ``existing``: a file store that does not exist is an error naming where it was looked
    for (commands that only read or change keys must not take a wrong folder for an
    empty store)."""
    from ..errors import set_warning_sink
    from ..manager import KeyManager
    from .render import warning

    set_warning_sink(warning)
    obj: dict[str, Any] = ctx.find_root().ensure_object(dict)
    if "manager" not in obj:
        obj["manager"] = KeyManager(obj.get("store"))
    result: KeyManager = obj["manager"]
    if existing:
        result.require_store()
    return result


def store_location(ctx: click.Context) -> str | None:
    location: str | None = ctx.find_root().ensure_object(dict).get("store")
    return location


@click.group(cls=KeysGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--store", "store", type=click.Path(), envvar="MCP_KEYS_STORE",
              help="Store file (default ./.mcp-keys/keys.json; env MCP_KEYS_STORE).")
@click.version_option(package_name="mcp-keys", prog_name="mcp-keys")
@click.pass_context
def cli(ctx: click.Context, store: str | None) -> None:
    """API key lifecycle for MCP servers: create, list, rotate, revoke, expire, verify.

    \b
    Examples:
      mcp-keys init
      mcp-keys create ci-bot --scope tools:call --expires-in 30d > key.txt
    """
    obj = ctx.ensure_object(dict)
    obj["store"] = store


def main() -> NoReturn:
    """Console-script entry point."""
    cli.main(prog_name="mcp-keys")
