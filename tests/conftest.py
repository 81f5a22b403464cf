"""Shared fixtures: a store in tmp_path, a CLI runner bound to it, and leak checks that
never print the secret they look for."""

from __future__ import annotations

import os
import re
import secrets as random_source
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from mcp_keys import KeyManager
from mcp_keys.audit import AuditLog
from mcp_keys.cli import cli
from mcp_keys.stores.jsonfile import JsonStore
from tests.secret_servers import TOKEN as VAULT_TOKEN
from tests.secret_servers import KvServer

BACKENDS = ["json", "postgresql"]
PG_URL_VAR = "MCP_KEYS_TEST_POSTGRES_URL"


class FileKeys(KeyManager):
    """A KeyManager on a JSON file store, typed so tests can reach the files."""

    store: JsonStore

    @property
    def audit(self) -> AuditLog:
        trail = super().audit
        assert isinstance(trail, AuditLog)
        return trail


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs in its own directory with no store or key from the environment."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("mcp_keys.errors._warning_sink", None)  # the CLI installs one
    for var in ("MCP_KEYS_STORE", "MCP_API_KEY", "API_KEY_REQUIRED", "MCP_KEYS_ACTOR",
                "MCP_KEYS_LOCK_TIMEOUT", "NO_COLOR", "MCP_KEYS_ENV_FALLBACK",
                "MCP_KEYS_AUDIT_MAX_BYTES", "MCP_KEYS_AUDIT_KEEP", "MCP_KEYS_MAX_STALE"):
        monkeypatch.delenv(var, raising=False)
    # The gateway side's per-user directory, outside the test's cwd; and most tests keep
    # their store in tmp_path, which is the cwd: tests/test_gateway_workspace.py unsets this.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path.parent / f"{tmp_path.name}-xdg"))
    monkeypatch.setenv("MCP_KEYS_ALLOW_WORKSPACE_POLICY", "1")
    monkeypatch.delenv("MCP_KEYS_SERVICES", raising=False)
    # backups (scan --fix, client-config --write) go outside the test's project folder
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path.parent / f"{tmp_path.name}-state"))


@pytest.fixture(autouse=True)
def _close_validators() -> Iterator[None]:
    """Validators of a test's PostgreSQL database stop watching it when the test ends."""
    import mcp_keys.validator as validator_module

    before = set(map(id, validator_module._live))
    yield
    for validator in list(validator_module._live):
        if id(validator) not in before and validator._watcher is not None:
            validator.close()


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "keys" / "keys.json"


@pytest.fixture
def manager(store_path: Path) -> FileKeys:
    return FileKeys(store_path)


@pytest.fixture
def file_manager(store_path: Path) -> FileKeys:
    """The JSON store, for a test about files in a module whose ``manager`` is any."""
    return FileKeys(store_path)


def postgres_server() -> str:
    """The throwaway server's URL (``scripts/pg-throwaway.sh``), or skip; with
    ``MCP_KEYS_REQUIRE_POSTGRES=1`` (CI) a missing server fails instead."""
    url = os.environ.get(PG_URL_VAR, "")
    if not url:
        if os.environ.get("MCP_KEYS_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"{PG_URL_VAR} is not set but MCP_KEYS_REQUIRE_POSTGRES=1")
        pytest.skip(f"no PostgreSQL: set {PG_URL_VAR} (source scripts/pg-throwaway.sh; "
                    "pg_throwaway_start)")
    return url


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty database on the throwaway server, dropped afterwards."""
    import uuid

    import psycopg

    server = postgres_server()
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = server.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=BACKENDS)
def location(request: pytest.FixtureRequest, store_path: Path) -> str:
    """The store location for a test that runs on every backend."""
    if request.param == "json":
        return str(store_path)
    url: str = request.getfixturevalue("pg_url")
    return url


def state_of(manager: KeyManager) -> tuple[object, ...]:
    """Everything a failed operation must leave as it was: the records and the audit
    trail, whichever backend holds them."""
    records = sorted((key_id, repr(sorted(key.to_store().items())))
                     for key_id, key in manager.store.read().items())
    return tuple(records), tuple(line for _, _, line in manager.audit.lines())


@dataclass
class Cli:
    """Runs ``mcp-keys --store <store> ...`` through CliRunner and keeps every output."""

    store: Path
    outputs: list[str]
    location: str | None = None  # a URL instead of ``store``

    def __call__(self, *args: str, input: str | None = None,
                 env: dict[str, str] | None = None) -> Result:
        result = CliRunner().invoke(cli, ["--store", self.location or str(self.store), *args],
                                    input=input, env=env, catch_exceptions=True)
        self.outputs.extend([result.stdout, result.stderr])
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            pytest.fail(f"mcp-keys {args[0] if args else ''} raised "
                        f"{type(result.exception).__name__}", pytrace=False)
        return result


@pytest.fixture
def run(store_path: Path) -> Cli:
    return Cli(store_path, [])


@pytest.fixture
def any_run(location: str, store_path: Path) -> Cli:
    """The CLI on each backend in turn."""
    return Cli(store_path, [], None if location == str(store_path) else location)


def assert_absent(secret: str, haystack: str | bytes, where: str) -> None:
    """Fail (without echoing the secret) if ``secret`` occurs in ``haystack``."""
    needle: str | bytes = secret.encode() if isinstance(haystack, bytes) else secret
    if needle in haystack:  # type: ignore[operator]
        pytest.fail(f"a secret leaked into {where}", pytrace=False)


def redact(text: str, *secrets: str) -> str:
    """``text`` with each secret replaced by a placeholder, safe to compare and print."""
    for index, secret in enumerate(secrets):
        text = text.replace(secret, f"<KEY{index}>")
    return text


def files_under(root: Path) -> dict[str, bytes]:
    """Every regular file below ``root`` with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.is_symlink()}


