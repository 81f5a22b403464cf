"""The ``mcp-keys`` command: parse arguments, call KeyManager or Validator, render.

No logic lives here. Every McpKeysError becomes one ``Error: ...`` line on stderr with
exit 1 (2 for bad arguments); ``--json`` output is the only thing on stdout.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn

import click

from .durations import format_duration, humanize, parse_duration
from .errors import McpKeysError

if TYPE_CHECKING:
    from rich.console import Console

    from .manager import KeyManager
    from .models import ApiKey, IssuedKey

# Literals rather than imports: start-up time matters for a command run from cron and
# scripts, so the library is imported only by the commands that use it.
DEFAULT_KEY_VAR = "MCP_API_KEY"
DEFAULT_ENV_PATH = ".env"

STATUS_STYLE = {"active": "green", "revoked": "red", "expired": "yellow"}


class Duration(click.ParamType):  # type: ignore[type-arg]
    """A duration option (``90d``); ``never`` and ``0`` only where the option allows them."""

    name = "duration"

    def __init__(self, *, allow_never: bool = False, allow_zero: bool = False) -> None:
        self.allow_never = allow_never
        self.allow_zero = allow_zero

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> timedelta | None:
        if isinstance(value, timedelta) or value is None:
            return value
        try:
            return parse_duration(str(value), allow_never=self.allow_never,
                                  allow_zero=self.allow_zero)
        except McpKeysError as exc:
            self.fail(str(exc), param, ctx)


class KeysGroup(click.Group):
    """Maps every expected failure to one stderr line and the documented exit code."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> NoReturn:
        try:
            code = super().main(args, prog_name or "mcp-keys", complete_var,
                                standalone_mode=False, **extra)
        except click.exceptions.Abort:
            _error("aborted")
            sys.exit(1)
        except click.ClickException as exc:
            _error(exc.format_message())
            sys.exit(exc.exit_code)
        except McpKeysError as exc:
            _error(str(exc))
            sys.exit(exc.exit_code)
        except BrokenPipeError:
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def _error(message: str) -> None:
    click.echo(f"Error: {' '.join(message.split())}", err=True)


def _configure_logging() -> None:
    """Library warnings become ``warning: ...`` lines on whatever stderr is current.

    Called before the first library call rather than at start-up: logging costs ~3 ms.
    """
    import logging

    class StderrHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            click.echo(f"warning: {record.getMessage()}", err=True)

    logger = logging.getLogger("mcp_keys")
    if not any(type(h).__name__ == "StderrHandler" for h in logger.handlers):
        logger.addHandler(StderrHandler())
        logger.setLevel(logging.WARNING)
        logger.propagate = False


def _console(stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=False)


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def utcnow() -> datetime:
    from .models import utcnow as now

    return now()


def _manager(ctx: click.Context) -> KeyManager:
    from .manager import KeyManager

    _configure_logging()
    obj: dict[str, Any] = ctx.ensure_object(dict)
    if "manager" not in obj:
        obj["manager"] = KeyManager(obj.get("store"))
    manager: KeyManager = obj["manager"]
    return manager


def _when(moment: datetime | None) -> str:
    return "never" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%SZ")


def _time_left(key: ApiKey, now: datetime) -> str:
    if key.expires_at is None:
        return "never"
    left = key.expires_at - now
    if left.total_seconds() > 0:
        return f"{_when(key.expires_at)} (in {humanize(left)})"
    return f"{_when(key.expires_at)} ({humanize(-left)} ago)"


def _status_text(key: ApiKey, now: datetime) -> Any:
    from rich.text import Text

    status = key.status_at(now).value
    return Text(status, style=STATUS_STYLE[status])


def _render_keys(keys: list[ApiKey]) -> None:
    from rich.table import Table
    from rich.text import Text

    now = utcnow()
    table = Table()
    for column in ("ID", "Name", "Status", "Scopes", "Created", "Expires"):
        table.add_column(column, overflow="fold")
    for key in keys:
        table.add_row(Text(key.id), Text(key.name), _status_text(key, now),
                      Text(", ".join(key.scopes) or "-"), Text(_when(key.created_at)),
                      Text(_time_left(key, now)))
    _console().print(table)


