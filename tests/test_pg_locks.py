"""What a server's database role can lock cannot hold up an operator's key changes.

The roles come from docs/deployment.md's GRANTs, run as written (``deployed``). The
server role holds every lock it can take (an advisory lock on the key mcp-keys' schema
lock uses, and a read transaction on every table); operators still create, rotate and
revoke, each with its audit line.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mcp_keys import KeyManager, Reason, Validator
from tests.test_pg_audit_forgery import Deployment, deployed  # noqa: F401 - the fixture

TABLES = ("schema_version", "api_keys", "audit_events", "audit_head", "store_state",
          "key_changes")


@pytest.fixture
def held(deployed: Deployment) -> Iterator[Deployment]:  # noqa: F811 - the fixture
    """A server-role session that holds the schema's advisory lock (session-level, as
    any role may) and an open transaction that has read every table."""
    import psycopg

    holder = psycopg.connect(deployed.server)
    try:
        holder.execute("SELECT pg_advisory_lock(hashtext('mcp_keys_schema'))")
        for table in TABLES:
            holder.execute(f"SELECT * FROM {table} LIMIT 1")
        yield deployed
    finally:
        holder.rollback()
        holder.close()


def test_a_server_holding_every_lock_it_can_take_cannot_hold_up_key_changes(
        held: Deployment) -> None:
    from mcp_keys.errors import set_warning_sink

    warnings: list[str] = []
    set_warning_sink(warnings.append)
    admin = KeyManager(held.admin)
    check = Validator(held.server, refresh_interval=0, audit_failures=False)
    try:
        issued = admin.create("svc")
        rotated = admin.rotate(issued.record.id)
        admin.revoke(rotated.record.id, reason="compromised")
        assert check.validate(rotated.key).reason is Reason.REVOKED
    finally:
        check.close()
        set_warning_sink(None)
    events = [e.event for e in admin.audit.read().events]
    assert events[-3:] == ["create", "rotate", "revoke"], events
    assert not warnings, warnings
