"""``mcp-keys doctor``: one test per finding."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from mcp_keys import KeyManager
from tests.conftest import Cli


def git(*args: str) -> None:
    subprocess.run(["git", *args], check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    git("init", "-q")
    return tmp_path


def outcomes(run: Cli, *args: str) -> tuple[int, dict[str, str]]:
    result = run("doctor", "--json", *args)
    return result.exit_code, {c["check"]: c["outcome"] for c in json.loads(result.stdout)}


def test_clean_setup_passes(run: Cli, repo: Path) -> None:
    run("init", "--env-file", ".env")
    run("create", "svc", "--env-file", ".env")
    code, found = outcomes(run)
    assert code == 0 and set(found.values()) == {"pass"}, found
    assert "env in git" in " ".join(found)


def test_loose_modes_fail(run: Cli, repo: Path, store_path: Path) -> None:
    run("init")
    run("create", "svc")
    store_path.chmod(0o644)
    store_path.parent.chmod(0o755)
    code, found = outcomes(run)
    assert code == 1
    assert found["store file"] == "fail" and found["store directory"] == "fail"


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_foreign_owner_fails(run: Cli, repo: Path, store_path: Path) -> None:
    run("init")
    os.chown(store_path, 65534, -1)
    code, found = outcomes(run)
    assert code == 1 and found["store file"] == "fail"


def test_store_not_ignored_or_tracked_fails(run: Cli, repo: Path, store_path: Path) -> None:
    KeyManager(store_path).create("svc")
    code, found = outcomes(run)
    assert code == 1 and found["store in git"] == "fail"
    git("add", "-f", str(store_path))
    (repo / ".gitignore").write_text("keys/\n")
    code, found = outcomes(run)
    assert code == 1 and found["store in git"] == "fail"
    result = run("doctor")
    assert "tracked by git" in result.stdout


def test_env_not_ignored_fails(run: Cli, repo: Path) -> None:
    run("init")
    created = run("create", "svc", "--env-file", ".env")
    assert "not git-ignored" in created.stderr
    code, found = outcomes(run)
    assert code == 1 and found[".env in git"] == "fail"


def test_keys_without_expiry_or_expiring_soon_warn(run: Cli, repo: Path) -> None:
    run("init")
    run("create", "forever", "--expires-in", "never")
    code, found = outcomes(run)
    assert code == 0 and found["expiry set"] == "warn"
    KeyManager(run.store).create("soon", expires_in=timedelta(days=3))
    code, found = outcomes(run)
    assert code == 0 and found["expiring soon"] == "warn"
    assert "warn" in run("doctor").stdout


def test_corrupt_store_fails(run: Cli, repo: Path, store_path: Path) -> None:
    run("init")
    store_path.write_text("[]")
    code, found = outcomes(run)
    assert code == 1 and found["store readable"] == "fail"
