"""The operator's tour through the real CLI (CliRunner), and what it prints."""

from __future__ import annotations

import json
import re
from pathlib import Path

from mcp_keys import KeyManager
from tests.conftest import Cli, assert_absent, files_under, one_error_line, redact

KEY = re.compile(r"mcpk_[a-z0-9]{12}_[A-Za-z0-9]{49,}")


def create(run: Cli, *args: str) -> tuple[str, str]:
    result = run("create", *args)
    assert result.exit_code == 0, result.stderr
    assert KEY.fullmatch(result.stdout.strip()), "stdout should be the key alone"
    key = result.stdout.strip()
    return key, key[5:17]


def test_operator_tour(run: Cli, tmp_path: Path) -> None:
    assert run("init").exit_code == 0
    key, key_id = create(run, "ci-bot", "--description", "GitHub Actions", "--scope",
                         "tools:call", "--env-file", ".env")
    created = run.outputs[-1]
    assert "will not be shown again" in created
    assert redact((tmp_path / ".env").read_text(), key) == "MCP_API_KEY=<KEY0>\n"

    listing = run("list")
    assert listing.exit_code == 0 and key_id in listing.stdout and "ci-bot" in listing.stdout
    records = json.loads(run("list", "--json").stdout)
    assert [r["id"] for r in records] == [key_id]
    assert set(records[0]) == {"id", "name", "description", "scopes", "status", "created_at",
                               "expires_at", "revoked_at", "revoke_reason", "rotated_from",
                               "rotated_to", "resources"}
    assert records[0]["created_at"].endswith("Z") and records[0]["status"] == "active"

    shown = run("show", key_id[:4])
    assert shown.exit_code == 0 and "GitHub Actions" in shown.stdout
    assert json.loads(run("show", key_id, "--json").stdout)["scopes"] == ["tools:call"]

    (tmp_path / "key.txt").write_text(key + "\n")
    verified = run("verify", input=(tmp_path / "key.txt").read_text())
    assert verified.exit_code == 0 and verified.stdout.startswith("VALID")
    assert run("verify", key, "--scope", "tools:call").exit_code == 0
    scoped = run("verify", key, "--scope", "admin")
    assert scoped.exit_code == 1 and scoped.stdout.startswith("INSUFFICIENT_SCOPE")

    revoked = run("revoke", key_id, "--reason", "left team")
    assert revoked.exit_code == 0 and "Revoked" in revoked.stdout
    again = run("revoke", key_id)
    assert again.exit_code == 0 and "already revoked" in again.stdout
    after = run("verify", key)
    assert after.exit_code == 1 and after.stdout.startswith("REVOKED")

    assert run("delete", key_id, "--yes").exit_code == 0
    missing = run("show", key_id)
    assert missing.exit_code == 1
    assert key_id in one_error_line(missing.stderr)

    required = run("require", "on", "--env-file", ".env")
    assert required.exit_code == 0
    assert redact((tmp_path / ".env").read_text(), key) == (
        "MCP_API_KEY=<KEY0>\nAPI_KEY_REQUIRED=true\n")
    run("require", "off", "--env-file", ".env")
    assert (tmp_path / ".env").read_text().endswith("API_KEY_REQUIRED=false\n")

    # The plaintext appears in create's output and the .env, nowhere else.
    for output in run.outputs[4:]:
        assert_absent(key, output, "a CLI output other than create")
    for name, data in files_under(tmp_path / "keys").items():
        assert_absent(key, data, name)


def test_create_json_carries_key_and_record(run: Cli) -> None:
    result = run("create", "svc", "--json", "--expires-in", "never")
    data = json.loads(result.stdout)
    assert KEY.fullmatch(data["key"]) and data["record"]["expires_at"] is None
    assert "digest" not in json.dumps(data["record"])


def test_delete_asks_and_aborts_without_yes(run: Cli) -> None:
    _, key_id = create(run, "svc")
    before = run.store.read_bytes()
    refused = run("delete", key_id, input="n\n")
    assert refused.exit_code == 1 and run.store.read_bytes() == before
    accepted = run("delete", key_id, input="y\n")
    assert accepted.exit_code == 0 and key_id not in run.store.read_text()


def test_status_colours_and_no_color(run: Cli) -> None:
    create(run, "svc")
    coloured = run("list", env={"FORCE_COLOR": "1"}).stdout
    assert "\x1b[32mactive" in coloured  # green status on a terminal
    plain = run("list", env={"FORCE_COLOR": "1", "NO_COLOR": "1"}).stdout
    assert "active" in plain and "\x1b[32m" not in plain
    assert "\x1b[" not in run("list").stdout  # not a terminal: no escapes at all


def test_json_stdout_is_pure_json_even_with_warnings(run: Cli, tmp_path: Path) -> None:
    create(run, "svc")
    with (tmp_path / "keys" / "audit.log").open("a") as log:
        log.write('{"truncated": \n')
    result = run("audit", "--json")
    assert isinstance(json.loads(result.stdout), list)
    assert "damaged" in result.stderr


def test_init_writes_gitignore_once(run: Cli, tmp_path: Path) -> None:
    (tmp_path / ".gitignore").write_text("node_modules/")
    run("init", "--env-file", ".env")
    run("init", "--env-file", ".env")
    assert (tmp_path / ".gitignore").read_text() == "node_modules/\nkeys/\n.env\n..env.*.tmp\n"


def test_python_dash_m_works(tmp_path: Path) -> None:
    from tests.conftest import run_cli_process

    KeyManager(tmp_path / "s.json").init()
    result = run_cli_process("--store", str(tmp_path / "s.json"), "list", "--json")
    assert result.returncode == 0 and json.loads(result.stdout) == []


def test_usage_errors_exit_two_in_one_line(run: Cli) -> None:
    for args in (["create", "x", "--expires-in", "5x"], ["list", "--status", "nope"],
                 ["create"], ["frobnicate"]):
        result = run(*args)
        assert result.exit_code == 2, args
        one_error_line(result.stderr)
