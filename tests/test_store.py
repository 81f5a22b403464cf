"""The store file: schema, refusal to overwrite what it does not understand, locking."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mcp_keys import KeyManager, StoreCorrupt, StoreError, StoreLocked, UsageError
from mcp_keys.stores.jsonfile import JsonStore as Store
from tests.conftest import FileKeys


def test_store_layout(manager: FileKeys) -> None:
    issued = manager.create("svc")
    data = json.loads(manager.store.path.read_text())
    assert data["version"] == 1
    entry = data["keys"][issued.record.id]
    assert "status" not in entry and len(entry["digest"]) == 64


@pytest.mark.parametrize("content", [
    b'{"version": 1, "keys": {', b"", b"[]", b'{"version": 99, "keys": {}}',
    b'{"keys": {}}', b'{"version": 1}', b'{"version": 1, "keys": {"abc": {}}}',
    b'{"version": 1, "keys": {"aaaaaaaaaaaa": {"name": 3}}}',
    b'\xff\xfe', b'{"version": 1, "version": 1, "keys": {}}',
])
def test_unreadable_stores_are_reported_and_never_overwritten(
        store_path: Path, content: bytes) -> None:
    store_path.parent.mkdir()
    store_path.write_bytes(content)
    manager = KeyManager(store_path)
    with pytest.raises(StoreCorrupt) as info:
        manager.create("svc")
    assert str(store_path) in str(info.value)
    with pytest.raises(StoreCorrupt):
        manager.list()
    assert store_path.read_bytes() == content


def test_store_path_that_is_a_directory(store_path: Path) -> None:
    store_path.mkdir(parents=True)
    with pytest.raises(UsageError) as info:
        KeyManager(store_path).create("svc")
    assert "is a directory; give the store file" in str(info.value)


def test_read_only_store_is_refused(manager: FileKeys) -> None:
    manager.create("svc")
    path = manager.store.path
    before = path.read_bytes()
    path.chmod(0o400)
    with pytest.raises(StoreError) as info:
        manager.create("other")
    assert "read-only" in str(info.value)
    assert path.read_bytes() == before


HOLD_LOCK = """
import sys, time
from mcp_keys.locking import LockFile
lock = LockFile(sys.argv[1], 10)
lock.acquire()
print("locked", flush=True)
sys.stdin.readline()
"""


def test_lock_held_by_another_process_times_out_cleanly(manager: FileKeys) -> None:
    manager.create("svc")
    before = manager.store.path.read_bytes()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(manager.store.lock_path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        quick = KeyManager(manager.store.path, lock_timeout=0.2)
        with pytest.raises(StoreLocked) as info:
            quick.create("blocked")
        assert str(manager.store.lock_path) in str(info.value)
        assert manager.store.path.read_bytes() == before
    finally:
        holder.communicate("\n", timeout=10)
    assert KeyManager(manager.store.path, lock_timeout=0.2).create("after").record.name == "after"


def test_missing_store_reads_empty_and_write_ops_say_init(store_path: Path) -> None:
    store = Store(store_path)
    assert len(store.read()) == 0
    with pytest.raises(StoreError) as info:
        KeyManager(store_path).revoke("abcdabcdabcd")
    assert "init" in str(info.value)
    assert not store_path.parent.exists()


def test_env_var_selects_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_KEYS_STORE", str(tmp_path / "elsewhere.json"))
    KeyManager().create("svc")
    assert (tmp_path / "elsewhere.json").is_file()
    assert not (tmp_path / ".mcp-keys").exists()


def test_default_store_location(tmp_path: Path) -> None:
    KeyManager().create("svc")
    assert (tmp_path / ".mcp-keys" / "keys.json").is_file()
    assert oct(os.stat(tmp_path / ".mcp-keys").st_mode & 0o777) == "0o700"


def test_symlinked_store_is_read_but_not_replaced(tmp_path: Path) -> None:
    real = tmp_path / "real" / "keys.json"
    KeyManager(real).create("svc")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    assert [k.name for k in KeyManager(link).list()] == ["svc"]
    with pytest.raises(StoreError) as info:
        KeyManager(link).create("other")
    assert str(real) in str(info.value)
    assert link.is_symlink()


def test_bad_lock_timeout_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from mcp_keys import UsageError

    monkeypatch.setenv("MCP_KEYS_LOCK_TIMEOUT", "soon")
    with pytest.raises(UsageError) as info:
        Store("keys.json")
    assert "MCP_KEYS_LOCK_TIMEOUT" in str(info.value)


def test_directory_created_by_a_racing_process_is_fine(
        store_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two first writers both see no directory; the loser's mkdir must not fail the write."""
    store_path.parent.mkdir()
    real_is_dir = Path.is_dir
    looks: list[Path] = []

    def racing_is_dir(self: Path) -> bool:
        looks.append(self)
        if self == store_path.parent and looks.count(self) == 1:
            return False  # the first look misses the directory the other process just made
        return real_is_dir(self)

    monkeypatch.setattr(Path, "is_dir", racing_is_dir)
    KeyManager(store_path).create("svc")
    assert store_path.is_file()


def test_a_file_where_the_directory_should_be(store_path: Path) -> None:
    store_path.parent.write_text("not a directory")
    with pytest.raises(StoreError) as info:
        KeyManager(store_path).create("svc")
    assert "not a directory" in str(info.value)
