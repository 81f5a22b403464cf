"""The lifecycle through the Python API, on every backend: a real store file and a real
PostgreSQL database."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from freezegun import freeze_time

from mcp_keys import (
    AmbiguousKey,
    KeyManager,
    KeyNotFound,
    Reason,
    Status,
    UsageError,
    Validator,
)
from tests.conftest import FileKeys, assert_absent, state_of

T0 = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def manager(location: str) -> KeyManager:
    """This module's tests run on every backend (see conftest.BACKENDS)."""
    return KeyManager(location)


def validator(manager: KeyManager) -> Validator:
    return Validator(manager.store.display, refresh_interval=0)


def test_lifecycle_create_list_get_revoke_delete(manager: KeyManager) -> None:
    issued = manager.create("ci-bot", description="GitHub Actions", scopes=["tools:call"])
    key = issued.record
    assert key.name == "ci-bot" and key.scopes == ("tools:call",)
    assert [k.id for k in manager.list()] == [key.id]
    assert manager.get(key.id[:4]) == key
    assert validator(manager).validate(issued.key).reason is Reason.VALID

    revoked = manager.revoke(key.id, reason="left team")
    assert revoked.status is Status.REVOKED and revoked.revoke_reason == "left team"
    assert validator(manager).validate(issued.key).reason is Reason.REVOKED
    assert manager.revoke(key.id, reason="again") == revoked  # idempotent

    manager.delete(key.id)
    with pytest.raises(KeyNotFound):
        manager.get(key.id)
    assert validator(manager).validate(issued.key).reason is Reason.UNKNOWN


def test_store_holds_digest_only_with_strict_modes(file_manager: FileKeys) -> None:
    manager = file_manager
    issued = manager.create("svc")
    path = manager.store.path
    for file in path.parent.iterdir():
        assert_absent(issued.key, file.read_bytes(), file.name)
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file.name
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert issued.record.digest in path.read_text()
    assert_absent(issued.key, repr(issued), "repr(IssuedKey)")
    assert_absent(issued.key, str(issued), "str(IssuedKey)")
    assert issued.record.digest not in repr(issued.record)


def test_expiry_boundary_is_exact(manager: KeyManager) -> None:
    with freeze_time(T0) as frozen:
        issued = manager.create("short", expires_in=timedelta(hours=1))
        check = Validator(manager.store.display, refresh_interval=0)
        frozen.move_to(T0 + timedelta(hours=1) - timedelta(seconds=1))
        assert check.validate(issued.key).reason is Reason.VALID
        assert manager.get(issued.record.id).status is Status.ACTIVE
        frozen.move_to(T0 + timedelta(hours=1))
        assert check.validate(issued.key).reason is Reason.EXPIRED
        assert manager.get(issued.record.id).status is Status.EXPIRED
        assert [k.id for k in manager.list(status="expired")] == [issued.record.id]


def test_default_expiry_is_exactly_ninety_days_and_never_never_expires(
        manager: KeyManager) -> None:
    with freeze_time(T0) as frozen:
        default = manager.create("default")
        forever = manager.create("forever", expires_in=None)
        assert default.record.expires_at == T0 + timedelta(days=90)
        assert forever.record.expires_at is None
        frozen.move_to(datetime(9999, 12, 31, tzinfo=UTC))
        check = Validator(manager.store.display, refresh_interval=0)
        assert check.validate(forever.key).reason is Reason.VALID
        assert check.validate(default.key).reason is Reason.EXPIRED


def test_list_filters(manager: KeyManager) -> None:
    with freeze_time(T0):
        a = manager.create("a", scopes=["read"], expires_in=timedelta(days=3)).record
        b = manager.create("b", scopes=["read", "write"], expires_in=timedelta(days=30)).record
        c = manager.create("c", expires_in=None).record
        manager.revoke(c.id)
        assert {k.id for k in manager.list(scope="read")} == {a.id, b.id}
        assert [k.id for k in manager.list(status="revoked")] == [c.id]
        assert {k.id for k in manager.list(status="active")} == {a.id, b.id}
        assert [k.id for k in manager.list(expiring_within=timedelta(days=3))] == [a.id]
        assert {k.id for k in manager.list(status="all")} == {a.id, b.id, c.id}


def test_prefix_resolution(manager: KeyManager, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = iter(["abcd11111111", "abcd22222222"])
    monkeypatch.setattr("mcp_keys.tokens.generate_id", lambda: next(ids))
    manager.create("one")
    manager.create("two")
    with pytest.raises(AmbiguousKey) as info:
        manager.get("abcd")
    assert "abcd11111111" in str(info.value) and "abcd22222222" in str(info.value)
    assert manager.get("abcd1").name == "one"
    with pytest.raises(KeyNotFound):
        manager.get("abc")  # fewer than 4 characters
    with pytest.raises(KeyNotFound):
        manager.get("zzzz")


def test_pasted_token_as_id_is_not_echoed(manager: KeyManager) -> None:
    issued = manager.create("x")
    with pytest.raises(KeyNotFound) as info:
        manager.get(issued.key)
    assert_absent(issued.key, str(info.value), "error message")


@pytest.mark.parametrize("name", ["", "   ", "x" * 65, "bad\nname", "tab\tname", "esc\x1b[31m",
                                  "nul\x00"])
def test_bad_names_change_nothing(manager: KeyManager, name: str) -> None:
    manager.create("existing")
    before = state_of(manager)
    with pytest.raises(UsageError):
        manager.create(name)
    assert state_of(manager) == before


def test_sixty_four_printable_characters_is_fine(manager: KeyManager) -> None:
    assert manager.create("é" * 64).record.name == "é" * 64


def test_init_is_idempotent(file_manager: FileKeys, tmp_path: Path) -> None:
    manager = file_manager
    first = manager.init(env_file=".env")
    assert first.created and first.gitignored == ("keys/", ".env", "..env.*.tmp")
    before = manager.store.path.read_bytes()
    second = manager.init(env_file=".env")
    assert not second.created and second.gitignored == ()
    assert manager.store.path.read_bytes() == before
    assert (tmp_path / ".gitignore").read_text() == "keys/\n.env\n..env.*.tmp\n"


def test_init_leaves_gitignore_alone_for_a_store_elsewhere(tmp_path: Path) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as elsewhere:
        report = KeyManager(Path(elsewhere) / "keys.json").init()
    assert report.created and report.gitignored == ()
    assert not (tmp_path / ".gitignore").exists()


def test_init_on_any_backend_is_idempotent(manager: KeyManager) -> None:
    assert manager.init().created
    before = state_of(manager)
    assert not manager.init().created
    assert state_of(manager) == before
