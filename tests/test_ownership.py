"""Files on a shared machine: StrictModes ownership and write-bit rules for writers and the
validator, private directories whatever the umask, no symlinks followed for the lock or
the audit log."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from mcp_keys import KeyManager, McpKeysError, Reason, Validator
from tests.conftest import Cli, FileKeys, in_child, one_error_line, shared_dir

DAEMON, NOBODY, BIN = 1, 65534, 2


@pytest.fixture
def shared() -> Iterator[Path]:
    base = shared_dir()
    yield base
    shutil.rmtree(base, ignore_errors=True)


def refusal(action: object) -> str:
    try:
        action()  # type: ignore[operator]
    except McpKeysError as exc:
        return str(exc)
    return "accepted"


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o720])
def test_a_store_directory_writable_by_others_is_refused(manager: FileKeys, mode: int) -> None:
    issued = manager.create("svc")
    manager.store.directory.chmod(mode)
    message = refusal(lambda: manager.create("other"))
    assert "writable by group or others" in message and "chmod go-w" in message, message
    result = Validator(manager.store.path, refresh_interval=0).validate(issued.key)
    assert result.reason is Reason.STORE_ERROR and "chmod go-w" in result.detail


def test_a_store_file_writable_by_others_is_refused(manager: FileKeys) -> None:
    issued = manager.create("svc")
    manager.store.path.chmod(0o622)
    assert "chmod go-w" in refusal(lambda: manager.revoke(issued.record.id))
    assert Validator(manager.store.path, refresh_interval=0).validate(
        issued.key).reason is Reason.STORE_ERROR


def test_a_writable_parent_is_refused_unless_sticky(tmp_path: Path) -> None:
    parent = tmp_path / "open"
    parent.mkdir()
    parent.chmod(0o777)
    store = parent / "project" / "keys.json"
    message = refusal(lambda: KeyManager(store).create("svc"))
    assert f"lies under {parent}" in message, message
    assert not (parent / "project").exists()  # refused before anything was created
    parent.chmod(0o1777)  # like /tmp
    assert KeyManager(store).create("svc").record.name == "svc"


def test_parents_are_created_0700_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        KeyManager(tmp_path / "a" / "b" / "c" / "keys.json").create("svc")
    finally:
        os.umask(old)
    for path in (tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "c"):
        assert path.stat().st_mode & 0o777 == 0o700, path


def test_a_store_owned_by_someone_else_is_refused_to_writers(shared: Path) -> None:
    store = shared / "keys" / "keys.json"
    KeyManager(store).create("svc")
    os.chown(store.parent, NOBODY, NOBODY)  # the caller's own directory...
    os.chown(store, DAEMON, DAEMON)  # ...holding a store that someone else owns
    said = in_child(lambda: refusal(lambda: KeyManager(store).create("x")), uid=NOBODY)
    assert "owned by" in said and "chown" in said, said


def test_a_validator_accepts_the_store_of_its_directory_owner(shared: Path) -> None:
    """An operator (daemon) manages the store; a service (nobody) validates against it."""
    directory = shared / "keys"
    store = directory / "keys.json"
    issued = KeyManager(store).create("svc")
    for path in (directory, store, directory / "audit.log", directory / "audit.log.head"):
        os.chown(path, DAEMON, DAEMON)
    directory.chmod(0o755)
    store.chmod(0o644)
    key = issued.key
    said = in_child(lambda: Validator(store, refresh_interval=0).validate(key).reason.value,
                    uid=NOBODY)
    assert said == "VALID", said
    os.chown(store, BIN, BIN)  # a file owned by neither the directory owner nor root
    said = in_child(lambda: Validator(store, refresh_interval=0).validate(key).detail,
                    uid=NOBODY)
    assert "owned by" in said, said


def test_init_refuses_an_unsafe_existing_store(run: Cli) -> None:
    assert run("init").exit_code == 0
    run.store.chmod(0o666)
    result = run("init")
    assert result.exit_code == 1
    assert "writable by group or others" in one_error_line(result.stderr)


def test_doctor_reports_ownership(run: Cli) -> None:
    import json

    assert run("init").exit_code == 0
    run.store.parent.chmod(0o775)
    result = run("doctor", "--json")
    checks = {c["check"]: c for c in json.loads(result.stdout)}
    assert result.exit_code == 1 and checks["store ownership"]["outcome"] == "fail"
    assert "chmod go-w" in checks["store ownership"]["message"]


def test_a_symlinked_lock_is_an_error_not_a_write_through(manager: FileKeys,
                                                          tmp_path: Path) -> None:
    manager.create("svc")
    target = tmp_path / "elsewhere"
    target.write_text("do not touch")
    manager.store.lock_path.unlink()
    manager.store.lock_path.symlink_to(target)
    before = manager.store.path.read_bytes()
    message = refusal(lambda: manager.create("other"))
    assert "symlink" in message, message
    assert target.read_text() == "do not touch" and manager.store.path.read_bytes() == before


@pytest.mark.parametrize("name", ["audit.log", "audit.log.head"])
def test_a_symlinked_audit_log_is_never_written_through(
        manager: FileKeys, tmp_path: Path, name: str,
        caplog: pytest.LogCaptureFixture) -> None:
    manager.create("svc")
    target = tmp_path / "elsewhere"
    target.write_text("do not touch")
    link = manager.store.directory / name
    link.unlink()
    link.symlink_to(target)
    with caplog.at_level("WARNING", logger="mcp_keys"):
        manager.create("other")
    assert target.read_text() == "do not touch"
    assert any("could not write audit log" in r.getMessage() for r in caplog.records)


def test_a_fifo_planted_as_the_audit_log_is_never_written(
        manager: FileKeys, caplog: pytest.LogCaptureFixture) -> None:
    manager.create("svc")
    manager.audit.path.unlink()
    os.mkfifo(manager.audit.path, 0o600)
    with caplog.at_level("WARNING", logger="mcp_keys"):
        assert manager.create("other").record.name == "other"  # the change stands
    assert any("could not write audit log" in r.getMessage() for r in caplog.records)
