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
    for name, command in cli.commands.items():
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