def _announce_key(issued: IssuedKey, as_json: bool, verb: str, env_file: str | None,
                  env_var: str) -> None:
    """The only place a plaintext key is printed: stdout gets the key, stderr the context."""
    record = issued.record
    if as_json:
        _emit_json({"key": issued.key, "record": record.to_dict()})
        return
    click.echo(issued.key)
    err = _console(stderr=True)
    from rich.text import Text

    message = Text.assemble(
        (f"{verb} key ", "bold"), (record.id, "bold cyan"), f" ({record.name}), expires ",
        _time_left(record, utcnow()), ".\n",
        ("This key will not be shown again: store it now.", "bold yellow"),
    )
    if env_file:
        message.append(f"\nWrote {env_var} to {env_file}.")
    err.print(message)


@click.group(cls=KeysGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--store", "store", type=click.Path(dir_okay=True), envvar="MCP_KEYS_STORE",
              help="Store file (default ./.mcp-keys/keys.json; env MCP_KEYS_STORE).")
@click.version_option(package_name="mcp-keys", prog_name="mcp-keys")
@click.pass_context
def cli(ctx: click.Context, store: str | None) -> None:
    """API key lifecycle for MCP servers: create, list, rotate, revoke, expire, verify."""
    ctx.ensure_object(dict)["store"] = store


@cli.command()
@click.option("--env-file", type=click.Path(), default=None,
              help="Also git-ignore this .env file.")
@click.pass_context
def init(ctx: click.Context, env_file: str | None) -> None:
    """Create the store and git-ignore it (idempotent)."""
    manager = _manager(ctx)
    report = manager.init(env_file=env_file)
    path = manager.store.path
    click.echo(f"Created store {path}" if report.created else f"Store already exists at {path}")
    for entry in report.gitignored:
        click.echo(f"Added {entry} to .gitignore")


@cli.command()
@click.argument("name")
@click.option("--description", default="", help="Free text shown in list and show.")
@click.option("--expires-in", type=Duration(allow_never=True), default="90d", show_default=True,
              help="Lifetime: 45s, 30m, 12h, 90d, 2w, 1y, or never.")
@click.option("--scope", "scopes", multiple=True, help="Grant a scope (repeatable).")
@click.option("--env-file", type=click.Path(), default=None,
              help="Write the key into this .env file.")
@click.option("--env-var", default=DEFAULT_KEY_VAR, show_default=True,
              help="Variable name used with --env-file.")
@click.option("--json", "as_json", is_flag=True, help="Print the key and record as JSON.")
@click.pass_context
def create(ctx: click.Context, name: str, description: str, expires_in: timedelta | None,
           scopes: tuple[str, ...], env_file: str | None, env_var: str, as_json: bool) -> None:
    """Issue a key and print it once."""
    issued = _manager(ctx).create(name, description=description, scopes=scopes,
                                  expires_in=expires_in, env_file=env_file, env_var=env_var)
    _announce_key(issued, as_json, "Created", env_file, env_var)


@cli.command(name="list")
@click.option("--status", type=click.Choice(["active", "revoked", "expired", "all"]),
              default="all", show_default=True)
@click.option("--scope", default=None, help="Only keys holding this scope.")
@click.option("--expiring-within", type=Duration(), default=None,
              help="Only active keys expiring within this span.")
@click.option("--json", "as_json", is_flag=True, help="Print records as JSON.")
@click.pass_context
def list_keys(ctx: click.Context, status: str, scope: str | None,
              expiring_within: timedelta | None, as_json: bool) -> None:
    """List keys (never their secrets)."""
    keys = _manager(ctx).list(status=status, scope=scope, expiring_within=expiring_within)
    if as_json:
        _emit_json([key.to_dict() for key in keys])
    elif keys:
        _render_keys(keys)
    else:
        click.echo("No keys.", err=True)


@cli.command()
@click.argument("key_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")
@click.pass_context
def show(ctx: click.Context, key_id: str, as_json: bool) -> None:
    """Show every field of one key (ID or a unique 4+ character prefix)."""
    key = _manager(ctx).get(key_id)
    if as_json:
        _emit_json(key.to_dict())
        return
    from rich.table import Table
    from rich.text import Text

    now = utcnow()
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    rows: list[tuple[str, Any]] = [
        ("id", Text(key.id)), ("name", Text(key.name)),
        ("description", Text(key.description or "-")),
        ("scopes", Text(", ".join(key.scopes) or "-")), ("status", _status_text(key, now)),
        ("created", Text(_when(key.created_at))), ("expires", Text(_time_left(key, now))),
    ]
    if key.revoked_at:
        rows.append(("revoked", Text(f"{_when(key.revoked_at)} ({key.revoke_reason or '-'})")))
    if key.rotated_from:
        rows.append(("rotated from", Text(key.rotated_from)))
    if key.rotated_to:
        rows.append(("rotated to", Text(key.rotated_to)))
    for label, value in rows:
        table.add_row(label, value)
    _console().print(table)


