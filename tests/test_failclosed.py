"""The validator fails closed on a hostile machine: no silent environment mode, no scope
from the environment, any loading error refuses, forks do not deadlock, a new key is
accepted at once."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import pytest
from freezegun import freeze_time

from mcp_keys import Reason, Validator, tokens
from tests.conftest import FileKeys, in_child, one_error_line, run_cli_process


@pytest.fixture
def check(manager: FileKeys) -> Validator:
    manager.init()
    return Validator(manager.store.path, refresh_interval=0)


def test_a_vanished_store_never_falls_back_to_the_environment(
        manager: FileKeys, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    for fallback in (False, True):
        issued = manager.create("svc")
        monkeypatch.setenv("MCP_API_KEY", issued.key)
        check = Validator(manager.store.path, refresh_interval=0, env_fallback=fallback)
        assert check.validate(issued.key).valid
        manager.revoke(issued.record.id)
        assert check.validate(issued.key).reason is Reason.REVOKED
        moved = manager.store.path.with_name("moved.json")
        manager.store.path.rename(moved)
        with caplog.at_level(logging.INFO, logger="mcp_keys"):
            result = check.validate(issued.key)
        assert result.reason is Reason.STORE_ERROR and "disappeared" in result.detail
        assert not any("environment mode" in r.getMessage() for r in caplog.records)
        moved.rename(manager.store.path)
        manager.store.path.write_bytes(manager.store.path.read_bytes())


def test_environment_mode_is_an_explicit_opt_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    key = tokens.generate()
    monkeypatch.setenv("MCP_API_KEY", key)
    absent = tmp_path / "absent" / "keys.json"
    refused = Validator(absent, refresh_interval=0).validate(key)
    assert refused.reason is Reason.STORE_ERROR and "MCP_KEYS_ENV_FALLBACK=1" in refused.detail
    monkeypatch.setenv("MCP_KEYS_ENV_FALLBACK", "1")
    with caplog.at_level(logging.WARNING, logger="mcp_keys"):
        assert Validator(absent, refresh_interval=0).validate(key).valid
    assert [r.levelno for r in caplog.records if "environment mode" in r.getMessage()] == [
        logging.WARNING]


def test_environment_mode_never_satisfies_a_scope(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from mcp_keys.integrations.mcp import ApiKeyMiddleware, McpKeysTokenVerifier
    from tests.test_middleware import echo_app, request

    key = tokens.generate()
    monkeypatch.setenv("MCP_API_KEY", key)
    check = Validator(tmp_path / "none.json", refresh_interval=0, env_fallback=True)
    assert check.validate(key, ["tools:call"]).reason is Reason.INSUFFICIENT_SCOPE
    app = ApiKeyMiddleware(echo_app, scopes=["tools:call"], validator=check)
    assert request(app, {"Authorization": f"Bearer {key}"}).status_code == 403
    open_app = ApiKeyMiddleware(echo_app, validator=check)
    assert request(open_app, {"Authorization": f"Bearer {key}"}).status_code == 200
    verifier = McpKeysTokenVerifier(required_scopes=["tools:call"], validator=check)
    assert asyncio.run(verifier.verify_token(key)) is None


@pytest.mark.parametrize("error", [RuntimeError("boom"), MemoryError(), RecursionError(),
                                   KeyError("x"), UnicodeError("odd")])
def test_any_error_while_loading_fails_closed_until_a_good_load(
        manager: FileKeys, check: Validator, monkeypatch: pytest.MonkeyPatch,
        error: Exception) -> None:
    good = manager.create("good")
    assert check.validate(good.key).valid

    def broken(*args: object) -> object:
        raise error

    monkeypatch.setattr("mcp_keys.validator.parse", broken)
    manager.create("other")  # a change, so the validator reloads
    for _ in range(3):
        assert check.validate(good.key).reason is Reason.STORE_ERROR
    monkeypatch.undo()
    manager.create("third")
    assert check.validate(good.key).valid


def test_an_error_while_checking_refuses(manager: FileKeys, check: Validator,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    good = manager.create("good")

    def broken(token: str) -> object:
        raise RuntimeError("unexpected")

    monkeypatch.setattr("mcp_keys.validator.tokens.parse", broken)
    assert check.validate(tokens.generate()).reason is Reason.STORE_ERROR
    assert check.validate(good.key).valid  # a hit never parses


def test_a_fifo_or_device_store_refuses_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo" / "keys.json"
    fifo.parent.mkdir(mode=0o700)
    os.mkfifo(fifo, 0o600)
    device = tmp_path / "dev" / "keys.json"
    device.parent.mkdir(mode=0o700)
    device.symlink_to("/dev/zero")
    for path in (fifo, device):
        def probe(store: Path = path) -> str:
            return Validator(store, refresh_interval=0).validate(tokens.generate()).detail

        said = in_child(probe, timeout=10)
        assert "not a regular file" in said, said
        done = run_cli_process("--store", str(path), "list", timeout=20)
        assert done.returncode == 1 and "not a regular file" in one_error_line(done.stderr)


def test_a_store_too_large_to_load_refuses(manager: FileKeys, check: Validator,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    good = manager.create("good")
    monkeypatch.setattr("mcp_keys.safefs.MAX_READ_BYTES", 100)
    result = check.validate(good.key)
    assert result.reason is Reason.STORE_ERROR and "limit" in result.detail


def test_a_forked_child_does_not_deadlock_on_a_held_lock(manager: FileKeys) -> None:
    good = manager.create("good")
    check = Validator(manager.store.path, refresh_interval=0)
    assert check.validate(good.key).valid
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with check._lock:
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(5)
    try:
        said = in_child(lambda: check.validate(good.key).reason.value, timeout=10)
    finally:
        release.set()
        holder.join()
    assert said == "VALID"


def test_a_key_created_elsewhere_is_accepted_on_first_use(manager: FileKeys) -> None:
    manager.create("first")
    check = Validator(manager.store.path, refresh_interval=3600)
    assert check.validate(tokens.generate()).reason is Reason.UNKNOWN
    created = run_cli_process("--store", str(manager.store.path), "create", "second")
    assert created.returncode == 0
    assert check.validate(created.stdout.strip()).valid
    failures = manager.audit.read(event="validation_failed").events
    assert [e.detail.get("reason") for e in failures] == ["UNKNOWN"]  # only the random one


def test_unknown_ids_recheck_the_store_at_most_every_50ms(
        manager: FileKeys, monkeypatch: pytest.MonkeyPatch) -> None:
    manager.create("first")
    loads: list[int] = []
    import mcp_keys.validator as validator_module

    real = validator_module.read_regular  # type: ignore[attr-defined]

    def counting(*args: object, **kwargs: object) -> object:
        loads.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(validator_module, "read_regular", counting)
    with freeze_time("2026-12-01 12:00:00") as frozen:
        check = Validator(manager.store.path, refresh_interval=3600, audit_failures=False)
        check.validate(tokens.generate())
        loads.clear()
        for _ in range(500):
            check.validate(tokens.generate())
        assert len(loads) <= 1
        frozen.tick(0.06)
        check.validate(tokens.generate())
        assert len(loads) <= 2


def test_revoked_key_is_audited_every_second_amid_a_storm(manager: FileKeys,
                                                          check: Validator) -> None:
    with freeze_time("2026-12-01 12:00:00") as frozen:
        gone = manager.create("gone")
        manager.revoke(gone.record.id)
        for _ in range(3):
            for _ in range(200):
                check.validate(tokens.generate())
            check.validate(gone.key)
            frozen.tick(1)
        events = manager.audit.read(event="validation_failed").events
    revoked = [e for e in events if e.detail.get("reason") == "REVOKED"]
    assert len(revoked) == 3 and all(e.key_id == gone.record.id for e in revoked)


def test_threads_never_see_half_a_reload(manager: FileKeys) -> None:
    """Reloads swap the whole state: threads validating meanwhile always see VALID."""
    good = manager.create("good")
    check = Validator(manager.store.path, refresh_interval=0)
    wrong: list[str] = []

    def hammer() -> None:
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            reason = check.validate(good.key).reason
            if reason is not Reason.VALID:
                wrong.append(reason.value)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for _ in range(5):
        manager.create("churn")
    for thread in threads:
        thread.join()
    assert wrong == []
