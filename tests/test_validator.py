"""The Validator: every reason, constant-time compare, env mode, fail-closed, audit limits,
and a revoke from another process reaching a running validator."""

from __future__ import annotations

import logging
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from freezegun import freeze_time

from mcp_keys import Reason, Validator, tokens, validate_api_key
from mcp_keys.validator import ENV_MODE_DETAIL, key_required
from tests.conftest import FileKeys, assert_absent, run_cli_process

T0 = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def check(manager: FileKeys) -> Validator:
    manager.init()
    return Validator(manager.store.path, refresh_interval=0)


def test_every_reason(manager: FileKeys, check: Validator) -> None:
    with freeze_time(T0) as frozen:
        good = manager.create("good", scopes=["tools:call", "read"])
        revoked = manager.create("revoked")
        manager.revoke(revoked.record.id)
        short = manager.create("short", expires_in=timedelta(seconds=5))
        frozen.tick(5)
        forged = tokens.generate(good.record.id)  # right ID, wrong secret
        cases = {
            None: Reason.MISSING, "": Reason.MISSING, "   ": Reason.MISSING,
            "not-a-key": Reason.MALFORMED, good.key[:-1] + "x": Reason.MALFORMED,
            tokens.generate(): Reason.UNKNOWN, forged: Reason.UNKNOWN,
            revoked.key: Reason.REVOKED, short.key: Reason.EXPIRED, good.key: Reason.VALID,
        }
        for token, reason in cases.items():
            result = check.validate(token)
            assert result.reason is reason, reason
            assert bool(result) is (reason is Reason.VALID)
        assert check.validate(good.key, ["read"]).valid
        denied = check.validate(good.key, ["admin"])
        assert denied.reason is Reason.INSUFFICIENT_SCOPE and not denied
        result = check.validate(good.key)
        assert (result.key_id, result.name, result.scopes) == (
            good.record.id, "good", ("tools:call", "read"))
        assert result.expires_at == T0 + timedelta(days=90)
        unknown = check.validate(forged)
        assert unknown.name is None and unknown.scopes == ()  # nothing about the real key


def test_unknown_id_and_wrong_secret_cost_the_same(
        manager: FileKeys, check: Validator, monkeypatch: pytest.MonkeyPatch) -> None:
    """A miss is answered the same way whether or not the ID exists: one digest, one
    parse (checksum compare), one store re-check at most."""
    import hmac

    good = manager.create("good")
    assert check.validate(good.key).valid
    calls: list[int] = []
    real = hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        calls.append(1)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    counts = []
    for token in (tokens.generate(good.record.id), tokens.generate()):
        calls.clear()
        monkeypatch.setattr(check, "_next_recheck", float("-inf"))
        assert check.validate(token).reason is Reason.UNKNOWN
        counts.append(len(calls))
    assert counts[0] == counts[1] >= 1


def test_validator_never_writes_or_locks(manager: FileKeys) -> None:
    good = manager.create("good")
    path = manager.store.path
    manager.store.lock_path.unlink(missing_ok=True)
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    check = Validator(path, refresh_interval=0, audit_failures=False)
    for _ in range(50):
        check.validate(good.key)
        check.validate(tokens.generate())
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before
    assert not manager.store.lock_path.exists()


def test_env_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = tokens.generate()
    monkeypatch.setenv("MCP_API_KEY", key)
    check = Validator(tmp_path / "absent" / "keys.json", refresh_interval=0, env_fallback=True)
    result = check.validate(key)
    assert result.valid and result.detail == ENV_MODE_DETAIL
    assert check.validate(key, ["anything"]).reason is Reason.INSUFFICIENT_SCOPE
    assert check.validate(tokens.generate()).reason is Reason.UNKNOWN
    assert check.validate("garbage").reason is Reason.MALFORMED


def test_no_store_and_no_env_fails_closed(tmp_path: Path) -> None:
    check = Validator(tmp_path / "absent.json", refresh_interval=0)
    assert check.validate(tokens.generate()).reason is Reason.STORE_ERROR


