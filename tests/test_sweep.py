"""The cron sweep: expirations recorded once, exact warning and purge windows, quiet."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from freezegun import freeze_time

from mcp_keys import KeyManager
from tests.conftest import Cli, one_error_line, state_of

T0 = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def manager(location: str) -> KeyManager:
    """This module's tests run on every backend (see conftest.BACKENDS)."""
    return KeyManager(location)


def events(manager: KeyManager, name: str) -> list[str | None]:
    return [e.key_id for e in manager.audit.read(event=name).events]


def test_expirations_are_recorded_exactly_once(manager: KeyManager) -> None:
    with freeze_time(T0) as frozen:
        short = manager.create("short", expires_in=timedelta(days=1)).record
        manager.create("long", expires_in=timedelta(days=365))
        frozen.move_to(T0 + timedelta(days=1))
        first = manager.sweep()
        assert [k.id for k in first.expired] == [short.id]
        assert manager.get(short.id).expiry_recorded_at == T0 + timedelta(days=1)
        frozen.tick(3600)
        second = manager.sweep()
        assert second.expired == () and second.quiet
        assert events(manager, "expire") == [short.id]


def test_warning_window_boundaries(manager: KeyManager) -> None:
    with freeze_time(T0):
        inside = manager.create("inside", expires_in=timedelta(days=14)).record
        manager.create("outside", expires_in=timedelta(days=14, seconds=1))
        manager.create("forever", expires_in=None)
        report = manager.sweep(warn_within=timedelta(days=14))
        assert [k.id for k in report.expiring] == [inside.id]
        assert manager.sweep(warn_within=timedelta(days=14) - timedelta(seconds=1)).expiring == ()


def test_keys_in_a_rotation_grace_period_are_not_warned_about(manager: KeyManager) -> None:
    with freeze_time(T0):
        old = manager.create("svc", expires_in=timedelta(days=365)).record
        new = manager.rotate(old.id, grace=timedelta(hours=24)).record
        assert manager.sweep().expiring == ()
        assert [k.id for k in manager.list(expiring_within=timedelta(days=1))] == [old.id]
        assert new.expires_at == T0 + timedelta(days=90)


def test_purge_removes_only_records_dead_long_enough(manager: KeyManager) -> None:
    with freeze_time(T0) as frozen:
        revoked = manager.create("revoked").record
        manager.revoke(revoked.id)
        expired = manager.create("expired", expires_in=timedelta(days=1)).record
        recent = manager.create("recent", expires_in=None).record
        alive = manager.create("alive", expires_in=timedelta(days=365)).record
        frozen.move_to(T0 + timedelta(days=10))
        manager.revoke(recent.id)
        frozen.move_to(T0 + timedelta(days=30) - timedelta(seconds=1))
        assert manager.sweep(purge_after=timedelta(days=30)).purged == ()
        frozen.move_to(T0 + timedelta(days=30))
        report = manager.sweep(purge_after=timedelta(days=30))
        assert [k.id for k in report.purged] == [revoked.id]
        frozen.move_to(T0 + timedelta(days=31))
        assert [k.id for k in manager.sweep(purge_after=timedelta(days=30)).purged] == [expired.id]
        assert {k.id for k in manager.list()} == {recent.id, alive.id}
        assert events(manager, "purge") == [revoked.id, expired.id]


def test_dry_run_changes_neither_store_nor_audit(manager: KeyManager) -> None:
    with freeze_time(T0) as frozen:
        key = manager.create("k", expires_in=timedelta(days=1)).record
        frozen.move_to(T0 + timedelta(days=60))
        before = state_of(manager)
        report = manager.sweep(dry_run=True, purge_after=timedelta(days=30))
        assert report.dry_run and [k.id for k in report.expired] == [key.id]
        assert [k.id for k in report.purged] == [key.id]
        assert state_of(manager) == before


def test_cli_is_quiet_when_nothing_to_say(any_run: Cli) -> None:
    run = any_run
    run("create", "far", "--expires-in", "1y")
    result = run("sweep")
    assert result.exit_code == 0 and result.stdout == "" and result.stderr == ""


def test_cli_summary_json_and_fail_on_warn(any_run: Cli) -> None:
    run = any_run
    with freeze_time(T0) as frozen:
        created = json.loads(run("create", "soon", "--expires-in", "3d", "--json").stdout)
        key_id = created["record"]["id"]
        run("create", "gone", "--expires-in", "1h")
        frozen.tick(7200)
        result = run("sweep")
        assert result.exit_code == 0
        assert "recorded expiry" in result.stdout and key_id in result.stdout
        warned = run("sweep", "--fail-on-warn")
        assert warned.exit_code == 3 and "warning:" in warned.stdout
        assert run("sweep", "--fail-on-warn", "--quiet").stdout == ""
        report = json.loads(run("sweep", "--json").stdout)
        assert [k["id"] for k in report["expiring"]] == [key_id] and report["expired"] == []
        assert run("sweep", "--warn-within", "1d", "--fail-on-warn").exit_code == 0


@pytest.mark.parametrize("args", [["--purge-after", "never"], ["--purge-after", "0d"],
                                  ["--warn-within", "-1d"], ["--purge-after", "x"]])
def test_bad_sweep_arguments(any_run: Cli, location: str, args: list[str]) -> None:
    run = any_run
    run("create", "svc")
    before = state_of(KeyManager(location))
    result = run("sweep", *args)
    assert result.exit_code == 2
    one_error_line(result.stderr)
    assert state_of(KeyManager(location)) == before


def test_sweep_on_a_corrupt_store_exits_one(run: Cli, store_path: Path) -> None:
    store_path.parent.mkdir()
    store_path.write_text("{")
    result = run("sweep")
    assert result.exit_code == 1 and str(store_path) in one_error_line(result.stderr)
    assert store_path.read_text() == "{"