@cli.command()
@click.argument("key_id", metavar="ID")
@click.option("--reason", default=None, help="Why (recorded in the key and the audit log).")
@click.pass_context
def revoke(ctx: click.Context, key_id: str, reason: str | None) -> None:
    """Revoke a key now; the record stays. Revoking twice changes nothing."""
    manager = _manager(ctx)
    before = manager.get(key_id)
    key = manager.revoke(key_id, reason=reason)
    if before.revoked_at is not None:
        click.echo(f"Key {key.id} ({key.name}) was already revoked at {_when(key.revoked_at)}.")
    else:
        click.echo(f"Revoked key {key.id} ({key.name}).")


@cli.command()
@click.argument("key_id", metavar="ID")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def delete(ctx: click.Context, key_id: str, yes: bool) -> None:
    """Delete a key's record for good (asks unless --yes)."""
    manager = _manager(ctx)
    key = manager.get(key_id)
    if not yes:
        click.confirm(f"Delete key {key.id} ({key.name})? This cannot be undone", abort=True,
                      err=True)
    manager.delete(key.id)
    click.echo(f"Deleted key {key.id} ({key.name}).")


@cli.command()
@click.argument("key_id", metavar="ID")
@click.option("--grace", type=Duration(allow_zero=True), default="0", show_default=True,
              help="Keep the old key valid this long (e.g. 24h); 0 revokes it now.")
@click.option("--expires-in", type=Duration(allow_never=True), default="90d", show_default=True,
              help="Lifetime of the new key.")
@click.option("--env-file", type=click.Path(), default=None,
              help="Replace the key in this .env file.")
