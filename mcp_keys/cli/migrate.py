"""``mcp-keys migrate``: move a store to another backend (JSON file <-> PostgreSQL)."""

from __future__ import annotations

import click

from ..terminal import safe
from . import store_location, store_option
from .render import emit_json


@click.command()
@click.option("--to", "target", required=True,
              help="The store to copy into: a postgresql:// URL or a file path.")
@click.option("--from", "source", default=None,
              help="The store to copy from (default: --store, MCP_KEYS_STORE, the default).")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@store_option
@click.pass_context
def migrate(ctx: click.Context, target: str, source: str | None, as_json: bool) -> None:
    """Copy every record and the audit history to another store; idempotent.

    \b
    Examples:
      mcp-keys migrate --to postgresql://mcp@db.internal/mcp_keys
      mcp-keys migrate --from postgresql://mcp@db.internal/mcp_keys --to ./keys.json
    """
    from ..errors import set_warning_sink
    from ..migrate import migrate as run
    from .render import warning

    set_warning_sink(warning)
    report = run(source if source is not None else store_location(ctx), target)
    if as_json:
        emit_json(report.to_dict())
        return
    click.echo(f"{report.records} records in {safe(report.source)}: {report.copied} copied to "
               f"{safe(report.target)}, {report.already} already there.")
    click.echo(f"Audit: {report.audit_events} events, {report.audit}.")
