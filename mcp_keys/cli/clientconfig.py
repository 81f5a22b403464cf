"""``mcp-keys client-config``: the MCP client configuration that sends a key from the
environment (or a prompt), printed or merged into the client's file."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..terminal import safe
from . import store_location, store_option
from .render import emit_json


@click.command(name="client-config")
@click.argument("client", type=click.Choice(["claude-code", "claude-desktop", "cursor",
                                             "vscode", "windsurf"]))
@click.option("--url", default=None, help="The MCP server's URL, e.g. https://mcp.example.com/mcp.")
@click.option("--gateway", "for_gateway", is_flag=True,
              help="Instead of --url: start 'mcp-keys gateway serve' over stdio with the "
                   "store's absolute path (--store or MCP_KEYS_STORE, else the per-user one).")
@click.option("--name", default=None,
              help="The server's name in the client [default: mcp-keys, or mcp-keys-gateway].")
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
              help="Merge into the file (atomically, with a 0600 backup outside the project, "
                   "secrets redacted) instead of printing.")
@click.option("--follow-symlink", is_flag=True, help="Allow a --write through a symlink.")
@click.option("--json", "as_json", is_flag=True, help="Print the configuration as JSON.")
@store_option
@click.pass_context
def client_config(ctx: click.Context, client: str, url: str | None, for_gateway: bool,
                  name: str | None, env_var: str, header: str, secret: str | None,
                  path: Path | None, write: bool, follow_symlink: bool,
                  as_json: bool) -> None:
    """Print (or --write) the config that makes an MCP client send a key, without the key in it.

    \b
    Examples:
      mcp-keys client-config cursor --url https://mcp.example.com/mcp
      mcp-keys client-config claude-code --url http://127.0.0.1:8000/mcp --write
      mcp-keys client-config claude-desktop --gateway --write
    """
    from .. import clientconfig
    from ..errors import UsageError

    if for_gateway == (url is not None):
        raise UsageError("client-config needs --url URL or --gateway (one of them)")
    if url is None:
        config = clientconfig.gateway(client, store=store_location(ctx),
                                      name=name or "mcp-keys-gateway", env_var=env_var,
                                      secret=secret, path=path)
    else:
        config = clientconfig.build(client, url, name=name or "mcp-keys", env_var=env_var,
                                    header=header, secret=secret, path=path)
    if write:
        report = clientconfig.write(config, follow_symlink=follow_symlink)
        verb = "Replaced" if report.replaced else "Added"
        click.echo(f"{verb} server {safe(config.name)} in {safe(str(report.path))}")
        if report.backup is not None:
            click.echo(f"The previous file (secrets redacted) is at {safe(str(report.backup))}",
                       err=True)
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
