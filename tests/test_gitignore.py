""".gitignore entries that git really honours, confirmed with git itself."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mcp_keys.gitignore import escape
from tests.conftest import Cli, one_error_line


def git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=False)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    git("init", "-q", str(tmp_path))
    return tmp_path


def ignored(path: str) -> bool:
    return git("check-ignore", "-q", "--no-index", "--", path).returncode == 0


@pytest.mark.parametrize("directory", ["#keys", "!keys", "keys ", " keys", "k*s", "k[e]ys",
                                       "back\\slash", "a?b"])
def test_awkward_store_directories_are_really_ignored(repo: Path, directory: str) -> None:
    store = repo / directory / "keys.json"
    result = Cli(store, [])("init", "--env-file", f"{directory}.env")
    assert result.exit_code == 0, result.stderr
    assert ignored(str(store)) and ignored(f"{directory}.env")
    assert not ignored("unrelated.txt") and not ignored("keys.json")


def test_escape_makes_syntax_literal() -> None:
    assert escape("#a") == "\\#a" and escape("!a") == "\\!a" and escape("a  ") == "a\\ \\ "
    assert escape("*.json") == "\\*.json" and escape("plain/dir") == "plain/dir"


def test_a_negation_that_defeats_the_entry_is_an_error(repo: Path) -> None:
    (repo / ".gitignore").write_text("keys/\n!keys/\n!keys/keys.json\n")
    store = repo / "keys" / "keys.json"
    result = Cli(store, [])("init")
    assert result.exit_code == 1
    line = one_error_line(result.stderr)
    assert "git still does not ignore" in line and "check-ignore -v" in line


def test_a_store_at_the_project_root_ignores_its_own_files(repo: Path) -> None:
    result = Cli(repo / "keys.json", [])("init")
    assert result.exit_code == 0, result.stderr
    text = (repo / ".gitignore").read_text().splitlines()
    assert text == ["keys.json", "keys.json.lock", "audit.log", "audit.log.head", "audit.log.*"]
    assert Cli(repo / "keys.json", [])("create", "svc").exit_code == 0
    for name in ("keys.json", "audit.log", "audit.log.head", "audit.log.3"):
        assert ignored(name), name
    assert git("status", "--porcelain", "--untracked-files=all").stdout.strip() == (
        "?? .gitignore")


def test_init_ignores_the_env_temp_files(repo: Path) -> None:
    assert Cli(repo / ".mcp-keys" / "keys.json", [])("init", "--env-file", ".env").exit_code == 0
    assert ignored("..env.a1b2c3.tmp") and ignored(".env")
