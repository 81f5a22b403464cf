"""How the CLI shows things: one error line, escaped text, rich tables, times.

Everything a person reads goes through ``terminal.safe``: paths, names, actors and
details can hold terminal control sequences (ESC, CSI, OSC, BEL) or bidi overrides, and
printing them raw would let a hostile store, log or path rewrite the operator's screen.
"""

from __future__ import annotations

import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from ..durations import humanize
from ..terminal import safe, warning_line

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

    from ..models import ApiKey, IssuedKey

STATUS_STYLE = {"active": "green", "revoked": "red", "expired": "yellow"}
PIPE_WIDTH = 10_000  # a pipe has no width: never wrap a line written to one


def warning(message: str) -> None:
    click.echo(warning_line(message), err=True)


def console(stderr: bool = False) -> Console:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else PIPE_WIDTH
    return Console(stderr=stderr, highlight=False, soft_wrap=False, width=width)


def text(value: object, style: str = "") -> Text:
    from rich.text import Text

    return Text(safe(value), style=style)


def emit_json(data: Any) -> None:
    import json

    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def when(moment: datetime | None) -> str:
    return "never" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%SZ")


def utcnow() -> datetime:
    from ..models import utcnow as now

    return now()


def time_left(key: ApiKey, now: datetime) -> str:
    if key.expires_at is None:
        return "never"
    left = key.expires_at - now
    if left.total_seconds() > 0:
        return f"{when(key.expires_at)} (in {humanize(left)})"
    return f"{when(key.expires_at)} ({humanize(-left)} ago)"


def status_text(key: ApiKey, now: datetime) -> Text:
    status = key.status_at(now).value
    return text(status, STATUS_STYLE[status])


def keys_table(keys: list[ApiKey]) -> None:
    from rich.table import Table

    now = utcnow()
    table = Table()
    for column in ("ID", "Name", "Status", "Scopes", "Created", "Expires"):
        table.add_column(column, overflow="fold")
    for key in keys:
        table.add_row(text(key.id), text(key.name), status_text(key, now),
                      text(", ".join(key.scopes) or "-"), text(when(key.created_at)),
                      text(time_left(key, now)))
    console().print(table)


def key_fields(key: ApiKey) -> None:
    from rich.table import Table

    now = utcnow()
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    rows: list[tuple[str, Text]] = [
        ("id", text(key.id)), ("name", text(key.name)),
        ("description", text(key.description or "-")),
        ("scopes", text(", ".join(key.scopes) or "-")), ("status", status_text(key, now)),
        ("created", text(when(key.created_at))), ("expires", text(time_left(key, now))),
    ]
    if key.resources:
        rows.append(("resources", text(", ".join(key.resources))))
    if key.revoked_at:
        rows.append(("revoked", text(f"{when(key.revoked_at)} ({key.revoke_reason or '-'})")))
    if key.rotated_from:
        rows.append(("rotated from", text(key.rotated_from)))
    if key.rotated_to:
        rows.append(("rotated to", text(key.rotated_to)))
    for label, value in rows:
        table.add_row(label, value)
    console().print(table)


def announce_key(issued: IssuedKey, as_json: bool, verb: str, env_file: str | None,
                 env_var: str) -> None:
    """The only place a plaintext key is printed: stdout gets the key, stderr the context."""
    record = issued.record
    if as_json:
        emit_json({"key": issued.key, "record": record.to_dict()})
        return
    click.echo(issued.key)
    from rich.text import Text

    message = Text.assemble(
        (f"{verb} key ", "bold"), (record.id, "bold cyan"), f" ({safe(record.name)}), expires ",
        time_left(record, utcnow()), ".\n",
        ("This key will not be shown again: store it now.", "bold yellow"),
    )
    if env_file:
        message.append(f"\nWrote {env_var} to {safe(env_file)}.")
    console(stderr=True).print(message)
