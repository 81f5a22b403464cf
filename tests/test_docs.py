"""The README's set-up commands are the ones CI runs, and the docs' examples are real."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def bash_blocks(markdown: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", markdown, flags=re.S)


def test_ci_runs_the_readme_commands_word_for_word() -> None:
    readme = (ROOT / "README.md").read_text()
    install, tests = (block.strip() for block in bash_blocks(readme)[:2])
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert install in ci and tests in ci
    assert ci[-1] == tests


def test_operator_guide_covers_every_command_and_option() -> None:
    import click

    from mcp_keys.cli import cli

    guide = (ROOT / "docs" / "operator-guide.md").read_text()
    assert isinstance(cli, click.Group)
    ctx = click.Context(cli)
    for name in cli.list_commands(ctx):
        command = cli.get_command(ctx, name)
        assert command is not None
        assert f"## {name}" in guide, name
        for param in command.params:
            for option in getattr(param, "opts", []):
                if option.startswith("--") and option != "--help":
                    assert option in guide, f"{name} {option}"


def test_readme_python_example_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    (example,) = [b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S)
                  if "KeyManager()" in b]
    code = example.replace("result = validate_api_key(token,",
                           "token = issued.key\nresult = validate_api_key(token,")
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert str(namespace["result"].reason) == "VALID"  # type: ignore[attr-defined]


def test_readme_tour_runs_in_a_fresh_shell(tmp_path: Path) -> None:
    """Every ``$ mcp-keys`` line of the tour, in order, in a new git work tree, through a
    login-free bash with only the venv's bin on PATH; the example ID is replaced by the
    real one once ``create`` has printed it."""
    import os
    import subprocess
    import sys

    readme = (ROOT / "README.md").read_text()
    tour = readme[readme.index("## A five-minute tour"):readme.index("## From Python")]
    commands = [line[2:].split("  #")[0].strip()
                for line in tour.splitlines() if line.startswith("$ mcp-keys")]
    assert len(commands) >= 12
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_")}
    env["PATH"] = f"{Path(sys.executable).parent}:/usr/bin:/bin"
    key_id = None
    for command in commands:
        if key_id is not None:
            command = command.replace("lha6kyjvu2uy", key_id).replace("lha6", key_id[:4])
        done = subprocess.run(["bash", "--noprofile", "--norc", "-c", command], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=60, check=False)
        key_file = tmp_path / ".mcp-keys" / "key.txt"  # the tour keeps it in the store's dir
        assert done.returncode == 0, (command, done.stderr[-400:].replace(
            key_file.read_text() if key_file.exists() else "\0", "<KEY>"))
        if key_id is None and key_file.exists():
            key_id = key_file.read_text()[5:17]
    assert "OK" in subprocess.run(["bash", "-c", "mcp-keys audit verify"], cwd=tmp_path,
                                  env=env, capture_output=True, text=True,
                                  check=False).stdout


def test_the_help_summaries_match_each_command() -> None:
    """--help lists commands without importing them; the summaries must say what each
    command's own help says."""
    import click

    from mcp_keys.cli import COMMANDS, cli

    ctx = click.Context(cli)
    for name, (_, summary) in COMMANDS.items():
        command = cli.get_command(ctx, name)
        assert command is not None and command.help is not None
        assert command.help.strip().splitlines()[0] == summary, name