def snapshot(paths: Iterable[Path]) -> dict[str, bytes | None]:
    """The bytes of each path (``None`` where absent), for byte-identity checks."""
    result: dict[str, bytes | None] = {}
    for path in paths:
        result[str(path)] = path.read_bytes() if path.is_file() else None
    return result


def one_error_line(stderr: str) -> str:
    """Assert stderr is exactly one ``Error:`` line with no traceback, and return it."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}: {lines[:5]}"
    assert lines[0].startswith("Error: "), lines[0]
    assert "Traceback" not in stderr
    return lines[0]


def mcp_keys_cmd(*args: str) -> list[str]:
    """The command line that runs the real CLI in a subprocess."""
    return [sys.executable, "-m", "mcp_keys", *args]


def run_cli_process(*args: str, env: dict[str, str] | None = None, input: str | None = None,
                    timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a subprocess with this environment plus ``env``."""
    return subprocess.run(mcp_keys_cmd(*args), env={**os.environ, **(env or {})}, input=input,
                          text=True, capture_output=True, timeout=timeout, check=False)



def in_child(action: Callable[[], str], *, uid: int | None = None, timeout: float = 20) -> str:
    """Fork, optionally drop to ``uid`` (needs root: skips otherwise), run ``action`` and
    return what it said, or what it raised. A child that hangs past ``timeout`` is killed
    and reported as ``"timeout"``, so a deadlock fails the test instead of hanging it."""
    import signal
    import time

    if uid is not None and os.geteuid() != 0:
        pytest.skip("dropping to another user needs root (CI runs as root)")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports over the pipe
        message = "no answer"
        try:
            os.close(read)
            if uid is not None:
                os.setgid(uid)
                os.setuid(uid)
            message = action()
        except BaseException as exc:
            message = f"{type(exc).__name__}: {exc}"
        finally:
            os.write(write, message.encode())
            os._exit(0)
    os.close(write)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.01)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(read)
        return "timeout"
    chunks = []
    while chunk := os.read(read, 4096):
        chunks.append(chunk)
    os.close(read)
    return b"".join(chunks).decode()


def shared_dir() -> Path:
    """A fresh directory under /tmp that other users can traverse (pytest's tmp_path is
    0700 root), for tests that drop privileges. The caller removes it."""
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="mcp-keys-shared-"))
    base.chmod(0o755)
    return base


@pytest.fixture
def vault(monkeypatch: pytest.MonkeyPatch) -> Iterator[KvServer]:
    """A KV v2 server on loopback that follows Vault's wire format, in VAULT_ADDR."""
    for kv in KvServer().serve():
        monkeypatch.setenv("VAULT_ADDR", kv.address)
        monkeypatch.setenv("VAULT_TOKEN", VAULT_TOKEN)
        yield kv


def free_port() -> int:
    """A loopback port nothing listens on (yet)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def accepting(port: int) -> bool:
    """Whether something accepts connections on a loopback port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_for(condition: Callable[[], bool], deadline: float, what: str) -> None:
    """Poll ``condition`` until it holds, or fail after ``deadline`` seconds."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}", pytrace=False)


B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def rand(n: int, alphabet: str = B62) -> str:
    """A random value as a key generator makes one: drawn again in the rare case that it
    reads as a documentation stand-in (a run such as ``xxxx``) or, from a mixed alphabet,
    lacks a digit or a case (the scanner's heuristics rightly pass over such values)."""
    while True:
        value = "".join(random_source.choice(alphabet) for _ in range(n))
        if re.search(r"(?i)(.)\1{3}|xxxx", value):
            continue
        classes = [c for c in (str.isdigit, str.islower, str.isupper)
                   if any(c(ch) for ch in alphabet)]
        if n < 8 or all(any(c(ch) for ch in value) for c in classes):
            return value


def require_proxy_stack() -> None:
    """Skip a ``run --proxy`` test module without cryptography or mitmproxy 12 (Python
    3.12+); where ``MCP_KEYS_REQUIRE_STACKS`` names ``proxy`` (CI), a missing mitmproxy
    is not skipped but fails."""
    pytest.importorskip("cryptography")
    if "proxy" not in os.environ.get("MCP_KEYS_REQUIRE_STACKS", "").split(","):
        pytest.importorskip("mitmproxy", reason="run --proxy needs mitmproxy 12 (Python 3.12+)")
