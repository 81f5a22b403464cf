"""``mcp-keys client-config``: each client's documented shape (sources in
mcp_keys/clientconfig.py), no key anywhere, headers that a real server accepts once the
client has filled in its variable, and an atomic merge with a 0600 backup."""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from mcp_keys import Validator
from mcp_keys.cli import cli
from mcp_keys.integrations.mcp import ApiKeyMiddleware
from tests.conftest import FileKeys, assert_absent, one_error_line
from tests.test_middleware import echo_app, request

URL = "https://mcp.example.com/mcp"


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        f"client-config raised {type(result.exception).__name__}"
    return result.exit_code, result.stdout, result.stderr


def document(client: str, *extra: str) -> dict[str, object]:
    code, out, err = invoke("client-config", client, "--url", URL, "--name", "notes",
                            "--json", *extra)
    assert code == 0, err
    data: dict[str, object] = json.loads(out)["document"]
    return data


def test_claude_code_shape() -> None:
    # code.claude.com/docs/en/mcp: "type": "http", url, headers; ${VAR} is expanded.
    data = document("claude-code")
    assert data == {"mcpServers": {"notes": {
        "type": "http", "url": URL, "headers": {"Authorization": "Bearer ${MCP_API_KEY}"}}}}
    _, out, _ = invoke("client-config", "claude-code", "--url", URL, "--name", "notes")
    command = shlex.split(out.splitlines()[0])
    assert command == ["claude", "mcp", "add", "--transport", "http", "--scope", "project",
                       "notes", URL, "--header", "Authorization: Bearer ${MCP_API_KEY}"], \
        "single quotes keep ${MCP_API_KEY} literal, so the shell does not paste the key in"
    assert "'Authorization: Bearer ${MCP_API_KEY}'" in out


def test_claude_desktop_shape() -> None:
    # Claude Desktop skips url entries; mcp-remote's README: --header "Name:${VAR}".
    data = document("claude-desktop")
    entry = data["mcpServers"]["notes"]  # type: ignore[index]
    assert Path(entry["command"]).name == "mcp-keys", entry
    assert entry["args"] == ["run", "--env", "MCP_API_KEY=keyring:mcp-keys/notes", "--", "npx",
                             "-y", "mcp-remote", URL, "--header",
                             "Authorization:Bearer ${MCP_API_KEY}"]
    other = document("claude-desktop", "--secret", "env:NOTES_KEY")
    assert "MCP_API_KEY=env:NOTES_KEY" in other["mcpServers"]["notes"]["args"]  # type: ignore[index]


def test_cursor_vscode_windsurf_shapes() -> None:
    # cursor.com/docs: .cursor/mcp.json, url + headers, ${env:NAME}.
    assert document("cursor") == {"mcpServers": {"notes": {
        "url": URL, "headers": {"Authorization": "Bearer ${env:MCP_API_KEY}"}}}}
    # code.visualstudio.com: "servers", "type": "http", promptString inputs, ${input:ID}.
    assert document("vscode") == {
        "inputs": [{"type": "promptString", "id": "notes-api-key", "password": True,
                    "description": "mcp-keys key for notes"}],
        "servers": {"notes": {"type": "http", "url": URL,
                              "headers": {"Authorization": "Bearer ${input:notes-api-key}"}}}}
    # docs.windsurf.com: serverUrl (not url) for remote servers, ${env:NAME} in headers.
    assert document("windsurf") == {"mcpServers": {"notes": {
        "serverUrl": URL, "headers": {"Authorization": "Bearer ${env:MCP_API_KEY}"}}}}
    assert document("cursor", "--header", "x-api-key", "--env-var", "NOTES_KEY") == {
        "mcpServers": {"notes": {"url": URL, "headers": {"X-API-Key": "${env:NOTES_KEY}"}}}}


def fill_in(value: str, key: str) -> str:
    """What each client does to a header value at run time."""
    return re.sub(r"\$\{(?:env:|input:)?[A-Za-z0-9_.-]+\}", key, value)


@pytest.mark.parametrize("client", ["claude-code", "cursor", "vscode", "windsurf"])
@pytest.mark.parametrize("header", ["authorization", "x-api-key"])
def test_the_headers_open_a_protected_server(client: str, header: str,
                                             manager: FileKeys) -> None:
    issued = manager.create("client", scopes=["tools:call"])
    data = document(client, "--header", header)
    entry = next(iter(data["mcpServers" if client != "vscode" else "servers"].values()))  # type: ignore[attr-defined]
    assert_absent(issued.key, json.dumps(data), "a client config")
    headers = {name: fill_in(value, issued.key) for name, value in entry["headers"].items()}
    app = ApiKeyMiddleware(echo_app, scopes=["tools:call"],
                           validator=Validator(manager.store.path, refresh_interval=0))
    assert request(app, headers).status_code == 200, f"{client}: the server refused"


