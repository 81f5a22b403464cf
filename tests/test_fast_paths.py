"""``mcp-keys list --json`` skips Click (start-up), and must answer exactly as the Click
command does: the same stdout, stderr and exit code, for good stores and bad ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from mcp_keys.cli import cli
from tests.conftest import FileKeys, run_cli_process


def click_path(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def fast_path(*args: str) -> tuple[int, str, str]:
    done = run_cli_process(*args)
    return done.returncode, done.stdout, done.stderr


@pytest.fixture
def populated(manager: FileKeys) -> Path:
    manager.create("ci-bot", scopes=["tools:call"], description="Grüße, 日本")
    gone = manager.create("gone")
    manager.revoke(gone.record.id, reason="left")
    manager.create("bound", resources=["https://mcp.example.com/mcp"], expires_in=None)
    manager.create("brief", expires_in=timedelta(days=1))
    return manager.store.path


@pytest.mark.parametrize("shape", ["global", "after", "equals"])
def test_the_same_bytes_as_the_click_command(populated: Path, shape: str) -> None:
    store = str(populated)
    args = {"global": ["--store", store, "list", "--json"],
            "after": ["list", "--json", "--store", store],
            "equals": ["list", f"--store={store}", "--json"]}[shape]
    fast = fast_path(*args)
    assert fast == click_path(*args), f"{shape}: the fast path answers differently"
    assert [r["name"] for r in json.loads(fast[1])] == ["ci-bot", "gone", "bound", "brief"]


def test_the_environment_names_the_store(populated: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_KEYS_STORE", str(populated))
    assert fast_path("list", "--json") == click_path("list", "--json")


@pytest.mark.parametrize("damage", ["corrupt", "unsafe", "directory"])
def test_the_same_errors_as_the_click_command(populated: Path, damage: str) -> None:
    if damage == "corrupt":
        populated.write_text("{")
    elif damage == "unsafe":
        populated.chmod(0o666)
    else:
        populated.unlink()
        populated.mkdir()
    fast = fast_path("--store", str(populated), "list", "--json")
    assert fast[0] != 0 and fast == click_path("--store", str(populated), "list", "--json"), \
        f"{damage}: {fast[0]} {fast[2][:200]}"


def test_click_is_not_loaded(populated: Path) -> None:
    probe = ("import atexit, sys; atexit.register(lambda: sys.stderr.write("
             "'CLICK=%s' % ('click' in sys.modules))); sys.argv = ['mcp-keys', 'list', "
             "'--json']; from mcp_keys.entry import main; main()")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env={**os.environ, "MCP_KEYS_STORE": str(populated)}, check=False)
    assert done.returncode == 0 and done.stderr.endswith("CLICK=False"), done.stderr[-300:]


@pytest.mark.parametrize("args", [["list"], ["list", "--json", "--status", "active"],
                                  ["--json", "list"], ["list", "--json", "--json"],
                                  ["list", "--json", "extra"]])
def test_anything_else_goes_to_click(populated: Path, args: list[str]) -> None:
    fast = fast_path("--store", str(populated), *args)
    assert fast == click_path("--store", str(populated), *args)


@pytest.mark.parametrize("columns", ["40", "60", "100", "200", "", "junk"])
def test_help_is_as_wide_as_clicks_own(columns: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--help`` sizes itself without shutil, to the width Click would choose."""
    import shutil

    from mcp_keys.cli import _help_width

    monkeypatch.setenv("COLUMNS", columns)
    expected = max(min(shutil.get_terminal_size().columns, 80) - 2, 50)
    assert _help_width(80) == expected, f"COLUMNS={columns!r}"