def test_fail_closed_on_corruption_then_recover(manager: FileKeys, check: Validator,
                                               caplog: pytest.LogCaptureFixture) -> None:
    good = manager.create("good")
    assert check.validate(good.key).valid
    path = manager.store.path
    healthy = path.read_bytes()
    path.write_bytes(healthy[: len(healthy) // 2])
    with caplog.at_level(logging.WARNING, logger="mcp_keys"):
        for _ in range(20):
            assert check.validate(good.key).reason is Reason.STORE_ERROR
    assert sum("rejects every key" in r.getMessage() for r in caplog.records) == 1
    path.write_bytes(healthy)
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10_000_000))
    assert check.validate(good.key).valid


@pytest.mark.parametrize(("value", "required"), [
    (None, True), ("true", True), ("false", False), ("FALSE", False), ("0", True), ("", True),
    ("no", True),
])
def test_api_key_required(monkeypatch: pytest.MonkeyPatch, value: str | None,
                          required: bool) -> None:
    if value is not None:
        monkeypatch.setenv("API_KEY_REQUIRED", value)
    assert key_required() is required


def test_failed_validations_are_audited_at_most_once_per_second(
        manager: FileKeys, check: Validator) -> None:
    with freeze_time(T0) as frozen:
        good = manager.create("good")
        manager.revoke(good.record.id)
        forged = tokens.generate()
        for _ in range(100):
            check.validate(good.key)
            check.validate(forged)
        failures = manager.audit.read(event="validation_failed").events
        assert sorted(str(e.detail["reason"]) for e in failures) == ["REVOKED", "UNKNOWN"]
        frozen.tick(1)
        check.validate(good.key)
        assert len(manager.audit.read(event="validation_failed").events) == 3
    text = manager.audit.path.read_text()
    assert_absent(good.key, text, "the audit log")
    assert_absent(forged, text, "the audit log")


def test_a_storm_of_random_ids_is_capped_per_second(manager: FileKeys,
                                                     check: Validator) -> None:
    from mcp_keys.validator import AUDIT_LINES_PER_SECOND

    with freeze_time(T0) as frozen:
        manager.create("good")
        for _ in range(500):
            check.validate(tokens.generate())
        assert len(manager.audit.read(event="validation_failed").events) == AUDIT_LINES_PER_SECOND
        frozen.tick(1)
        check.validate(tokens.generate())
        lines = manager.audit.read(event="validation_failed").events
        assert lines[-2].detail == {"suppressed": 500 - AUDIT_LINES_PER_SECOND,
                                    "class": "unproven"}
        assert len(lines) == AUDIT_LINES_PER_SECOND + 2


def test_module_level_function_reuses_one_validator(manager: FileKeys) -> None:
    good = manager.create("good")
    assert validate_api_key(good.key, store=manager.store.path).valid
    from mcp_keys.validator import get_validator

    assert get_validator(manager.store.path) is get_validator(str(manager.store.path))


def poll_until(check: Validator, key: str, wanted: Reason, since: float) -> None:
    """Validate until ``wanted`` (5 s deadline); any call made a full refresh interval after
    ``since`` must already answer ``wanted``."""
    while True:
        started = time.monotonic()
        reason = check.validate(key).reason
        if reason is wanted:
            return
        assert started < since + check.refresh_interval, f"still {reason} after the interval"
        assert started < since + 5, "deadline passed"
        time.sleep(0.01)


def test_revoke_in_another_process_reaches_a_running_validator(manager: FileKeys) -> None:
    good = manager.create("good")
    check = Validator(manager.store.path, refresh_interval=0.25)
    assert check.validate(good.key).valid
    done = run_cli_process("--store", str(manager.store.path), "revoke", good.record.id)
    assert done.returncode == 0, done.stderr
    poll_until(check, good.key, Reason.REVOKED, since=time.monotonic())


def test_new_key_from_another_process_becomes_valid(manager: FileKeys) -> None:
    manager.create("first")
    check = Validator(manager.store.path, refresh_interval=0.25)
    assert check.validate(tokens.generate()).reason is Reason.UNKNOWN
    created = run_cli_process("--store", str(manager.store.path), "create", "second")
    assert created.returncode == 0
    poll_until(check, created.stdout.strip(), Reason.VALID, since=time.monotonic())


def test_validator_repr_and_results_hold_no_secret(manager: FileKeys, check: Validator) -> None:
    good = manager.create("good")
    result = check.validate(good.key)
    for text in (repr(check), repr(result), str(result), str(result.to_dict())):
        assert_absent(good.key, text, "a repr")
        assert good.record.digest not in text
