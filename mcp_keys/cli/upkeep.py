"""Commands that set up and look after a store: init, sweep, require, doctor."""

from __future__ import annotations

from datetime import timedelta

import click

from ..durations import humanize
from ..terminal import safe
from . import manager, store_option
from .params import DEFAULT_ENV_PATH, Duration
from .render import console, emit_json, text, when


@click.command()
@click.option("--env-file", type=click.Path(), default=None,
              help="Also git-ignore this .env file (and its temp files).")
@store_option
@click.pass_context
def init(ctx: click.Context, env_file: str | None) -> None:
    """Create the store and git-ignore it (idempotent).

    \b
    Examples:
      mcp-keys init
      mcp-keys init --env-file .env
    """
    keys = manager(ctx)
    report = keys.init(env_file=env_file)
    path = safe(keys.store.display)
    click.echo(f"Created store {path}" if report.created else f"Store already exists at {path}")
    if report.migrated_from is not None:
        click.echo(f"Migrated its schema from version {report.migrated_from} to the current one")
    for entry in report.gitignored:
        click.echo(f"Added {safe(entry)} to .gitignore")


@click.command()
@click.option("--dry-run", is_flag=True, help="Report what would change; change nothing.")
@click.option("--warn-within", type=Duration(allow_zero=True), default="14d",
              show_default=True, help="Warn of active keys expiring within this span.")
@click.option("--purge-after", type=Duration(), default=None,
              help="Delete records revoked or expired at least this long ago.")
@click.option("--fail-on-warn", is_flag=True, help="Exit 3 when a key is about to expire.")
@click.option("--quiet", is_flag=True, help="Print nothing; rely on the exit code.")
@click.option("--json", "as_json", is_flag=True, help="Always print the report as JSON.")
@store_option
@click.pass_context
def sweep(ctx: click.Context, dry_run: bool, warn_within: timedelta,
          purge_after: timedelta | None, fail_on_warn: bool, quiet: bool,
          as_json: bool) -> None:
    """For cron: record expirations, warn of keys expiring soon, purge old records.

    Prints nothing when there is nothing to say, so cron sends no mail.

    \b
    Examples:
      mcp-keys sweep --purge-after 90d
      mcp-keys sweep --dry-run --warn-within 30d
    """
    report = manager(ctx, existing=True).sweep(warn_within=warn_within, purge_after=purge_after,
                                dry_run=dry_run)
    if as_json:
        emit_json(report.to_dict())
    elif not quiet and not report.quiet:
        prefix = "[dry run] would have " if dry_run else ""
        for key in report.expired:
            click.echo(f"{prefix}recorded expiry of {key.id} ({safe(key.name)}), "
                       f"expired {when(key.expires_at)}")
        for key in report.purged:
            click.echo(f"{prefix}purged {key.id} ({safe(key.name)}), "
                       f"{key.status_at(report.now).value}")
        for key in report.expiring:
            assert key.expires_at is not None
            click.echo(f"warning: {key.id} ({safe(key.name)}) expires {when(key.expires_at)}, "
                       f"in {humanize(key.expires_at - report.now)}")
    if fail_on_warn and report.expiring:
        ctx.exit(3)


@click.command()
@click.argument("state", type=click.Choice(["on", "off"]))
@click.option("--env-file", type=click.Path(), default=DEFAULT_ENV_PATH, show_default=True)
@store_option
@click.pass_context
def require(ctx: click.Context, state: str, env_file: str) -> None:
    """Write API_KEY_REQUIRED=true|false into the .env file.

    \b
    Examples:
      mcp-keys require on --env-file .env
    """
    manager(ctx).set_required(env_file, state == "on")
    value = "true" if state == "on" else "false"
    click.echo(f"API_KEY_REQUIRED={value} in {safe(env_file)}")
    if state == "off":
        click.echo("warning: servers reading this file now admit calls without a key",
                   err=True)


@click.command()
@click.option("--env-file", type=click.Path(), default=DEFAULT_ENV_PATH, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@store_option
@click.pass_context
def doctor(ctx: click.Context, env_file: str, as_json: bool) -> None:
    """Check ownership, permissions, git exposure and expiries; exit 1 on any failure.

    \b
    Examples:
      mcp-keys doctor
      mcp-keys doctor --json
    """
    from ..doctor import run_checks

    checks = run_checks(manager(ctx), env_file)
    if as_json:
        emit_json([check.to_dict() for check in checks])
    else:
        from rich.text import Text

        out = console()
        style = {"pass": "green", "warn": "yellow", "fail": "bold red"}
        for check in checks:
            out.print(Text.assemble((f"{check.outcome:<5}", style[check.outcome]),
                                    text(f" {check.name}: {check.message}")))
    ctx.exit(1 if any(check.outcome == "fail" for check in checks) else 0)
