"""A server role's defaults for its own sessions cannot change what validators read.

Any role may ``ALTER ROLE <itself> SET ...``, and every validator sharing the role starts
its sessions with those defaults. The roles come from docs/deployment.md's GRANTs, run as
written (``deployed``); the server role then sets its own defaults as an attacker would.
"""

from __future__ import annotations

import pytest

from mcp_keys import KeyManager, Reason, Validator
from tests.conftest import wait_for
from tests.test_pg_audit_forgery import Deployment, deployed  # noqa: F401 - the fixture

SHADOW = ("schema_version", "api_keys", "key_changes")


def test_a_search_path_the_server_role_sets_cannot_shadow_the_keys(
        deployed: Deployment) -> None:  # noqa: F811 - the fixture
    """The server role, given a schema of its own (a DBA's mistake), copies the tables
    there with the revoke undone and puts that schema first in its own search_path."""
    import psycopg

    admin = KeyManager(deployed.admin)
    issued = admin.create("svc")
    admin.revoke(issued.record.id, reason="compromised")
    with psycopg.connect(deployed.root, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA shadow AUTHORIZATION {deployed.server_role}")
    with psycopg.connect(deployed.server, autocommit=True) as conn:
        for table in SHADOW:
            conn.execute(f"CREATE TABLE shadow.{table} AS SELECT * FROM public.{table}")
        conn.execute("UPDATE shadow.api_keys SET revoked_at = NULL, revoke_reason = NULL")
        conn.execute(f"ALTER ROLE {deployed.server_role} SET search_path = shadow, public")
    check = Validator(deployed.server, refresh_interval=0, max_stale=0)
    try:
        assert check.validate(issued.key).reason is Reason.REVOKED, "the real table"
    finally:
        check.close()
        with psycopg.connect(deployed.root, autocommit=True) as conn:
            conn.execute("DROP SCHEMA shadow CASCADE")


@pytest.mark.parametrize("setting", [
    "search_path = pg_catalog",  # no store to be found: every validator refuses
    "default_transaction_read_only = on",  # no server can write its audit line
    "DateStyle = 'SQL, DMY'",  # times the driver cannot read
    "statement_timeout = 1",  # the audit connection times out
    "lock_timeout = 1",
    "client_encoding = 'SQL_ASCII'",  # bytes the driver cannot decode
    "idle_in_transaction_session_timeout = 1",
    "idle_session_timeout = 1",  # (PostgreSQL 14+) a session ended before its first query
    "default_transaction_isolation = serializable",
])
def test_a_default_the_server_role_sets_cannot_stop_validators_or_their_audit(
        deployed: Deployment, setting: str) -> None:  # noqa: F811 - the fixture
    import psycopg

    admin = KeyManager(deployed.admin)
    kept = admin.create("ключ-é ☃")
    doomed = admin.create("doomed")
    with psycopg.connect(deployed.server, autocommit=True) as conn:
        conn.execute(f"ALTER ROLE {deployed.server_role} SET {setting}")
    check = Validator(deployed.server, refresh_interval=0, max_stale=0)
    try:
        assert check.validate(kept.key).valid, setting
        admin.revoke(doomed.record.id)
        assert check.validate(doomed.key).reason is Reason.REVOKED, setting
        wait_for(lambda: any(e.event == "validation_failed" and e.key_id == doomed.record.id
                             for e in admin.audit.read().events), 10,
                 f"the refusal's audit line ({setting})")
    finally:
        check.close()


def test_a_schema_named_in_the_url_is_the_one_validators_read(pg_url: str) -> None:
    """What the docs advise instead of a role's search_path: ``options`` in the URL. The
    validator's own startup options come after it, never instead of it."""
    import uuid

    import psycopg

    schema = f"mcp_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    url = f"{pg_url}?options=-csearch_path%3D{schema}"
    admin = KeyManager(url)
    admin.init()
    issued = admin.create("svc")
    check = Validator(url, refresh_interval=0, max_stale=0)
    try:
        assert check.validate(issued.key).valid
        admin.revoke(issued.record.id)
        assert check.validate(issued.key).reason is Reason.REVOKED
    finally:
        check.close()
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
