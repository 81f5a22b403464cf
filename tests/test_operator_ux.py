"""What the new-user trial and the review found at the terminal: escaped control
characters, --store anywhere, store path edge cases, no litter, navigable rotation chains,
clear messages, unwrapped pipes, and an example in every --help."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click
import pytest

from mcp_keys.cli import cli
from mcp_keys.models import utcnow
from mcp_keys.stores.jsonfile import serialize
from tests.conftest import Cli, FileKeys, one_error_line

HOSTILE = ["\x1b[2J\x1b[31mfake", "\x1b]8;;http://evil\x07link", "bell\x07", "\u202eevil",
           "csi\x9b2J"]


def plant_names(manager: FileKeys, names: list[str]) -> list[str]:
    """A hand-edited store whose records hold control characters (the CLI refuses them)."""
    from dataclasses import replace

    ids = []
    keys = {}
    for name in names:
        record = manager.create("placeholder").record
        keys[record.id] = replace(record, name=name, description=name,
                                  revoke_reason=name, revoked_at=utcnow())
        ids.append(record.id)
    manager.store.path.write_bytes(serialize(keys))
    return ids


def assert_inert(text: str) -> None:
    for bad in ("\x1b", "\x07", "\x9b", "\u202e"):
        assert bad not in text, f"a raw control character {bad!r} reached the terminal"


def test_control_characters_never_reach_the_terminal(run: Cli, manager: FileKeys,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    ids = plant_names(manager, HOSTILE)
    manager.audit.append("create", key_id=ids[0], name=HOSTILE[0],
                         detail={"note": HOSTILE[1]})
    outputs = [run("list"), run("audit"), *[run("show", key_id) for key_id in ids]]
    for result in outputs:
        assert result.exit_code == 0
        assert_inert(result.stdout + result.stderr)
    assert "\\x1b[2J" in outputs[0].stdout  # shown, escaped, not dropped
    hostile_path = run.store.parent / "evil\x1b[2Jdir" / "keys.json"
    missing = Cli(hostile_path, [])("revoke", "abcd")
    assert missing.exit_code == 1
    assert_inert(missing.stderr)


def test_an_actor_with_control_characters_is_refused(run: Cli) -> None:
    result = run("create", "svc", env={"MCP_KEYS_ACTOR": "cron\x1b[2J"})
    assert result.exit_code == 2 and "MCP_KEYS_ACTOR" in one_error_line(result.stderr)
    assert not run.store.exists()


def test_store_option_after_the_command(tmp_path: Path) -> None:
    from click.testing import CliRunner

    store = tmp_path / "elsewhere" / "keys.json"
    runner = CliRunner()
    created = runner.invoke(cli, ["create", "svc", "--store", str(store)])
    assert created.exit_code == 0 and store.exists()
    listed = runner.invoke(cli, ["list", "--json", "--store", str(store)])
    assert [r["name"] for r in json.loads(listed.stdout)] == ["svc"]
    assert not (tmp_path / ".mcp-keys").exists()
    verify = runner.invoke(cli, ["audit", "verify", "--store", str(store)])
    assert verify.stdout.strip() == "OK 1 events"


@pytest.mark.parametrize("given", ["newdir/", "existing"])
def test_a_store_path_naming_a_directory_is_an_error(tmp_path: Path, given: str) -> None:
    from click.testing import CliRunner

    (tmp_path / "existing").mkdir()
    result = CliRunner().invoke(cli, ["--store", given, "create", "svc"])
    assert result.exit_code == 2
    assert "is a directory; give the store file" in one_error_line(result.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing"]


def test_a_relative_store_shadowing_a_parent_store_is_said(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    runner = CliRunner()
    assert runner.invoke(cli, ["init"]).exit_code == 0
    sub = tmp_path / "src" / "app"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)
    refused = runner.invoke(cli, ["create", "svc"])
    assert refused.exit_code == 1
    line = one_error_line(refused.stderr)
    assert str(tmp_path / ".mcp-keys" / "keys.json") in line and "--store" in line
    assert not (sub / ".mcp-keys").exists()
    refused_env = runner.invoke(cli, ["create", "svc"],
                                env={"MCP_KEYS_STORE": ".mcp-keys/keys.json"})
    assert refused_env.exit_code == 1 and not (sub / ".mcp-keys").exists()


def test_create_on_a_new_store_says_so(run: Cli) -> None:
    result = run("create", "svc")
    assert result.exit_code == 0 and f"Created store {run.store}" in result.stderr
    again = run("create", "other")
    assert "Created store" not in again.stderr


def test_failed_commands_leave_no_litter(run: Cli, manager: FileKeys, tmp_path: Path) -> None:
    manager.create("svc")
    manager.store.lock_path.unlink()
    before = sorted(p.name for p in run.store.parent.iterdir())
    for args in (["revoke", "zzzzzzzzzzzz"], ["delete", "zzzz", "--yes"],
                 ["rotate", "zzzzzzzzzzzz"], ["create", "x", "--env-file", "no/such/.env"]):
        result = run(*args)
        assert result.exit_code == 1, args
        assert sorted(p.name for p in run.store.parent.iterdir()) == before, args
    fresh = tmp_path / "fresh" / "deep" / "keys.json"
    failed = Cli(fresh, [])("create", "x", "--env-file", str(tmp_path / "nodir" / ".env"))
    assert failed.exit_code == 1 and not (tmp_path / "fresh").exists()


def test_rotation_chains_stay_navigable(run: Cli, manager: FileKeys) -> None:
    first = manager.create("svc").record.id
    second = manager.rotate(first).record.id  # the old key is revoked at once
    result = run("rotate", first)
    assert result.exit_code == 1 and f"rotate {second} instead" in one_error_line(result.stderr)
    third = manager.rotate(second, grace=__import__("datetime").timedelta(hours=1)).record.id
    assert run("delete", second, "--yes").exit_code == 0
    for key_id in (first, third):
        record = json.loads(run("show", key_id, "--json").stdout)
        assert second not in (record["rotated_to"], record["rotated_from"]), key_id
    ids = {r["id"] for r in json.loads(run("list", "--json").stdout)}
    for record in json.loads(run("list", "--json").stdout):
        assert {record["rotated_to"], record["rotated_from"]} - {None} <= ids


def test_clear_messages(run: Cli, tmp_path: Path) -> None:
    zero = run("create", "svc", "--expires-in", "0s")
    assert zero.exit_code == 2 and "must be positive" in one_error_line(zero.stderr)
    foreign = tmp_path / "package.json"
    foreign.write_text('{"name": "app", "dependencies": {}}')
    result = Cli(foreign, [])("list")
    assert result.exit_code == 1
    assert "is not an mcp-keys store" in one_error_line(result.stderr)
    assert foreign.read_text() == '{"name": "app", "dependencies": {}}'


def test_output_to_a_pipe_never_wraps(run: Cli) -> None:
    description = "a long description " * 20
    assert run("create", "n" * 64, "--description", description.strip(),
               "--scope", "tools:call", "--scope", "files:write").exit_code == 0
    key_id = json.loads(run("list", "--json").stdout)[0]["id"]
    shown = run("show", key_id).stdout
    assert any(description.strip() in line for line in shown.splitlines())
    listed = run("list").stdout
    assert any("n" * 64 in line and "tools:call, files:write" in line
               for line in listed.splitlines())


def every_command() -> list[tuple[str, click.Command]]:
    found: list[tuple[str, click.Command]] = []

    def walk(prefix: str, command: click.Command) -> None:
        found.append((prefix, command))
        if isinstance(command, click.Group):
            ctx = click.Context(command)
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                assert sub is not None
                walk(f"{prefix} {name}".strip(), sub)

    walk("", cli)
    return found


@pytest.mark.parametrize(("name", "command"), every_command(), ids=lambda v: str(v) or "root")
def test_every_help_ends_with_runnable_examples(name: str, command: click.Command) -> None:
    from click.testing import CliRunner

    result = CliRunner().invoke(cli, [*name.split(), "--help"], terminal_width=200)
    assert result.exit_code == 0
    tail = result.stdout.split("Examples:")[-1]
    examples = [line.strip() for line in tail.splitlines() if line.strip().startswith("mcp-keys")]
    assert "Examples:" in result.stdout and 1 <= len(examples) <= 3, name
    words = f"mcp-keys {name}".split()
    assert any(e.split()[: len(words)] == words or f" {name}" in e for e in examples), name


def test_help_examples_run(tmp_path: Path) -> None:
    """The examples work as written, in order, on a fresh store (keys from create)."""
    import re
    import subprocess
    import sys

    os.environ.pop("MCP_KEYS_STORE", None)
    script = [
        "init", "init --env-file .env",
        "create ci-bot --scope tools:call --expires-in 30d > key.txt",
        "create laptop --env-file .env", "list",
        "list --status active --expiring-within 14d --json",
        "verify < key.txt", "verify --scope tools:call < key.txt", "sweep --purge-after 90d",
        "sweep --dry-run --warn-within 30d", "require on --env-file .env", "audit verify",
        "audit --limit 20", "doctor",
    ]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    for line in script:
        done = subprocess.run(f"mcp-keys {line}", shell=True, cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode in (0, 1 if line == "doctor" else 0), (line, done.stderr[-300:])
        assert not re.search(r"mcpk_[a-z0-9]{12}_", done.stderr)