def test_write_merges_atomically_with_a_private_backup(tmp_path: Path) -> None:
    target = tmp_path / ".cursor" / "mcp.json"
    target.parent.mkdir()
    github = {"url": "https://api.example.com/mcp"}
    other = {"mcpServers": {"github": github}, "theme": 1}
    target.write_text(json.dumps(other))
    target.chmod(0o644)
    code, out, err = invoke("client-config", "cursor", "--url", URL, "--name", "notes",
                            "--file", str(target), "--write")
    assert code == 0 and "Added server notes" in out, err
    merged = json.loads(target.read_text())
    assert merged["mcpServers"]["github"] == github and \
        merged["theme"] == 1, "other servers and settings are kept"
    assert merged["mcpServers"]["notes"]["url"] == URL
    assert stat.S_IMODE(target.stat().st_mode) == 0o644, "the file keeps its mode"
    backups = Path(os.environ["XDG_STATE_HOME"]) / "mcp-keys" / "backups"
    (backup,) = backups.glob("*mcp.json.*.bak")  # outside the project
    assert json.loads(backup.read_text()) == other, "the backup holds the old file"
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert sorted(p.name for p in target.parent.iterdir()) == [
        "mcp.json"], "no backup, lock or temp file is left beside the config"
    code, out, _ = invoke("client-config", "cursor", "--url", URL + "2", "--name", "notes",
                          "--file", str(target), "--write")
    assert code == 0 and "Replaced server notes" in out
    assert json.loads(target.read_text())["mcpServers"]["notes"]["url"] == URL + "2"


def test_vscode_write_keeps_inputs_and_adds_one_prompt(tmp_path: Path) -> None:
    target = tmp_path / "mcp.json"
    target.write_text(json.dumps({"inputs": [{"type": "promptString", "id": "other"}],
                                  "servers": {}}))
    for _ in range(2):
        assert invoke("client-config", "vscode", "--url", URL, "--name", "notes",
                      "--file", str(target), "--write")[0] == 0
    ids = [item["id"] for item in json.loads(target.read_text())["inputs"]]
    assert ids == ["other", "notes-api-key"], ids


def test_new_file_is_private(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "mcp_config.json"
    assert invoke("client-config", "windsurf", "--url", URL, "--file", str(target),
                  "--write")[0] == 0
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o700
    assert list(target.parent.glob("*.bak")) == [], "nothing to back up"


@pytest.mark.parametrize("content", ['{"mcpServers": {} // a comment\n}', "[1, 2]",
                                     '{"mcpServers": []}', "\xff\xfe"])
def test_unusable_files_are_refused_and_left_alone(tmp_path: Path, content: str) -> None:
    target = tmp_path / "mcp.json"
    target.write_bytes(content.encode("latin-1"))
    code, _, err = invoke("client-config", "cursor", "--url", URL, "--file", str(target),
                          "--write")
    assert code == 1 and "nothing was changed" in one_error_line(err)
    assert target.read_bytes() == content.encode("latin-1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mcp.json"], "no backup, no lock"


def test_a_symlinked_file_needs_follow_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real.json"
    real.write_text("{}")
    link = tmp_path / "mcp.json"
    link.symlink_to(real)
    code, _, err = invoke("client-config", "cursor", "--url", URL, "--file", str(link),
                          "--write")
    assert code == 1 and "symlink" in one_error_line(err) and real.read_text() == "{}"
    code, _, _ = invoke("client-config", "cursor", "--url", URL, "--file", str(link),
                        "--write", "--follow-symlink")
    assert code == 0 and link.is_symlink() and "mcpServers" in json.loads(real.read_text())


@pytest.mark.parametrize("args", [
    ["--url", "mcp.example.com"], ["--url", URL + "?token=x"], ["--url", URL, "--name", "a b"],
    ["--url", URL, "--env-var", "1BAD"], ["--url", URL, "--name", "x\x1b[2J"],
])
def test_bad_arguments_are_exit_2(args: list[str], tmp_path: Path) -> None:
    code, _, err = invoke("client-config", "cursor", *args, "--file", str(tmp_path / "m.json"),
                          "--write")
    assert code == 2, f"exit {code}"
    assert "\x1b" not in one_error_line(err)
    assert not (tmp_path / "m.json").exists()


def test_default_paths(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from mcp_keys.clientconfig import default_path

    assert default_path("claude-code") == Path(".mcp.json")
    assert default_path("cursor") == Path(".cursor/mcp.json")
    assert default_path("vscode") == Path(".vscode/mcp.json")
    assert default_path("windsurf", tmp_path) == tmp_path / ".codeium/windsurf/mcp_config.json"
    monkeypatch.setattr("sys.platform", "darwin")
    assert default_path("claude-desktop", tmp_path) == \
        tmp_path / "Library/Application Support/Claude/claude_desktop_config.json"
    monkeypatch.setattr("sys.platform", "linux")
    assert default_path("claude-desktop", tmp_path) == \
        tmp_path / ".config/Claude/claude_desktop_config.json"
