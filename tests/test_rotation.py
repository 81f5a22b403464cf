"""Rotation without downtime: grace windows exact to the second, links, .env in place."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from freezegun import freeze_time

from mcp_keys import InvalidState, KeyManager, KeyNotFound, Reason, Status, Validator
from tests.conftest import Cli, FileKeys, assert_absent, one_error_line, redact, state_of

T0 = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def manager(location: str) -> KeyManager:
    """This module's tests run on every backend (see conftest.BACKENDS)."""
    return KeyManager(location)


def test_grace_keeps_both_valid_until_the_second(manager: KeyManager) -> None:
    with freeze_time(T0) as frozen:
        old = manager.create("svc", description="d", scopes=["tools:call"])
        check = Validator(manager.store.display, refresh_interval=0)
        new = manager.rotate(old.record.id, grace=timedelta(hours=24))
        assert new.record.name == "svc" and new.record.description == "d"
        assert new.record.scopes == ("tools:call",)
        assert new.record.rotated_from == old.record.id
        assert manager.get(old.record.id).rotated_to == new.record.id
        assert new.record.expires_at == T0 + timedelta(days=90)

        frozen.move_to(T0 + timedelta(hours=23, minutes=59, seconds=59))
        assert check.validate(old.key).reason is Reason.VALID
        assert check.validate(new.key).reason is Reason.VALID
        frozen.move_to(T0 + timedelta(hours=24))
        assert check.validate(old.key).reason is Reason.EXPIRED
        assert check.validate(new.key).reason is Reason.VALID
        assert manager.get(old.record.id).status is Status.EXPIRED


def test_grace_never_extends_the_old_expiry(manager: KeyManager) -> None:
    with freeze_time(T0) as frozen:
        old = manager.create("svc", expires_in=timedelta(hours=1))
        manager.rotate(old.record.id, grace=timedelta(hours=24))
        check = Validator(manager.store.display, refresh_interval=0)
        assert manager.get(old.record.id).expires_at == T0 + timedelta(hours=1)
        frozen.move_to(T0 + timedelta(hours=1))
        assert check.validate(old.key).reason is Reason.EXPIRED


def test_no_grace_revokes_at_once(manager: KeyManager) -> None:
    old = manager.create("svc")
    new = manager.rotate(old.record.id, expires_in=timedelta(days=7))
    record = manager.get(old.record.id)
    assert record.status is Status.REVOKED and record.revoke_reason == "rotated"
    check = Validator(manager.store.display, refresh_interval=0)
    assert check.validate(old.key).reason is Reason.REVOKED
    assert check.validate(new.key).reason is Reason.VALID
    assert new.record.expires_at is not None
    assert new.record.expires_at - new.record.created_at == timedelta(days=7)


def test_rotate_rejects_revoked_expired_and_already_rotated(manager: KeyManager) -> None:
    with freeze_time(T0) as frozen:
        revoked = manager.create("r")
        manager.revoke(revoked.record.id)
        expiring = manager.create("e", expires_in=timedelta(seconds=1))
        live = manager.create("l")
        successor = manager.rotate(live.record.id, grace=timedelta(hours=1))
        frozen.tick(2)
        before = state_of(manager)
        for key_id, words in ((revoked.record.id, "revoked"), (expiring.record.id, "expired"),
                              (live.record.id, successor.record.id)):
            with pytest.raises(InvalidState) as info:
                manager.rotate(key_id)
            assert words in str(info.value)
        with pytest.raises(KeyNotFound):
            manager.rotate("zzzzzzzzzzzz")
        assert state_of(manager) == before


def test_rotate_replaces_the_env_value_in_place(any_run: Cli, tmp_path: Path) -> None:
    run = any_run
    env = tmp_path / ".env"
    created = json.loads(run("create", "svc", "--json", "--env-file", str(env)).stdout)
    old_key, old_id = created["key"], created["record"]["id"]
    env.write_text(f"# header\nA=1\nMCP_API_KEY={old_key}\n\nB='two'\n")
    result = run("rotate", old_id, "--env-file", str(env), "--grace", "1h")
    assert result.exit_code == 0, result.stderr
    new_key = result.stdout.strip()
    assert redact(env.read_text(), new_key) == "# header\nA=1\nMCP_API_KEY=<KEY0>\n\nB='two'\n"
    assert "will not be shown again" in result.stderr
    for later in (run("show", old_id).stdout, run("list", "--json").stdout):
        assert_absent(new_key, later, "show/list output")
        assert_absent(old_key, later, "show/list output")


@pytest.mark.parametrize("grace", ["-1h", "abc", "1.5h", "never"])
def test_bad_grace_is_a_usage_error(any_run: Cli, location: str, grace: str) -> None:
    run = any_run
    key_id = json.loads(run("create", "svc", "--json").stdout)["record"]["id"]
    before = state_of(KeyManager(location))
    result = run("rotate", key_id, "--grace", grace)
    assert result.exit_code == 2
    one_error_line(result.stderr)
    assert state_of(KeyManager(location)) == before


def test_rotate_is_one_write(file_manager: FileKeys, monkeypatch: pytest.MonkeyPatch) -> None:
    manager = file_manager
    old = manager.create("svc")
    writes: list[int] = []
    real = manager.store._write

    def counting(keys: dict[str, object]) -> None:
        writes.append(len(keys))
        real(keys)  # type: ignore[arg-type]

    monkeypatch.setattr(manager.store, "_write", counting)
    manager.rotate(old.record.id)
    assert writes == [2]
