"""Keys bound to MCP servers (RFC 8707 resource indicators in API-key form): canonical
URLs, ``create --resource``, WRONG_RESOURCE, store versions and the PostgreSQL migration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mcp_keys import KeyManager
from mcp_keys.errors import UsageError
from mcp_keys.models import Reason
from mcp_keys.resources import canonical, check_resources
from mcp_keys.validator import Validator

from .conftest import Cli, one_error_line, state_of

SERVER = "https://mcp.example.com/mcp"
OTHER = "https://other.example.com/mcp"


@pytest.mark.parametrize(("given", "expected"), [
    ("https://mcp.example.com/mcp", SERVER),
    ("HTTPS://MCP.Example.COM/mcp/", SERVER),
    ("https://mcp.example.com:443/mcp", SERVER),
    ("http://127.0.0.1:8000/mcp", "http://127.0.0.1:8000/mcp"),
    ("http://localhost:80/", "http://localhost"),
    ("https://[::1]:8443/mcp", "https://[::1]:8443/mcp"),
    ("https://mcp.example.com/MCP", "https://mcp.example.com/MCP"),  # paths are case-sensitive
])
def test_canonical_form(given: str, expected: str) -> None:
    assert canonical(given) == expected, f"{given} -> {canonical(given)}"


@pytest.mark.parametrize("bad", [
    "", "  ", "mcp.example.com/mcp", "ftp://mcp.example.com", "https://", "/mcp",
    "https://mcp.example.com/mcp#frag", "https://mcp.example.com/mcp?x=1",
    "https://user:pw@mcp.example.com/mcp", "https://mcp.example.com:99999/mcp",
    "https://mcp.example.com/\x1b[31m", "https://mcp.example.com/a b", "https://" + "a" * 3000,
])
def test_bad_resources_are_usage_errors(bad: str) -> None:
    with pytest.raises(UsageError):
        canonical(bad)


def test_check_resources_dedupes_and_limits() -> None:
    assert check_resources([SERVER, SERVER + "/", OTHER]) == (SERVER, OTHER)
    with pytest.raises(UsageError):
        check_resources(SERVER)  # one string, not a list
    with pytest.raises(UsageError):
        check_resources([f"https://h{i}.example.com/mcp" for i in range(17)])


def test_bound_key_is_refused_elsewhere_on_every_backend(location: str) -> None:
    keys = KeyManager(location)
    bound = keys.create("bound", resources=[SERVER + "/"], scopes=["tools:call"])
    anywhere = keys.create("anywhere")
    validator = Validator(location, refresh_interval=0)
    assert bound.record.resources == (SERVER,), "resources are stored in canonical form"
    here = validator.validate(bound.key, ["tools:call"], resource=SERVER)
    assert here.valid and here.resources == (SERVER,), f"bound key at its server: {here.reason}"
    elsewhere = validator.validate(bound.key, resource=OTHER)
    assert elsewhere.reason is Reason.WRONG_RESOURCE, f"bound key elsewhere: {elsewhere.reason}"
    assert validator.validate(bound.key).valid, "a caller that names no resource is not bound"
    assert validator.validate(anywhere.key, resource=OTHER).valid, "unbound works anywhere"
    revoked = keys.revoke(bound.record.id)
    assert validator.validate(bound.key, resource=OTHER).reason is Reason.REVOKED, \
        "revocation is reported before the binding"
    failures = keys.audit.read(event="validation_failed").events
    assert any(e.key_id == revoked.id and e.detail.get("reason") == "WRONG_RESOURCE"
               for e in failures), "WRONG_RESOURCE is audited like other refusals"
    validator.close()


def test_rotation_keeps_the_binding(location: str) -> None:
    keys = KeyManager(location)
    old = keys.create("bound", resources=[SERVER, OTHER])
    new = keys.rotate(old.record.id)
    assert new.record.resources == (SERVER, OTHER), f"successor: {new.record.resources}"


def test_cli_create_resource_show_and_verify(any_run: Cli) -> None:
    created = any_run("create", "agent", "--resource", SERVER, "--resource", OTHER, "--json")
    assert created.exit_code == 0, created.stderr
    data = json.loads(created.stdout)
    assert data["record"]["resources"] == [SERVER, OTHER], data["record"]
    shown = any_run("show", data["record"]["id"])
    assert SERVER in shown.stdout and OTHER in shown.stdout, "show lists the resources"
    key = data["key"]
    ok = any_run("verify", "--resource", SERVER + "/", input=key)
    assert ok.exit_code == 0 and ok.stdout.startswith("VALID"), ok.stdout
    refused = any_run("verify", "--resource", "https://third.example.com/mcp", input=key)
    assert refused.exit_code == 1 and refused.stdout.startswith("WRONG_RESOURCE"), refused.stdout


@pytest.mark.parametrize("bad", ["mcp.example.com", "https://x.example.com/#a", "ftp://x"])
def test_cli_bad_resource_is_exit_2_and_changes_nothing(any_run: Cli, location: str,
                                                        bad: str) -> None:
    assert any_run("create", "first").exit_code == 0
    keys = KeyManager(location)
    before = state_of(keys)
    result = any_run("create", "agent", "--resource", bad)
    assert result.exit_code == 2, f"exit {result.exit_code}"
    assert "resource" in one_error_line(result.stderr)
    assert state_of(keys) == before, "a refused create changed the store or the audit trail"


def test_json_store_version_follows_binding(store_path: Path) -> None:
    keys = KeyManager(store_path)
    plain = keys.create("plain")
    assert json.loads(store_path.read_text())["version"] == 1, \
        "a store with no bound key stays version 1, readable by older releases"
    bound = keys.create("bound", resources=[SERVER])
    assert json.loads(store_path.read_text())["version"] == 2, \
        "a bound key makes the store version 2, so an older release refuses it"
    keys.delete(bound.record.id)
    assert json.loads(store_path.read_text())["version"] == 1
    assert keys.get(plain.record.id).resources == ()


def test_json_version_1_with_resources_is_refused(store_path: Path) -> None:
    keys = KeyManager(store_path)
    issued = keys.create("bound", resources=[SERVER])
    data = json.loads(store_path.read_text())
    data["version"] = 1
    store_path.write_text(json.dumps(data))
    validator = Validator(store_path, refresh_interval=0)
    result = validator.validate(issued.key)
    assert result.reason is Reason.STORE_ERROR, f"version 1 with a binding: {result.reason}"


V1_SCHEMA = """
CREATE TABLE schema_version (version integer NOT NULL);
CREATE TABLE api_keys (
    id text PRIMARY KEY CHECK (id ~ '^[a-z0-9]{12}$'),
    name text NOT NULL,
    description text NOT NULL DEFAULT '',
    digest text NOT NULL UNIQUE CHECK (digest ~ '^[0-9a-f]{64}$'),
    scopes text[] NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL,
    expires_at timestamptz,
    revoked_at timestamptz,
    revoke_reason text,
    rotated_from text,
    rotated_to text,
    expiry_recorded_at timestamptz
);
CREATE TABLE audit_events (seq bigint PRIMARY KEY, line text NOT NULL, hash text NOT NULL);
CREATE TABLE store_state (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    change_seq bigint NOT NULL DEFAULT 0,
    audit_seq bigint NOT NULL DEFAULT 0,
    audit_hash text NOT NULL DEFAULT repeat('0', 64)
);
INSERT INTO store_state DEFAULT VALUES;
INSERT INTO schema_version VALUES (1);
INSERT INTO api_keys (id, name, digest, scopes, created_at)
VALUES ('abcdefghijkl', 'legacy', repeat('a', 64), '{tools:call}', now());
"""


def test_postgres_schema_1_is_migrated_by_init(pg_url: str, tmp_path: Path) -> None:
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(V1_SCHEMA)
    run = Cli(tmp_path / "unused.json", [], pg_url)
    listed = run("list")
    assert listed.exit_code == 1 and "mcp-keys init" in one_error_line(listed.stderr), \
        "an old schema is refused with the command that migrates it"
    validator = Validator(pg_url, refresh_interval=0)
    assert validator.validate("mcpk_abcdefghijkl_x").reason is Reason.STORE_ERROR, \
        "a validator refuses every key on an old schema (fails closed)"
    validator.close()
    init = run("init")
    assert init.exit_code == 0 and "Migrated" in init.stdout, init.stdout + init.stderr
    legacy = KeyManager(pg_url).get("abcdefghijkl")
    assert legacy.name == "legacy" and legacy.scopes == ("tools:call",) and \
        legacy.resources == (), "records survive the migration, unbound"
    assert run("create", "bound", "--resource", SERVER).exit_code == 0
    again = run("init")
    assert again.exit_code == 0 and "Migrated" not in again.stdout, "migration is idempotent"
    events = [e.event for e in KeyManager(pg_url).audit.read().events]
    assert "migrate_schema" in events, events
