"""``mcp-keys scan``: hard-coded secrets in MCP client configs and .env files."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

import click

from ..terminal import safe
from . import store_location, store_option

if TYPE_CHECKING:

    from ..scan import Finding


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per finding.")
@click.option("--sarif", is_flag=True, help="SARIF 2.1.0 for GitHub code scanning.")
@click.option("--fix", is_flag=True, help="Move each secret into a secret source.")
@click.option("--to", "destination", default="keyring", show_default=True,
              help="Where --fix puts secrets: keyring, dotenv:PATH or vault:MOUNT/PATH.")
@click.option("--style", type=click.Choice(["run", "env-ref"]), default="run",
              show_default=True, help="--fix: launch through 'mcp-keys run', or ${VAR}.")
@click.option("--yes", is_flag=True, help="--fix without asking for each finding.")
@click.option("--allow-plaintext-keyring", is_flag=True,
              help="--fix --to keyring: accept a keyring backend that stores in plaintext.")
@click.option("--git-history", is_flag=True, help="Also scan the reachable commits.")
@click.option("--max-commits", type=click.IntRange(min=1), default=1000, show_default=True)
@store_option
@click.pass_context
def scan(ctx: click.Context, paths: tuple[str, ...], as_json: bool, sarif: bool, fix: bool,
         destination: str, style: str, yes: bool, allow_plaintext_keyring: bool,
         git_history: bool, max_commits: int) -> None:
    """Find hard-coded secrets; exit 1 when something is found (a CI gate), 0 when clean.

    With no PATH: the MCP client configs you have (Claude Desktop, Claude Code, Cursor,
    VS Code, Windsurf) and the .env files below this directory.

    \b
    Examples:
      mcp-keys scan
      mcp-keys scan .cursor/mcp.json --fix --to keyring --yes
    """
    from pathlib import Path

    from ..scan import scan as run_scan
    from ..scan.configs import default_paths, expand
    from ..scan.report import json_lines, line
    from ..scan.report import sarif as sarif_log
    from ..scan.scanner import NOTE

    if as_json and sarif:
        raise click.UsageError("choose one of --json and --sarif")
    files = expand([Path(p) for p in paths]) if paths else default_paths()
    store = store_location(ctx)
    findings = run_scan(files, store=store)
    if git_history:
        from ..scan.history import scan_history

        findings += scan_history(Path.cwd(), max_commits=max_commits, store=store)
    if fix:
        findings = _fix(findings, destination, style, yes, allow_plaintext_keyring, store)
    if sarif:
        click.echo(json.dumps(sarif_log(findings), indent=2))
    elif as_json:
        click.echo(json_lines(findings), nl=False)
    else:
        for finding in findings:
            click.echo(safe(line(finding)))
    leaks = [f for f in findings if f.level != NOTE]
    if not leaks and not (as_json or sarif):
        counted = plural(len(files), "file")
        click.echo(f"No leaked secrets in {counted} ({plural(len(findings), 'note')} above)."
                   if findings else f"No secrets found in {counted}.", err=True)
    sys.exit(1 if leaks else 0)


def plural(count: int, noun: str) -> str:
    """``1 file``, ``2 files``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _fix(findings: list[Finding], destination: str, style: str, yes: bool,
         allow_plaintext: bool, store: str | None) -> list[Finding]:
    """Fix what can be fixed; return the findings that remain."""
    from ..scan.fix import fix_findings

    def confirm(finding: Finding, where: str) -> bool:
        return yes or click.confirm(f"Move {safe(finding.path)} into {safe(where)}?",
                                    default=False, err=True)

    return fix_findings(findings, destination, style=style, confirm=confirm,
                        say=lambda text: click.echo(safe(text), err=True),
                        allow_plaintext=allow_plaintext, store=store)
