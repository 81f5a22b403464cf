"""Commands on keys: create, list, show, revoke, delete, rotate, verify."""

from __future__ import annotations

import sys
from datetime import timedelta

import click

from ..durations import format_duration
from ..terminal import safe
from . import manager, store_location, store_option
from .completion import complete_key_id
from .params import DEFAULT_KEY_VAR, Duration
from .render import announce_key, emit_json, key_fields, keys_table, when


@click.command()
@click.argument("name")
@click.option("--description", default="", help="Free text shown in list and show.")
@click.option("--expires-in", type=Duration(allow_never=True), default="90d", show_default=True,
              help="Lifetime: 45s, 30m, 12h, 90d, 2w, 1y, or never.")
@click.option("--scope", "scopes", multiple=True, help="Grant a scope (repeatable).")
@click.option("--resource", "resources", multiple=True, metavar="URL",
              help="Bind the key to this MCP server URL (repeatable; default: any server).")
@click.option("--env-file", type=click.Path(), default=None,
              help="Write the key into this .env file.")
@click.option("--env-var", default=DEFAULT_KEY_VAR, show_default=True,
              help="Variable name used with --env-file.")
@click.option("--follow-symlink", is_flag=True,
              help="Allow an --env-file that is a symlink or owned by another user.")
@click.option("--json", "as_json", is_flag=True, help="Print the key and record as JSON.")
@store_option
@click.pass_context
def create(ctx: click.Context, name: str, description: str, expires_in: timedelta | None,
           scopes: tuple[str, ...], resources: tuple[str, ...], env_file: str | None,
           env_var: str, follow_symlink: bool, as_json: bool) -> None:
    """Issue a key and print it once (stdout: the key alone).

    \b
    Examples:
      mcp-keys create ci-bot --scope tools:call --expires-in 30d > key.txt
      mcp-keys create laptop --env-file .env
      mcp-keys create agent --resource https://mcp.example.com/mcp > key.txt
    """
    keys = manager(ctx)
    existed = keys.store.exists()
    issued = keys.create(name, description=description, scopes=scopes, expires_in=expires_in,
                         env_file=env_file, env_var=env_var, follow_symlink=follow_symlink,
                         resources=resources)
    if not existed:
        click.echo(f"Created store {safe(keys.store.display)}", err=True)
    announce_key(issued, as_json, "Created", env_file, env_var)


@click.command(name="list")
@click.option("--status", type=click.Choice(["active", "revoked", "expired", "all"]),
              default="all", show_default=True)
@click.option("--scope", default=None, help="Only keys holding this scope.")
@click.option("--expiring-within", type=Duration(), default=None,
              help="Only active keys expiring within this span.")
@click.option("--json", "as_json", is_flag=True, help="Print records as JSON.")
@store_option
@click.pass_context
def list_keys(ctx: click.Context, status: str, scope: str | None,
              expiring_within: timedelta | None, as_json: bool) -> None:
    """List keys (never their secrets).

    \b
    Examples:
      mcp-keys list
      mcp-keys list --status active --expiring-within 14d --json
    """
    found = manager(ctx, existing=True).list(status=status, scope=scope,
                                             expiring_within=expiring_within)
    if as_json:
        emit_json([key.to_dict() for key in found])
    elif found:
        keys_table(found)
    else:
        click.echo("No keys.", err=True)


@click.command()
@click.argument("key_id", metavar="ID", shell_complete=complete_key_id)
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")
@store_option
@click.pass_context
def show(ctx: click.Context, key_id: str, as_json: bool) -> None:
    """Show every field of one key (ID or a unique 4+ character prefix).

    \b
    Examples:
      mcp-keys show lha6
      mcp-keys show lha6kyjvu2uy --json
    """
    key = manager(ctx, existing=True).get(key_id)
    if as_json:
        emit_json(key.to_dict())
    else:
        key_fields(key)


