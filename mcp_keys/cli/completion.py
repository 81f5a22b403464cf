"""``mcp-keys completion``: the shell completion script (Click's own machinery), and the
completion of key IDs from the store."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from . import store_option

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem


def complete_key_id(ctx: click.Context, param: click.Parameter,
                    incomplete: str) -> list[CompletionItem]:
    """Key IDs starting with what was typed, each shown with its name; nothing (never an
    error) when the store cannot be read."""
    from click.shell_completion import CompletionItem

    from ..errors import McpKeysError
    from ..manager import KeyManager

    root = ctx.find_root()  # while completing, no command has run: read the parsed options
    store = (root.obj or {}).get("store") or root.params.get("store")
    try:
        keys = KeyManager(store).list()
    except (McpKeysError, OSError):
        return []
    return [CompletionItem(key.id, help=f"{key.name} ({key.status.value})")
            for key in keys if key.id.startswith(incomplete)]


@click.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
@store_option
def completion(shell: str) -> None:
    """Print the completion script for a shell; key IDs complete from the store.

    \b
    Examples:
      eval "$(mcp-keys completion bash)"
      mcp-keys completion fish > ~/.config/fish/completions/mcp-keys.fish
    """
    from click.shell_completion import get_completion_class

    from . import cli

    completer = get_completion_class(shell)
    assert completer is not None
    click.echo(completer(cli, {}, "mcp-keys", "_MCP_KEYS_COMPLETE").source())
