"""A role that can connect may NOTIFY on any channel: validators must not believe it.

The roles are made from docs/deployment.md's GRANTs as written; the forger is the
low-privilege server role. Every forgery is followed by a real revoke, which must reach
the validator within a second, while a valid key keeps validating (``max_stale=0``: a
forgery that looked like lost contact would refuse it)."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator

import pytest

from mcp_keys import KeyManager, Reason, Validator
from mcp_keys.stores.postgres import CHANNEL
from tests.conftest import assert_absent
from tests.test_deployment import Roles, documented_roles

FORGED = [
    json.dumps({"seq": 10**12}),  # the counter far ahead
    json.dumps({"seq": 10**30, "ids": []}),  # past bigint
    json.dumps({"seq": -5, "ids": ["abcdefghijkl"]}),  # negative
    json.dumps({"seq": 0, "all": True}),
    "{not json",  # malformed
    "[1, 2, 3]",
    "null",
    "",
    '{"seq": 1e999}',  # infinity
    json.dumps({"seq": "12", "ids": [1, 2]}),  # wrong types
    json.dumps({"seq": 2, "ids": ["x" * 40] * 150}),  # huge (under NOTIFY's 8000 bytes)
    "x" * 7900,  # huge and malformed
]


@pytest.fixture
def roles(pg_url: str) -> Iterator[Roles]:
    """The documented owner, admin and server roles on a fresh store."""
    with documented_roles(pg_url) as made:
        yield made


def revoke_arrives(check: Validator, admin: KeyManager, doomed: str, doomed_id: str,
                   valid: str) -> None:
    """Revoke ``doomed`` for real; it is refused within 1 s, and ``valid`` validates at
    every step (notifications arrive in order, so the forgeries came first)."""
    admin.revoke(doomed_id)
    start = time.monotonic()
    while True:
        kept = check.validate(valid)
        assert kept.valid, f"a valid key was refused after a forgery: {kept.reason.value}"
        reason = check.validate(doomed).reason
        if reason is Reason.REVOKED:
            return
        assert time.monotonic() - start < 1.0, f"the revoke did not arrive: {reason.value}"
        time.sleep(0.01)


@pytest.mark.parametrize("refresh_interval", [1.0, 0])
def test_forged_notifications_neither_hide_revokes_nor_refuse_valid_keys(
        roles: Roles, refresh_interval: float, caplog: pytest.LogCaptureFixture) -> None:
    import psycopg

    admin = KeyManager(roles.admin)
    valid = admin.create("valid")
    doomed = [admin.create(f"doomed-{n}") for n in range(len(FORGED))]
    check = Validator(roles.server, refresh_interval=refresh_interval, max_stale=0)
    assert check.validate(valid.key).valid
    caplog.set_level(logging.WARNING, logger="mcp_keys")
    with psycopg.connect(roles.server, autocommit=True) as forger:
        for payload, victim in zip(FORGED, doomed, strict=True):
            assert check.validate(victim.key).valid
            forger.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
            forger.execute(f"NOTIFY {CHANNEL}")  # no payload at all
            revoke_arrives(check, admin, victim.key, victim.record.id, valid.key)
    assert "malformed notification" in caplog.text, "forged payloads are logged"
    for key in (valid.key, *(d.key for d in doomed)):
        assert_absent(key, caplog.text, "the log")


def test_the_server_role_cannot_move_the_counter(roles: Roles) -> None:
    """The counter validators read lives in ``key_changes``, which the server role may
    only read; the old counter in ``store_state`` (which it may update, for the audit
    head) is no longer believed."""
    import psycopg

    admin = KeyManager(roles.admin)
    valid, doomed = admin.create("valid"), admin.create("doomed")
    check = Validator(roles.server, max_stale=0)
    assert check.validate(doomed.key).valid
    with psycopg.connect(roles.server, autocommit=True) as forger:
        for statement in ("INSERT INTO key_changes (seq, ids) VALUES (10^12, NULL)",
                          "UPDATE key_changes SET seq = seq + 1000000",
                          "DELETE FROM key_changes"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                forger.execute(statement)
        # The old counter: the server role may still update store_state (for the audit
        # head) under some GRANTs; either way the validator does not believe it.
        with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
            forger.execute("UPDATE store_state SET change_seq = 1000000000000")
        forger.execute("SELECT pg_notify(%s, %s)", (CHANNEL, json.dumps({"seq": 10**12})))
    revoke_arrives(check, admin, doomed.key, doomed.record.id, valid.key)


def test_a_reload_installs_the_database_state_even_if_the_counter_went_back(
        pg_url: str) -> None:
    """A restored backup can carry a lower counter: the validator installs it anyway."""
    import psycopg

    manager = KeyManager(pg_url)
    valid, doomed = manager.create("valid"), manager.create("doomed")
    check = Validator(pg_url, max_stale=0)
    for n in range(3):
        manager.create(f"filler-{n}")
    assert check.validate(doomed.key).valid
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE api_keys SET revoked_at = now() WHERE id = %s",
                     (doomed.record.id,))
        conn.execute("DELETE FROM key_changes WHERE seq > 1")  # "restored" to seq 1
    start = time.monotonic()
    while check.validate(doomed.key).reason is not Reason.REVOKED:
        assert time.monotonic() - start < 5, "the restored state was not installed"
        time.sleep(0.02)
    assert check.validate(valid.key).valid