@click.command()
@click.argument("key_id", metavar="ID", shell_complete=complete_key_id)
@click.option("--reason", default=None, help="Why (recorded in the key and the audit log).")
@store_option
@click.pass_context
def revoke(ctx: click.Context, key_id: str, reason: str | None) -> None:
    """Revoke a key now; the record stays. Revoking twice changes nothing.

    \b
    Examples:
      mcp-keys revoke lha6kyjvu2uy --reason "left team"
    """
    keys = manager(ctx, existing=True)
    before = keys.get(key_id)
    key = keys.revoke(key_id, reason=reason)
    name = safe(key.name)
    if before.revoked_at is not None:
        click.echo(f"Key {key.id} ({name}) was already revoked at {when(key.revoked_at)}.")
    else:
        click.echo(f"Revoked key {key.id} ({name}).")


@click.command()
@click.argument("key_id", metavar="ID", shell_complete=complete_key_id)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@store_option
@click.pass_context
def delete(ctx: click.Context, key_id: str, yes: bool) -> None:
    """Delete a key's record for good (asks unless --yes).

    \b
    Examples:
      mcp-keys delete lha6kyjvu2uy --yes
    """
    keys = manager(ctx, existing=True)
    key = keys.get(key_id)
    name = safe(key.name)
    if not yes:
        click.confirm(f"Delete key {key.id} ({name})? This cannot be undone", abort=True,
                      err=True)
    keys.delete(key.id)
    click.echo(f"Deleted key {key.id} ({name}).")


@click.command()
@click.argument("key_id", metavar="ID", shell_complete=complete_key_id)
@click.option("--grace", type=Duration(allow_zero=True), default="0", show_default=True,
              help="Keep the old key valid this long (e.g. 24h); 0 revokes it now.")
@click.option("--expires-in", type=Duration(allow_never=True), default="90d", show_default=True,
              help="Lifetime of the new key.")
@click.option("--env-file", type=click.Path(), default=None,
              help="Replace the key in this .env file.")
@click.option("--env-var", default=DEFAULT_KEY_VAR, show_default=True)
@click.option("--follow-symlink", is_flag=True,
              help="Allow an --env-file that is a symlink or owned by another user.")
@click.option("--json", "as_json", is_flag=True, help="Print the new key and record as JSON.")
@store_option
@click.pass_context
def rotate(ctx: click.Context, key_id: str, grace: timedelta, expires_in: timedelta | None,
           env_file: str | None, env_var: str, follow_symlink: bool, as_json: bool) -> None:
    """Issue a successor key with the same name, description, scopes and resources.

    \b
    Examples:
      mcp-keys rotate lha6 --grace 24h --env-file .env
      mcp-keys rotate lha6kyjvu2uy --json
    """
    issued = manager(ctx, existing=True).rotate(key_id, grace=grace, expires_in=expires_in,
                                 env_file=env_file, env_var=env_var,
                                 follow_symlink=follow_symlink)
    announce_key(issued, as_json, "Rotated to", env_file, env_var)
    if not as_json:
        old = issued.record.rotated_from
        note = "revoked now" if not grace else f"valid for {format_duration(grace)} more"
        click.echo(f"Old key {old} is {note}.", err=True)


@click.command()
@click.argument("key", required=False, default="-")
@click.option("--scope", "scopes", multiple=True, help="Require this scope (repeatable).")
@click.option("--resource", default=None, metavar="URL",
              help="Check the key as this MCP server would (refuses a key bound elsewhere).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@store_option
@click.pass_context
def verify(ctx: click.Context, key: str, scopes: tuple[str, ...], resource: str | None,
           as_json: bool) -> None:
    """Check a key given as an argument or on stdin ('-'); exit 0 if valid, 1 if not.

    \b
    Examples:
      mcp-keys verify < key.txt
      mcp-keys verify --scope tools:call < key.txt
      mcp-keys verify --resource https://mcp.example.com/mcp < key.txt
    """
    from ..validator import Validator
    from .logs import configure_logging

    if resource is not None:
        from ..resources import canonical

        resource = canonical(resource)
    if key == "-":
        key = sys.stdin.readline(64 * 1024)
    configure_logging()
    validator = Validator(store_location(ctx), refresh_interval=0, audit_failures=False)
    result = validator.validate(key, scopes, resource=resource)
    if as_json:
        emit_json(result.to_dict())
    else:
        about = f" {result.key_id} ({safe(result.name)})" if result.name else ""
        detail = f": {safe(result.detail)}" if result.detail else ""
        click.echo(f"{result.reason.value}{about}{detail}")
    ctx.exit(0 if result else 1)
