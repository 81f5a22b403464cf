"""``mcp-keys ca``: the proxy's local certificate authority, name-constrained to the
hosts of the configured services."""

from __future__ import annotations

import click

from ..terminal import safe
from . import store_location, store_option
from .render import emit_json


def _ca(ctx: click.Context) -> tuple[object, list[str]]:
    from ..gateway.interceptor.ca import LocalCA, service_hosts
    from ..gateway.services import read, services_path

    path = services_path(store_location(ctx))
    return LocalCA(path.parent), service_hosts(read(path))


@click.group()
@store_option
def ca() -> None:
    """The proxy's local CA: constrained to the services' hosts, key 0600.

    \b
    Examples:
      mcp-keys ca show
      mcp-keys ca rotate --days 90
    """


@ca.command()
@click.option("--json", "as_json", is_flag=True, help="Print the CA's details as JSON.")
@store_option
@click.pass_context
def show(ctx: click.Context, as_json: bool) -> None:
    """Print the CA's fingerprint, the hosts it may certify and its expiry.

    \b
    Examples:
      mcp-keys ca show --json
    """
    from ..errors import McpKeysError
    from ..gateway.interceptor.ca import LocalCA

    authority, hosts = _ca(ctx)
    assert isinstance(authority, LocalCA)
    if not authority.load():
        raise McpKeysError(f"no proxy CA in {authority.directory} yet: create it with "
                           "'mcp-keys ca rotate'")
    info = authority.info()
    current = authority.fits(hosts)
    if as_json:
        emit_json({**info.to_dict(), "current": current})
        return
    click.echo(f"certificate  {safe(str(info.path))}")
    click.echo(f"fingerprint  SHA-256 {info.fingerprint}")
    click.echo(f"may certify  {safe(', '.join(info.hosts))} (X.509 name constraints)")
    click.echo(f"expires      {info.not_after:%Y-%m-%d %H:%M:%SZ}")
    if not current:
        click.echo("The CA does not fit the services' hosts (they changed, or it predates "
                   "the current constraints): it is renewed on the next use, or now with "
                   "'mcp-keys ca rotate'", err=True)


@ca.command()
@click.option("--days", type=click.IntRange(1, 3650), default=365, show_default=True,
              help="How long the new CA is valid.")
@store_option
@click.pass_context
def rotate(ctx: click.Context, days: int) -> None:
    """Replace the CA with a new one for the services' current hosts.

    \b
    Examples:
      mcp-keys ca rotate --days 90
    """
    from ..gateway.interceptor.ca import LocalCA

    authority, hosts = _ca(ctx)
    assert isinstance(authority, LocalCA)
    info = authority.create(hosts, days=days)
    click.echo(f"New proxy CA for {safe(', '.join(info.hosts))}, expires "
               f"{info.not_after:%Y-%m-%d}; SHA-256 {info.fingerprint}")
