"""``mcp-keys secret`` (check, set) and ``mcp-keys run``: upstream secrets as references."""

from __future__ import annotations

import sys

import click

from ..terminal import safe
from . import store_option


@click.group()
@store_option
def secret() -> None:
    """Check references and put secrets in the keychain; values are never printed.

    \b
    Examples:
      mcp-keys secret check env:STRIPE_KEY vault:secret/stripe#api_key
      mcp-keys secret set keyring:mcp-keys/stripe < stripe-key.txt
    """


@secret.command()
@click.argument("refs", nargs=-1, required=True, metavar="REF...")
@store_option
def check(refs: tuple[str, ...]) -> None:
    """Resolve each reference without printing it: OK, its length and a fingerprint.

    \b
    Examples:
      mcp-keys secret check env:STRIPE_KEY file:/run/secrets/github
    """
    from ..errors import McpKeysError
    from ..secrets import fingerprint, resolve
    from ..secrets.reference import shown

    failed = 0
    for ref in refs:
        name = safe(shown(ref))
        try:
            value = resolve(ref)
        except McpKeysError as exc:
            click.echo(f"FAIL {name}: {safe(exc)}")
            failed += 1
            continue
        click.echo(f"OK {name}: {len(value)} characters, fingerprint {fingerprint(value)}")
    sys.exit(1 if failed else 0)


@secret.command(name="set")
@click.argument("ref", metavar="keyring:SERVICE/USER")
@store_option
def set_secret(ref: str) -> None:
    """Store the value read from stdin (never from the command line) in the keychain.

    \b
    Examples:
      mcp-keys secret set keyring:mcp-keys/stripe < stripe-key.txt
    """
    from ..errors import SecretError, UsageError
    from ..secrets import parse_reference
    from ..secrets.sources.keyring import store

    parsed = parse_reference(ref)
    if parsed.scheme != "keyring":
        raise UsageError("secret set writes keyring: references only (keyring:SERVICE/USER)")
    if sys.stdin.isatty():  # typed, not echoed, and never in shell history
        value = click.prompt("Secret value", hide_input=True, err=True)
    else:
        value = sys.stdin.readline(1024 * 1024).rstrip("\r\n")
    if not value:
        raise SecretError("no value on stdin: pipe it in (mcp-keys secret set REF < file)")
    store(parsed, value, allow_plaintext=True)  # the user named this keychain
    click.echo(f"Stored {safe(ref)} ({len(value)} characters).", err=True)


@click.command(context_settings={"ignore_unknown_options": True})
@click.option("--env", "pairs", multiple=True, metavar="NAME=REF",
              help="Set NAME to the secret REF names (repeatable).")
@click.option("--env-file-refs", "ref_file", default=None, metavar="FILE",
              help="A .env-shaped file of NAME=REF lines (references only; safe to commit).")
@click.option("--mask", is_flag=True,
              help="Filter the resolved values out of the command's stdout and stderr.")
@click.option("--proxy", is_flag=True,
              help="Give the command placeholders and route it through a loopback proxy "
                   "that swaps in the real keys of --service on their hosts only.")
@click.option("--service", "services", multiple=True, metavar="NAME",
              help="--proxy: a gateway service the command may reach (repeatable).")
@click.option("--upstream-ca", type=click.Path(exists=True, dir_okay=False), default=None,
              help="--proxy: trust this CA for upstream TLS (tests, private services).")
@click.option("--pass-env", "pass_env", multiple=True, metavar="NAME",
              help="--proxy: also give the command this variable (repeatable; never a "
                   "credential's).")
@click.option("--user", "user", default=None, metavar="NAME",
              help="--proxy: start the command as this user (needs root), so it cannot "
                   "read our files, keyring or memory.")
@click.option("--allow-workspace-policy", is_flag=True,
              envvar="MCP_KEYS_ALLOW_WORKSPACE_POLICY",
              help="--proxy: run even when the store or services.toml is inside the current "
                   "directory or a git work tree, where an agent could rewrite it.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@store_option
@click.pass_context
def run(ctx: click.Context, pairs: tuple[str, ...], ref_file: str | None, mask: bool,
        proxy: bool, services: tuple[str, ...], upstream_ca: str | None,
        pass_env: tuple[str, ...], user: str | None, allow_workspace_policy: bool,
        command: tuple[str, ...]) -> None:
    """Run a command with secret references resolved into its environment.

    The command replaces mcp-keys (stdin, stdout, signals and exit code are its own);
    a reference that fails to resolve stops it from starting. With --proxy the command
    runs as a child behind the proxy, with placeholders instead of keys and an
    environment built from an allow-list (--pass-env adds to it).

    \b
    Examples:
      mcp-keys run --env STRIPE_SECRET_KEY=keyring:mcp-keys/stripe -- npx -y @stripe/mcp
      mcp-keys run --env-file-refs mcp.refs -- python server.py
      mcp-keys run --proxy --service stripe -- npx -y @stripe/mcp
      sudo mcp-keys run --proxy --user mcp --service stripe -- npx -y @stripe/mcp
    """
    if proxy:
        from ..errors import UsageError
        from ..extras import proxy_unsupported
        from . import store_location

        if pairs or ref_file or mask:
            raise UsageError("run --proxy takes --service, not --env, --env-file-refs or "
                             "--mask")
        unsupported = proxy_unsupported()
        if unsupported is not None:
            raise unsupported
        from ..gateway.interceptor.run import run_proxied

        sys.exit(run_proxied(list(command), list(services), store=store_location(ctx),
                             upstream_ca=upstream_ca, pass_env=list(pass_env), user=user,
                             allow_workspace_policy=allow_workspace_policy))
    if pass_env or user is not None:
        from ..errors import UsageError

        raise UsageError("--pass-env and --user go with --proxy")
    from ..launch import launch

    sys.exit(launch(pairs, ref_file, mask, command))
