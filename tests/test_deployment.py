"""docs/deployment.md's cron line and systemd unit, run as written."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from freezegun import freeze_time

from mcp_keys import KeyManager

DOC = (Path(__file__).resolve().parent.parent / "docs" / "deployment.md").read_text()
DOC_STORE = "/srv/mcp/.mcp-keys/keys.json"
DOC_BINARY = "/opt/mcp-keys/bin/mcp-keys"


def block(language: str, index: int = 0) -> str:
    return str(re.findall(rf"```{language}\n(.*?)```", DOC, flags=re.S)[index])


@dataclass
class Roles:
    """Connection URLs for the documented admin and server roles."""

    admin: str
    server: str


@contextmanager
def documented_roles(pg_url: str) -> Iterator[Roles]:
    """The GRANTs of "Many hosts" run as written on a fresh store, the role names made
    unique per run; the roles and what they own are dropped afterwards."""
    import uuid

    import psycopg

    from tests.conftest import postgres_server

    sql = block("sql")
    suffix = uuid.uuid4().hex[:8]
    for role in ("mcp_keys_owner", "mcp_keys_admin", "mcp_keys_server"):
        sql = sql.replace(role, f"{role}_{suffix}")
    KeyManager(pg_url).init()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql)
    base, _, database = pg_url.rpartition("/")
    host = base.split("@", 1)[1]
    try:
        yield Roles(f"postgresql://mcp_keys_admin_{suffix}@{host}/{database}",
                    f"postgresql://mcp_keys_server_{suffix}@{host}/{database}")
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY mcp_keys_owner_{suffix}, mcp_keys_admin_{suffix}, "
                         f"mcp_keys_server_{suffix}")
        with psycopg.connect(postgres_server(), autocommit=True) as conn:
            for role in ("owner", "admin", "server"):
                conn.execute(f"DROP ROLE IF EXISTS mcp_keys_{role}_{suffix}")


def as_written(env: dict[str, str], argv: list[str],
               store: Path) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` with ``env`` from the doc, swapping only the store path and install."""
    assert env["MCP_KEYS_STORE"] == DOC_STORE and argv[0] == DOC_BINARY
    real_env = {"PATH": "/usr/bin:/bin", **env, "MCP_KEYS_STORE": str(store)}
    return subprocess.run([sys.executable, "-m", "mcp_keys", *argv[1:]], env=real_env,
                          capture_output=True, text=True, check=False, timeout=60)


def cron_job() -> tuple[dict[str, str], list[str]]:
    line = block("crontab").strip()
    words = shlex.split(line)
    schedule, rest = words[:5], words[5:]
    assert schedule == ["17", "3", "*", "*", "*"]
    env = {}
    while "=" in rest[0]:
        name, _, value = rest.pop(0).partition("=")
        env[name] = value
    return env, rest


def systemd_job() -> tuple[dict[str, str], list[str]]:
    unit = block("ini", 0)
    env = dict(line.removeprefix("Environment=").split("=", 1)
               for line in unit.splitlines() if line.startswith("Environment="))
    (exec_start,) = [line.removeprefix("ExecStart=") for line in unit.splitlines()
                     if line.startswith("ExecStart=")]
    assert "Type=oneshot" in unit
    return env, shlex.split(exec_start)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "srv" / "keys.json"


def test_cron_line_is_quiet_unless_something_happened(store: Path) -> None:
    env, argv = cron_job()
    manager = KeyManager(store)
    manager.create("long-lived", expires_in=timedelta(days=365))
    quiet = as_written(env, argv, store)
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")

    with freeze_time(datetime.now(UTC) - timedelta(days=2)):
        short = manager.create("short", expires_in=timedelta(days=1)).record
    ran = as_written(env, argv, store)
    assert ran.returncode == 0 and short.id in ran.stdout
    again = as_written(env, argv, store)
    assert (again.returncode, again.stdout) == (0, "")
    actors = {e.actor.split(" ")[0] for e in manager.audit.read(event="expire").events}
    assert actors == {"cron-sweep"}


def test_systemd_unit_fails_on_warning(store: Path) -> None:
    env, argv = systemd_job()
    manager = KeyManager(store)
    manager.create("long-lived", expires_in=timedelta(days=365))
    assert as_written(env, argv, store).returncode == 0
    manager.create("soon", expires_in=timedelta(days=3))
    warned = as_written(env, argv, store)
    assert warned.returncode == 3 and "warning:" in warned.stdout
    assert env["MCP_KEYS_ACTOR"] == "systemd-sweep"


def test_timer_schedules_the_service() -> None:
    timer = block("ini", 1)
    assert "OnCalendar=*-*-* 03:17:00" in timer and "WantedBy=timers.target" in timer


def test_least_privilege_roles_as_written(pg_url: str) -> None:
    """The GRANTs of "Many hosts", run as written (role names made unique per run): the
    admin role runs the lifecycle, the server role validates and cannot change a key."""
    import psycopg

    from mcp_keys import Reason, Validator

    with documented_roles(pg_url) as roles:
        admin = KeyManager(roles.admin)
        issued = admin.create("svc")
        check = Validator(roles.server, refresh_interval=0)
        assert check.validate(issued.key).valid
        admin.revoke(issued.record.id)
        assert check.validate(issued.key).reason is Reason.REVOKED
        with psycopg.connect(roles.server, autocommit=True) as server, \
                pytest.raises(psycopg.errors.InsufficientPrivilege):
            server.execute("UPDATE api_keys SET revoked_at = NULL")
        with psycopg.connect(roles.admin, autocommit=True) as conn, \
                pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM audit_events")
