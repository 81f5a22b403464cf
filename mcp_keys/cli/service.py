"""``mcp-keys service``: the gateway's services (services.toml beside the store; with no
store named, both in the per-user ~/.config/mcp-keys/), and ``mcp-keys gateway serve``."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..terminal import safe
from . import store_location, store_option
from .params import Duration
from .render import emit_json

if TYPE_CHECKING:
    from ..gateway.model import Service


_allow_workspace = click.option(
    "--allow-workspace-policy", is_flag=True, envvar="MCP_KEYS_ALLOW_WORKSPACE_POLICY",
    help="Serve even when the store or services.toml is inside the current directory or a "
         "git work tree, where an agent could rewrite it.")


def _path(ctx: click.Context) -> Path:
    """services.toml: MCP_KEYS_SERVICES, else beside the store (with no store named, the
    per-user ~/.config/mcp-keys/, never the agent's workspace)."""
    from ..gateway.services import services_path

    return services_path(store_location(ctx))


def _update(ctx: click.Context, change: Any) -> dict[str, Service]:
    from ..gateway.services import update

    return update(_path(ctx), change, store=store_location(ctx))


def _record(service: Service) -> dict[str, Any]:
    if service.kind == "exec":
        return {"name": service.name, "kind": "exec", "command": service.command,
                "allow_args": list(service.allow_args), "secret_env": dict(service.secret_env),
                "cwd": service.cwd, "enabled": service.enabled,
                "description": service.description,
                "rate_limit": service.rate_limit.text if service.rate_limit else None,
                "timeout": service.timeout}
    return {"kind": "http", "name": service.name, "base_url": service.base_url,
            "auth": service.auth,
            "secret": service.secret, "enabled": service.enabled,
            "description": service.description,
            "allow": [r.to_dict() for r in service.allow],
            "deny": [r.to_dict() for r in service.deny],
            "rate_limit": service.rate_limit.text if service.rate_limit else None,
            "timeout": service.timeout, "env": service.env,
            "placeholder": service.placeholder, "websocket": service.websocket}


def _rules(texts: tuple[str, ...], effect: str, scope: str | None) -> tuple[Any, ...]:
    from ..gateway.model import parse_rule

    return tuple(parse_rule(text, effect, scope) for text in texts)


def _seconds(value: timedelta | None) -> float | None:
    return None if value is None else value.total_seconds()


@click.group()
@store_option
def service() -> None:
    """Services the gateway calls for agents: base URL, credential reference, rules.

    \b
    Examples:
      mcp-keys service add stripe --base-url https://api.stripe.com --auth bearer \\
          --secret keyring:mcp-keys/stripe --allow 'GET /v1/charges/**'
      mcp-keys service list
    """


_common = [
    click.option("--base-url", default=None, help="https://host[/prefix] of the API."),
    click.option("--auth", default=None,
                 help="bearer, basic, header:NAME, query:NAME or sigv4:REGION:SERVICE."),
    click.option("--secret", default=None, metavar="REF",
                 help="Where the credential lives (keyring:, env:, vault:, aws-sm:, file:)."),
    click.option("--allow", multiple=True, metavar="RULE",
                 help="Allow 'METHOD PATH' (repeatable)."),
    click.option("--deny", multiple=True, metavar="RULE",
                 help="Deny 'METHOD PATH' (repeatable; deny wins)."),
    click.option("--scope", default=None,
                 help="Limit the --allow/--deny rules given here to keys holding this scope."),
    click.option("--rate-limit", default=None, metavar="N/PERIOD",
                 help="Per key: e.g. 100/min ('none' removes it)."),
    click.option("--timeout", type=Duration(), default=None, help="Upstream timeout (e.g. 30s)."),
    click.option("--description", default=None, help="Shown to agents in list_services."),
    click.option("--env", "env_var", default=None, metavar="VAR",
                 help="The variable a vendor's MCP server reads this key from (run --proxy)."),
    click.option("--placeholder", default=None, metavar="FORMAT",
                 help="run --proxy: the placeholder's form, e.g. 'sk_live_{random}'."),
    click.option("--websocket", type=click.Choice(["allow", "deny"]), default=None,
                 help="run --proxy: WebSocket upgrades to this service (default deny)."),
]


def _with_common(command: Any) -> Any:
    for option in reversed(_common):
        command = option(command)
    return command


@service.command()
@click.argument("name")
@_with_common
@click.option("--exec", "is_exec", is_flag=True, help="An exec service: run --command.")
@click.option("--command", default=None, help="exec: the executable (resolved to a full path).")
@click.option("--allow-args", multiple=True, metavar="PATTERNS",
              help="exec: an allowed call, one pattern per argument ('*' a name, '**' a "
                   "relative path; options only as written; repeatable).")
@click.option("--secret-env", multiple=True, metavar="VAR=REF",
              help="exec: set VAR to the secret REF names (repeatable).")
@click.option("--cwd", type=click.Path(file_okay=False, exists=True, resolve_path=True),
              default=None, help="exec: the directory it runs in (default: a fresh one).")
@store_option
@click.pass_context
def add(ctx: click.Context, name: str, base_url: str | None, auth: str | None,
        secret: str | None, allow: tuple[str, ...], deny: tuple[str, ...], scope: str | None,
        rate_limit: str | None, timeout: timedelta | None, description: str | None,
        env_var: str | None, placeholder: str | None, websocket: str | None, is_exec: bool,
        command: str | None, allow_args: tuple[str, ...], secret_env: tuple[str, ...],
        cwd: str | None) -> None:
    """Add a service; nothing is allowed until an --allow rule says so.

    \b
    Examples:
      mcp-keys service add stripe --base-url https://api.stripe.com --auth bearer \\
          --secret keyring:mcp-keys/stripe --allow 'GET /v1/**' --rate-limit 60/min
      mcp-keys service add gh --exec --command gh --allow-args 'api repos/**' \\
          --allow-args 'issue view *' --secret-env GH_TOKEN=keyring:mcp-keys/github
    """
    from ..errors import McpKeysError, UsageError
    from ..gateway.services import check_command, parse_service

    table: dict[str, Any] = {}
    for key, value in (("rate_limit", rate_limit), ("timeout", _seconds(timeout)),
                       ("description", description)):
        if value is not None:
            table[key] = value
    if is_exec:
        if command is None:
            raise UsageError("service add --exec needs --command")
        pairs = {}
        for item in secret_env:
            var, sep, ref = item.partition("=")
            if not sep:
                raise UsageError(f"--secret-env {item!r} must be VAR=REF")
            pairs[var] = ref
        table.update(kind="exec", command=check_command(command),
                     allow_args=list(allow_args), secret_env=pairs)
        if cwd is not None:
            table["cwd"] = cwd
        created = parse_service(name, table)
    else:
        missing = [flag for flag, value in (("--base-url", base_url), ("--auth", auth),
                                            ("--secret", secret)) if value is None]
        if missing:
            raise UsageError(f"service add needs {', '.join(missing)}")
        table.update(base_url=base_url, auth=auth, secret=secret, allow=[], deny=[])
        if env_var is not None:
            table["env"] = env_var
        if placeholder is not None:
            table["placeholder"] = placeholder
        if websocket is not None:
            table["websocket"] = websocket == "allow"
        created = parse_service(name, table)
        created = created.with_changes(allow=_rules(allow, "allow", scope),
                                       deny=_rules(deny, "deny", scope))

    def change(services: dict[str, Service]) -> None:
        if name in services:
            raise McpKeysError(f"service {name} exists; change it with 'mcp-keys service "
                               f"edit {name}'")
        services[name] = created

    _update(ctx, change)
    click.echo(f"Added service {safe(name)} ({safe(created.host or created.command or '')})")
    if created.kind == "exec" and not created.allow_args:
        click.echo(f"Service {name} allows no arguments, so it runs nothing", err=True)
    elif created.kind == "http" and not created.allow:
        click.echo(f"Service {name} has no allow rule, so it denies everything; allow "
                   f"something with: mcp-keys service edit {name} --allow 'GET /path/**'",
                   err=True)
    click.echo(f"Callers need a key with scope gateway:{name}", err=True)


@service.command()
@click.argument("name")
@_with_common
@click.option("--remove-allow", multiple=True, metavar="RULE", help="Remove an allow rule.")
@click.option("--remove-deny", multiple=True, metavar="RULE", help="Remove a deny rule.")
@store_option
@click.pass_context
def edit(ctx: click.Context, name: str, base_url: str | None, auth: str | None,
         secret: str | None, allow: tuple[str, ...], deny: tuple[str, ...],
         scope: str | None, rate_limit: str | None, timeout: timedelta | None,
         description: str | None, env_var: str | None, placeholder: str | None,
         websocket: str | None, remove_allow: tuple[str, ...],
         remove_deny: tuple[str, ...]) -> None:
    """Change a service: replace its settings, add or remove rules.

    \b
    Examples:
      mcp-keys service edit stripe --allow 'POST /v1/refunds' --scope billing:write
      mcp-keys service edit stripe --remove-allow 'GET /v1/**' --rate-limit none
    """
    from ..errors import UsageError
    from ..gateway.model import check_auth, parse_rate, parse_rule
    from ..gateway.services import check_base_url, check_placeholder, check_secret

    def change(services: dict[str, Service]) -> None:
        current = _existing(services, name)
        updates: dict[str, Any] = {}
        if base_url is not None:
            updates["base_url"] = check_base_url(base_url)
        if auth is not None:
            updates["auth"] = check_auth(auth)
        if secret is not None:
            updates["secret"] = check_secret(secret)
        if rate_limit is not None:
            updates["rate_limit"] = None if rate_limit == "none" else parse_rate(rate_limit)
        if timeout is not None:
            updates["timeout"] = timeout.total_seconds()
        if description is not None:
            updates["description"] = description
        if env_var is not None:
            updates["env"] = env_var or None
        if placeholder is not None:
            updates["placeholder"] = check_placeholder(placeholder) if placeholder else None
        if websocket is not None:
            updates["websocket"] = websocket == "allow"
        allowed, denied = list(current.allow), list(current.deny)
        for rules, removals, effect in ((allowed, remove_allow, "allow"),
                                        (denied, remove_deny, "deny")):
            for text in removals:
                target = parse_rule(text, effect).text
                kept = [r for r in rules if r.text != target]
                if len(kept) == len(rules):
                    raise UsageError(f"service {name} has no {effect} rule {text!r}")
                rules[:] = kept
        allowed += _rules(allow, "allow", scope)
        denied += _rules(deny, "deny", scope)
        services[name] = current.with_changes(allow=tuple(allowed), deny=tuple(denied),
                                              **updates)

    services = _update(ctx, change)
    click.echo(f"Changed service {safe(name)}")
    if not services[name].allow:
        click.echo(f"Service {name} has no allow rule, so it denies everything", err=True)


def _existing(services: dict[str, Service], name: str) -> Service:
    from ..errors import McpKeysError

    if name not in services:
        known = ", ".join(sorted(services)) or "none yet"
        raise McpKeysError(f"no service {name!r} (services: {known})")
    return services[name]


@service.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print the services as JSON.")
@store_option
@click.pass_context
def list_services(ctx: click.Context, as_json: bool) -> None:
    """List the services (references, never secrets).

    \b
    Examples:
      mcp-keys service list --json
    """
    from ..gateway.services import read

    services = read(_path(ctx))
    if as_json:
        emit_json([_record(s) for _, s in sorted(services.items())])
        return
    if not services:
        click.echo(f"No services in {safe(str(_path(ctx)))}")
        return
    for name, item in sorted(services.items()):
        state = "enabled" if item.enabled else "disabled"
        rules = len(item.allow)
        if item.kind == "exec":
            count = len(item.allow_args)
            click.echo(f"{safe(name)}  exec {safe(item.command or '')}  {state}  "
                       f"{count} args rule{'s' if count != 1 else ''}")
            continue
        click.echo(f"{safe(name)}  {safe(item.base_url)}  {item.auth}  {state}  "
                   f"{rules} allow rule{'s' if rules != 1 else ''}")


@service.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the service as JSON.")
@store_option
@click.pass_context
def show(ctx: click.Context, name: str, as_json: bool) -> None:
    """Show one service: every setting and rule.

    \b
    Examples:
      mcp-keys service show stripe
    """
    from ..gateway.services import read

    record = _record(_existing(read(_path(ctx)), name))
    if as_json:
        emit_json(record)
        return
    for key, value in record.items():
        if key == "secret_env":
            value = ", ".join(f"{var}={ref}" for var, ref in value.items()) or "-"
        if key in ("allow", "deny"):
            value = ", ".join(r["rule"] + (f" (scope {r['scope']})" if "scope" in r else "")
                              for r in value) or "-"
        click.echo(f"{key:12} {safe(str(value if value is not None else '-'))}")


@service.command()
@click.argument("name")
@store_option
@click.pass_context
def remove(ctx: click.Context, name: str) -> None:
    """Remove a service; running gateways stop serving it within a second.

    \b
    Examples:
      mcp-keys service remove stripe
    """
    _update(ctx, lambda services: services.pop(_existing(services, name).name))
    click.echo(f"Removed service {safe(name)}")


def _set_enabled(ctx: click.Context, name: str, enabled: bool) -> None:
    def change(services: dict[str, Service]) -> None:
        services[name] = _existing(services, name).with_changes(enabled=enabled)

    _update(ctx, change)
    click.echo(f"{'Enabled' if enabled else 'Disabled'} service {safe(name)}")


@service.command()
@click.argument("name")
@store_option
@click.pass_context
def disable(ctx: click.Context, name: str) -> None:
    """Kill switch: every call to the service is refused within a second.

    \b
    Examples:
      mcp-keys service disable stripe
    """
    _set_enabled(ctx, name, False)


@service.command()
@click.argument("name")
@store_option
@click.pass_context
def enable(ctx: click.Context, name: str) -> None:
    """Serve a disabled service again.

    \b
    Examples:
      mcp-keys service enable stripe
    """
    _set_enabled(ctx, name, True)


@service.command()
@click.argument("name")
@click.option("--path", default="/", show_default=True, help="The path to GET.")
@_allow_workspace
@store_option
@click.pass_context
def test(ctx: click.Context, name: str, path: str, allow_workspace_policy: bool) -> None:
    """One real GET with the service's credential: prints the status and latency.

    \b
    Examples:
      mcp-keys service test stripe --path /v1/balance
    """
    import asyncio

    from ..errors import McpKeysError
    from ..gateway.proxy import Denied
    from ..gateway.serve import make_gateway

    gateway, _ = make_gateway(store_location(ctx), services=_path(ctx), front="test",
                              allow_workspace_policy=allow_workspace_policy)

    async def probe() -> tuple[int, float]:
        try:
            response, latency = await gateway.probe(name, path)
            return response.status, latency
        finally:
            await gateway.aclose()

    try:
        status, latency = asyncio.run(probe())
    except Denied as exc:
        raise McpKeysError(str(exc)) from None
    click.echo(f"{safe(name)}: HTTP {status} in {latency:.0f} ms")
    ctx.exit(0 if status < 400 else 1)


@click.group()
@store_option
def gateway() -> None:
    """The MCP gateway: agents call services through it and never hold their keys.

    \b
    Examples:
      MCP_API_KEY=mcpk_... mcp-keys gateway serve
      mcp-keys gateway serve --transport http --port 8765
    """


@gateway.command()
@click.option("--transport", type=click.Choice(["stdio", "http"]), default="stdio",
              show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8765, show_default=True)
@click.option("--public", is_flag=True, help="Allow a --host other than loopback.")
@click.option("--max-body", default="1MiB", show_default=True,
              help="Largest request or response body passed through (KiB, MiB or bytes).")
@click.option("--rate-limit", default=None, metavar="N/PERIOD",
              help="HTTP: per key across all services; over it, 429 with Retry-After.")
@click.option("--log-bodies", is_flag=True, help="Put scrubbed response bodies in the audit.")
@_allow_workspace
@store_option
@click.pass_context
def serve(ctx: click.Context, transport: str, host: str, port: int, public: bool,
          max_body: str, rate_limit: str | None, log_bodies: bool,
          allow_workspace_policy: bool) -> None:
    """Serve the gateway's MCP tools: list_services, execute, exec, explain, whoami.

    whoami names the caller's key, its scopes, expiry and services; list_services shows
    the services the key may use; execute makes an HTTP call to one, exec runs an exec
    service's command; explain says whether a call would be allowed, and why, without
    making it. A refusal is JSON: reason, rule and next_step. Over HTTP the URL served is
    printed on stderr.

    \b
    Examples:
      MCP_API_KEY=mcpk_... mcp-keys gateway serve
      mcp-keys gateway serve --transport http --port 8765 --rate-limit 600/min
    """
    from ..gateway.model import parse_rate
    from ..gateway.serve import serve as run_gateway
    from .logs import configure_logging

    configure_logging()
    run_gateway(store_location(ctx), transport=transport, host=host, port=port,
                public=public, services=_path(ctx), max_body=parse_size(max_body),
                log_bodies=log_bodies, allow_workspace_policy=allow_workspace_policy,
                rate_limit=None if rate_limit is None else parse_rate(rate_limit))


def parse_size(text: str) -> int:
    from ..errors import UsageError

    units = {"KiB": 1 << 10, "MiB": 1 << 20, "KB": 1000, "MB": 1000_000, "B": 1, "": 1}
    for unit in sorted(units, key=len, reverse=True):
        number = text[:len(text) - len(unit)] if unit else text
        if text.endswith(unit) and number.isdigit() and 0 < int(number) * units[unit] <= 1 << 30:
            return int(number) * units[unit]
    raise UsageError(f"invalid size {text!r}: e.g. 1MiB, 512KiB or 65536")
