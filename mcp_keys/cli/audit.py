"""``mcp-keys audit``: read the trail (streamed, across rotated files) and verify its chain."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import timedelta
from typing import TYPE_CHECKING

import click

from . import manager, store_option
from .params import Duration
from .render import console, text, utcnow, warning, when

if TYPE_CHECKING:
    from ..audit import AuditEvent, AuditTrail

TABLE_BATCH = 500  # rows per printed table: the history is never held in memory whole


def _trail(ctx: click.Context) -> AuditTrail:
    """The store's trail; with neither a store nor an audit log, the error naming where
    they were looked for (not "No audit events" or "OK 0 events" in the wrong folder)."""
    keys = manager(ctx)
    keys.require_store(or_audit=True)
    return keys.audit


@click.group(invoke_without_command=True)
@click.option("--key", "key_id", default=None, help="Only events of this key ID (or prefix).")
@click.option("--event", default=None, help="Only this event type.")
@click.option("--since", type=Duration(), default=None, help="Only events this recent (24h).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="The newest N events.")
@click.option("--service", default=None, help="Only gateway events for this service.")
@click.option("--json", "as_json", is_flag=True, help="Print events as JSON.")
@store_option
@click.pass_context
def audit(ctx: click.Context, key_id: str | None, event: str | None,
          since: timedelta | None, limit: int | None, service: str | None,
          as_json: bool) -> None:
    """Read the audit log, newest last; 'audit verify' checks its hash chain.

    \b
    Examples:
      mcp-keys audit --key lha6 --limit 20
      mcp-keys audit --event gateway_call --service stripe --json
      mcp-keys audit verify
    """
    if ctx.invoked_subcommand is not None:
        return
    from ..audit import EVENTS

    if event is not None and event not in EVENTS:
        raise click.BadParameter(f"unknown event {event!r}; one of {', '.join(EVENTS)}",
                                 param_hint="--event")
    log = _trail(ctx)
    after = None if since is None else utcnow() - since
    items: Iterable[AuditEvent | str]
    if service is not None:
        from collections import deque

        matching = (item for item in log.matching(key_id=key_id, event=event, since=after)
                    if isinstance(item, str) or item.detail.get("service") == service)
        items = matching if limit is None else deque(matching, maxlen=limit)
    elif limit is not None:
        reading = log.read(key_id=key_id, event=event, since=after, limit=limit)
        items = [*reading.damaged, *reading.events]
    else:
        items = log.matching(key_id=key_id, event=event, since=after)
    shown = _stream(items, as_json)
    if not shown and not as_json:
        click.echo("No audit events.", err=True)


def _stream(items: Iterable[AuditEvent | str], as_json: bool) -> int:
    """Print events as they are read; damaged lines become warnings. Returns the count."""
    count = 0
    batch: list[AuditEvent] = []
    if as_json:
        click.echo("[", nl=False)
    for item in items:
        if isinstance(item, str):
            warning(item)
            continue
        if as_json:
            click.echo(("," if count else "") + "\n  " + json.dumps(item.to_dict(),
                                                                   ensure_ascii=False), nl=False)
        else:
            batch.append(item)
            if len(batch) >= TABLE_BATCH:
                _table(batch)
                batch = []
        count += 1
    if as_json:
        click.echo("\n]" if count else "]")
    elif batch:
        _table(batch)
    return count


def _table(events: list[AuditEvent]) -> None:
    from rich.table import Table

    table = Table()
    for column in ("Seq", "Time", "Event", "Key", "Name", "Actor", "Detail"):
        table.add_column(column, overflow="fold")
    for item in events:
        detail = ", ".join(
            f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in item.detail.items() if v not in (None, "", []))
        table.add_row(text("-" if item.seq is None else item.seq), text(when(item.ts)),
                      text(item.event), text(item.key_id or "-"), text(item.name or "-"),
                      text(item.actor), text(detail))
    console().print(table)


@audit.command(name="verify")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON.")
@store_option
@click.pass_context
def verify_chain(ctx: click.Context, as_json: bool) -> None:
    """Check the whole hash chain: 'OK N events' (exit 0) or the first break (exit 1).

    \b
    Examples:
      mcp-keys audit verify
      mcp-keys --store /srv/mcp/keys.json audit verify --json
    """
    from ..audit_verify import verify

    verdict = verify(_trail(ctx))
    if as_json:
        from .render import emit_json

        emit_json(verdict.to_dict())
    else:
        click.echo(text(verdict.summary()).plain)
    ctx.exit(0 if verdict.ok else 1)