@click.option("--env-var", default=DEFAULT_KEY_VAR, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the new key and record as JSON.")
@click.pass_context
def rotate(ctx: click.Context, key_id: str, grace: timedelta, expires_in: timedelta | None,
           env_file: str | None, env_var: str, as_json: bool) -> None:
    """Issue a successor key with the same name, description and scopes."""
    issued = _manager(ctx).rotate(key_id, grace=grace, expires_in=expires_in,
                                  env_file=env_file, env_var=env_var)
    _announce_key(issued, as_json, "Rotated to", env_file, env_var)
    if not as_json:
        old = issued.record.rotated_from
        note = "revoked now" if not grace else f"valid for {format_duration(grace)} more"
        click.echo(f"Old key {old} is {note}.", err=True)


@cli.command()
@click.option("--dry-run", is_flag=True, help="Report what would change; change nothing.")
@click.option("--warn-within", type=Duration(allow_zero=True), default="14d",
              show_default=True, help="Warn of active keys expiring within this span.")
@click.option("--purge-after", type=Duration(), default=None,
              help="Delete records revoked or expired at least this long ago.")
@click.option("--fail-on-warn", is_flag=True, help="Exit 3 when a key is about to expire.")
@click.option("--quiet", is_flag=True, help="Print nothing; rely on the exit code.")
@click.option("--json", "as_json", is_flag=True, help="Always print the report as JSON.")
@click.pass_context
def sweep(ctx: click.Context, dry_run: bool, warn_within: timedelta,
          purge_after: timedelta | None, fail_on_warn: bool, quiet: bool,
          as_json: bool) -> None:
    """For cron: record expirations, warn of keys expiring soon, purge old records.

    Prints nothing when there is nothing to say, so cron sends no mail.
    """
    report = _manager(ctx).sweep(warn_within=warn_within, purge_after=purge_after,
                                 dry_run=dry_run)
    if as_json:
        _emit_json(report.to_dict())
    elif not quiet and not report.quiet:
        prefix = "[dry run] would have " if dry_run else ""
        for key in report.expired:
            click.echo(f"{prefix}recorded expiry of {key.id} ({key.name}), "
                       f"expired {_when(key.expires_at)}")
        for key in report.purged:
            click.echo(f"{prefix}purged {key.id} ({key.name}), "
                       f"{key.status_at(report.now).value}")
        for key in report.expiring:
            assert key.expires_at is not None
            click.echo(f"warning: {key.id} ({key.name}) expires {_when(key.expires_at)}, "
                       f"in {humanize(key.expires_at - report.now)}")
    if fail_on_warn and report.expiring:
        ctx.exit(3)


@cli.command()
@click.argument("key", required=False, default="-")
@click.option("--scope", "scopes", multiple=True, help="Require this scope (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def verify(ctx: click.Context, key: str, scopes: tuple[str, ...], as_json: bool) -> None:
    """Check a key given as an argument or on stdin ('-'); exit 0 if valid, 1 if not."""
    from .validator import Validator

    if key == "-":
        key = sys.stdin.readline(64 * 1024)
    _configure_logging()
    validator = Validator(ctx.obj.get("store"), refresh_interval=0, audit_failures=False)
    result = validator.validate(key, scopes)
    if as_json:
        _emit_json(result.to_dict())
    else:
        about = f" {result.key_id} ({result.name})" if result.name else ""
        detail = f": {result.detail}" if result.detail else ""
        click.echo(f"{result.reason.value}{about}{detail}")
    ctx.exit(0 if result else 1)


@cli.command()
@click.argument("state", type=click.Choice(["on", "off"]))
@click.option("--env-file", type=click.Path(), default=DEFAULT_ENV_PATH,
              show_default=True)
@click.pass_context
def require(ctx: click.Context, state: str, env_file: str) -> None:
    """Write API_KEY_REQUIRED=true|false into the .env file."""
    _manager(ctx).set_required(env_file, state == "on")
    value = "true" if state == "on" else "false"
    click.echo(f"API_KEY_REQUIRED={value} in {env_file}")
    if state == "off":
        click.echo("warning: servers reading this file now admit calls without a key",
                   err=True)


@cli.command()
@click.option("--key", "key_id", default=None, help="Only events of this key ID (or prefix).")
@click.option("--event", default=None, help="Only this event type.")
@click.option("--since", type=Duration(), default=None, help="Only events this recent (24h).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="The newest N events.")
@click.option("--json", "as_json", is_flag=True, help="Print events as JSON.")
@click.pass_context
def audit(ctx: click.Context, key_id: str | None, event: str | None,
          since: timedelta | None, limit: int | None, as_json: bool) -> None:
    """Read the audit log, newest last."""
    from .audit import EVENTS

    if event is not None and event not in EVENTS:
        raise click.BadParameter(f"unknown event {event!r}; one of {', '.join(EVENTS)}",
                                 param_hint="--event")
    reading = _manager(ctx).audit.read(key_id=key_id, event=event, limit=limit,
                                       since=None if since is None else utcnow() - since)
    for message in reading.damaged:
        click.echo(f"warning: {message}", err=True)
    if as_json:
        _emit_json([item.to_dict() for item in reading.events])
        return
    if not reading.events:
        click.echo("No audit events.", err=True)
        return
    from rich.table import Table
    from rich.text import Text

    table = Table()
    for column in ("Time", "Event", "Key", "Name", "Actor", "Detail"):
        table.add_column(column, overflow="fold")
    for item in reading.events:
        detail = ", ".join(
            f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in item.detail.items() if v not in (None, "", []))
        table.add_row(Text(_when(item.ts)), Text(item.event), Text(item.key_id or "-"),
                      Text(item.name or "-"), Text(item.actor), Text(detail))
    _console().print(table)


@cli.command()
@click.option("--env-file", type=click.Path(), default=DEFAULT_ENV_PATH, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@click.pass_context
def doctor(ctx: click.Context, env_file: str, as_json: bool) -> None:
    """Check permissions, git exposure and expiries; exit 1 on any failure."""
    from .doctor import run_checks

    checks = run_checks(_manager(ctx), env_file)
    if as_json:
        _emit_json([check.to_dict() for check in checks])
    else:
        from rich.text import Text

        console = _console()
        style = {"pass": "green", "warn": "yellow", "fail": "bold red"}
        for check in checks:
            console.print(Text.assemble((f"{check.outcome:<5}", style[check.outcome]),
                                        f" {check.name}: {check.message}"))
    ctx.exit(1 if any(check.outcome == "fail" for check in checks) else 0)


def main() -> NoReturn:
    """Console-script entry point."""
    cli.main(prog_name="mcp-keys")


if __name__ == "__main__":  # pragma: no cover
    main()
