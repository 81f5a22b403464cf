from __future__ import annotations

import io
import json
import os
import stat
from pathlib import Path

import pytest
from dotenv import dotenv_values
from hypothesis import given, settings
from hypothesis import strategies as st

from mcp_keys import tokens
from mcp_keys.envfile import rewrite, set_variable
from mcp_keys.errors import EnvFileError
from tests.conftest import Cli, FileKeys, one_error_line, redact

ORIGINAL = (
    "# production settings\n"
    "DATABASE_URL='postgres://db/app'  # inline comment\n"
    "\n"
    "export DEBUG=false\n"
    "MULTI=\"line one\nline two\"\n"
    "   \n"
    "MCP_API_KEY=old-value\n"
    "TRAILING=1"
)


def test_sync_keeps_every_other_byte(tmp_path: Path, manager: FileKeys) -> None:
    env = tmp_path / ".env"
    env.write_text(ORIGINAL)
    first = manager.create("svc", env_file=env)
    assert redact(env.read_text(), first.key) == ORIGINAL.replace("old-value", "<KEY0>")
    second = manager.create("svc2", env_file=env)
    assert redact(env.read_text(), second.key) == ORIGINAL.replace("old-value", "<KEY0>")
    assert dotenv_values(env).get("MCP_API_KEY") == second.key, "the .env holds the second key"
    assert env.read_text().count("MCP_API_KEY=") == 1


def test_new_variable_is_appended_after_a_missing_final_newline(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("A=1")
    set_variable(env, "API_KEY_REQUIRED", "true")
    assert env.read_text() == "A=1\nAPI_KEY_REQUIRED=true\n"


def test_crlf_files_stay_crlf(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_bytes(b"A=1\r\n# c\r\nMCP_API_KEY=x\r\n")
    set_variable(env, "MCP_API_KEY", "y")
    assert env.read_bytes() == b"A=1\r\n# c\r\nMCP_API_KEY=y\r\n"


def test_new_env_file_is_0600_and_existing_mode_is_kept(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh.env"
    set_variable(fresh, "X", "1")
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600
    shared = tmp_path / "shared.env"
    shared.write_text("X=0\n")
    shared.chmod(0o640)
    set_variable(shared, "X", "1", secret=False)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o640


def test_a_key_never_lands_in_a_file_others_can_read(tmp_path: Path, manager: FileKeys,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    shared = tmp_path / ".env"
    shared.write_text("A=1\n")
    shared.chmod(0o664)
    with caplog.at_level("WARNING", logger="mcp_keys"):
        issued = manager.create("svc", env_file=shared)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o600
    assert any("removed group and other permissions" in r.getMessage() for r in caplog.records)
    assert redact(shared.read_text(), issued.key) == "A=1\nMCP_API_KEY=<KEY0>\n"


def test_custom_variable_name(tmp_path: Path, manager: FileKeys) -> None:
    env = tmp_path / ".env"
    issued = manager.create("svc", env_file=env, env_var="GITHUB_MCP_KEY")
    assert redact(env.read_text(), issued.key) == "GITHUB_MCP_KEY=<KEY0>\n"


def test_env_that_is_a_directory_fails_before_the_store_changes(
        tmp_path: Path, manager: FileKeys) -> None:
    manager.create("existing")
    before = manager.store.path.read_bytes()
    (tmp_path / "envdir").mkdir()
    with pytest.raises(EnvFileError) as info:
        manager.create("svc", env_file=tmp_path / "envdir")
    assert "directory" in str(info.value)
    assert manager.store.path.read_bytes() == before


@pytest.mark.parametrize("existing", [True, False])
def test_a_failed_env_write_withdraws_the_key(tmp_path: Path, manager: FileKeys,
                                             monkeypatch: pytest.MonkeyPatch,
                                             existing: bool) -> None:
    if existing:
        manager.create("existing")
    before = manager.store.path.read_bytes() if existing else None
    audit_before = manager.audit.path.read_bytes() if existing else None

    def full_disk(*args: object, **kwargs: object) -> bool:
        raise EnvFileError("cannot write .env: No space left on device")

    monkeypatch.setattr("mcp_keys.envfile.set_variable", full_disk)
    with pytest.raises(EnvFileError):
        manager.create("svc", env_file=tmp_path / ".env")
    if existing:
        assert manager.store.path.read_bytes() == before
        assert manager.audit.path.read_bytes() == audit_before
    else:  # no litter either: no store, lock, audit log or directory
        assert not manager.store.directory.exists()


def test_a_symlinked_env_is_refused_unless_asked(run: Cli, tmp_path: Path) -> None:
    target = tmp_path / "real.env"
    target.write_text("A=1\n")
    target.chmod(0o600)
    (tmp_path / "link.env").symlink_to(target)
    refused = run("create", "svc", "--env-file", "link.env")
    assert refused.exit_code == 1 and "--follow-symlink" in one_error_line(refused.stderr)
    assert target.read_text() == "A=1\n"
    listed = run("list", "--json")  # no key was made (and no store, if there was none)
    assert (listed.exit_code == 0 and json.loads(listed.stdout) == []) or \
        (listed.exit_code == 1 and "no store" in one_error_line(listed.stderr)), listed.stderr
    allowed = run("create", "svc", "--env-file", "link.env", "--follow-symlink")
    assert allowed.exit_code == 0
    assert redact(target.read_text(), allowed.stdout.strip()) == "A=1\nMCP_API_KEY=<KEY0>\n"
    assert (tmp_path / "link.env").is_symlink()


def test_an_env_owned_by_another_user_is_refused(manager: FileKeys, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("chown needs root (CI runs as root)")
    env = tmp_path / ".env"
    env.write_text("A=1\n")
    os.chown(env, 1, 1)
    with pytest.raises(EnvFileError) as info:
        manager.create("svc", env_file=env)
    assert "owned by uid 1" in str(info.value)
    assert env.read_text() == "A=1\n"


def test_leftover_temp_files_are_removed_before_a_write(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    leftover = tmp_path / "..env.abc123.tmp"
    leftover.write_text("MCP_API_KEY=half-written\n")
    set_variable(env, "MCP_API_KEY", tokens.generate())
    assert not leftover.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".env"]


LINE_SHAPES = [
    "A=1", "export B=two", "C='single # not a comment'", 'D="double \\" quote"',
    'E="multi\nline"', "# comment MCP_API_KEY=x", "", "   ", "F = spaced", "G=", "H",
    "MCP_API_KEY=old", "export MCP_API_KEY='quoted old'", 'MCP_API_KEY="multi\nold"',
    "MCP_API_KEY=old # trailing comment", "  MCP_API_KEY  =  padded", 'I="unterminated',
    "J=${A}", "K=\\$literal", "MCP_API_KEY=dup-last",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(LINE_SHAPES), max_size=8),
       st.sampled_from(["\n", "\r\n"]), st.booleans())
def test_the_rewrite_keeps_every_other_variable_as_dotenv_reads_it(
        shapes: list[str], newline: str, final_newline: bool) -> None:
    from dotenv import dotenv_values

    text = newline.join(shapes) + (newline if final_newline and shapes else "")
    value = tokens.generate()
    before = dotenv_values(stream=io.StringIO(text), interpolate=False)
    after = dotenv_values(stream=io.StringIO(rewrite(text, "MCP_API_KEY", value)),
                          interpolate=False)
    expected = {k: v for k, v in before.items() if k != "MCP_API_KEY"}
    got = {k: v for k, v in after.items() if k != "MCP_API_KEY"}
    assert got == expected, "another variable changed"
    assert after.get("MCP_API_KEY") == value, "the new value is not what dotenv reads"
