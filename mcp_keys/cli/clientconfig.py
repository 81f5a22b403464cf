"""``mcp-keys client-config``: the MCP client configuration that sends a key from the
environment (or a prompt), printed or merged into the client's file."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..terminal import safe
from . import store_option
from .render import emit_json


@click.command(name="client-config")
@click.argument("client", type=click.Choice(["claude-code", "claude-desktop", "cursor",
                                             "vscode", "windsurf"]))
@click.option("--url", required=True, help="The MCP server's URL, e.g. https://mcp.example.com/mcp.")
@click.option("--name", default="mcp-keys", show_default=True,
              help="The server's name in the client.")
@click.option("--env-var", default="MCP_API_KEY", show_default=True,
              help="The variable that holds the key where the client runs.")
@click.option("--header", type=click.Choice(["authorization", "x-api-key"]),
              default="authorization", show_default=True,
              help="Send 'Authorization: Bearer KEY' (accepted by every client) or X-API-Key.")
@click.option("--secret", default=None, metavar="REF",
              help="claude-desktop: where mcp-keys run reads the key "
                   "[default: keyring:mcp-keys/NAME].")
@click.option("--file", "path", type=click.Path(path_type=Path), default=None,
              help="Write this file instead of the client's usual one.")
@click.option("--write", is_flag=True,
              help="Merge into the file (atomically, with a 0600 backup) instead of printing.")
@click.option("--follow-symlink", is_flag=True, help="Allow a --write through a symlink.")
@click.option("--json", "as_json", is_flag=True, help="Print the configuration as JSON.")
@store_option
def client_config(client: str, url: str, name: str, env_var: str, header: str,
                  secret: str | None, path: Path | None, write: bool, follow_symlink: bool,
                  as_json: bool) -> None:
    """Print (or --write) the config that makes an MCP client send a key, without the key in it.

    \b
    Examples:
      mcp-keys client-config cursor --url https://mcp.example.com/mcp
      mcp-keys client-config claude-code --url http://127.0.0.1:8000/mcp --write
      mcp-keys client-config vscode --url https://mcp.example.com/mcp --name notes --write
    """
    from .. import clientconfig

    config = clientconfig.build(client, url, name=name, env_var=env_var, header=header,
                                secret=secret, path=path)
    if write:
        report = clientconfig.write(config, follow_symlink=follow_symlink)
        verb = "Replaced" if report.replaced else "Added"
        click.echo(f"{verb} server {safe(name)} in {safe(str(report.path))}")
        if report.backup is not None:
            click.echo(f"The previous file is at {safe(str(report.backup))}", err=True)
    elif as_json:
        emit_json({"client": client, "path": str(config.path), "document": config.document(),
                   "command": config.command})
    else:
        if config.command is not None:
            click.echo(config.command)
            click.echo()
        click.echo(json.dumps(config.document(), indent=2))
    if not as_json:
        click.echo(f"File: {safe(str(config.path))}", err=True)
        for note in config.notes:
            click.echo(f"Note: {safe(note)}", err=True)
