"""Secret references resolved from real sources: the environment, .env and secret files,
a real keyring backend, AWS Secrets Manager on moto's server, Vault through hvac (a KV v2
server on loopback; the real dev server when ``vault`` is on PATH); the cache's TTL,
stale-on-error, backoff and refresh on a real upstream's 401."""

from __future__ import annotations

import json
import os
import pickle
import secrets as random_source
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from freezegun import freeze_time

from mcp_keys import McpKeysError, UsageError
from mcp_keys.errors import SecretError
from mcp_keys.secrets import (
    SecretCache,
    fingerprint,
    parse_reference,
    resolve,
    with_refresh_on_401,
)
from tests.conftest import Cli, assert_absent
from tests.secret_servers import TOKEN, KvServer, Upstream


def fresh() -> str:
    """A secret made for this test (nothing real-looking is committed)."""
    return "sv_" + random_source.token_urlsafe(24)


@pytest.fixture
def keychain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """keyrings.alt's file backend, in this process and in the children it starts."""
    import keyring
    from keyrings.alt.file import PlaintextKeyring

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyrings.alt.file.PlaintextKeyring")
    previous = keyring.get_keyring()
    keyring.set_keyring(PlaintextKeyring())
    yield
    keyring.set_keyring(previous)


@pytest.fixture(scope="module")
def moto_server() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    for name, value in {"AWS_ENDPOINT_URL": moto_server, "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"
                        }.items():
        monkeypatch.setenv(name, value)
    return moto_server


def test_env_dotenv_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    values = [fresh() for _ in range(3)]
    monkeypatch.setenv("STRIPE_KEY", values[0])
    env_file = tmp_path / ".env"
    env_file.write_text(f"A=1\nSTRIPE_KEY='{values[1]}'\n")
    secret_file = tmp_path / "stripe"
    secret_file.write_text(values[2] + "\n")
    secret_file.chmod(0o600)
    assert resolve("env:STRIPE_KEY").reveal() == values[0]
    assert resolve(f"dotenv:{env_file}#STRIPE_KEY").reveal() == values[1]
    assert resolve(f"file:{secret_file}").reveal() == values[2]  # trailing newline stripped
    secret_file.chmod(0o640)
    with pytest.raises(SecretError) as info:
        resolve(f"file:{secret_file}")
    assert "readable by group or others" in str(info.value)


def test_a_secret_never_shows_itself() -> None:
    value = fresh()
    os.environ["MCP_KEYS_TEST_SECRET"] = value
    try:
        secret = resolve("env:MCP_KEYS_TEST_SECRET")
    finally:
        del os.environ["MCP_KEYS_TEST_SECRET"]
    for text in (repr(secret), str(secret), f"{secret}", f"{secret!r}", "{}".format(secret)):  # noqa: UP032
        assert_absent(value, text, "a Secret's text forms")
    with pytest.raises(TypeError):
        pickle.dumps(secret)
    with pytest.raises(TypeError):
        json.dumps(secret)
    import logging

    record = logging.LogRecord("x", logging.INFO, __file__, 1, "got %s", (secret,), None)
    assert_absent(value, record.getMessage(), "a log line")


@pytest.mark.parametrize(("ref", "words"), [
    ("env:NOT_SET_ANYWHERE", "env: NOT_SET_ANYWHERE is not set"),
    ("dotenv:/no/such/.env#X", "does not exist"),
    ("file:/no/such/secret", "does not exist"),
])
def test_errors_name_the_reference_and_the_source(ref: str, words: str) -> None:
    with pytest.raises(SecretError) as info:
        resolve(ref)
    assert words in str(info.value)


@pytest.mark.parametrize("ref", ["", "stripe", "sk_live_abcdefghijklmnop", "http://x",
                                 "env:", "env:9BAD", "dotenv:.env", "keyring:nouser",
                                 "vault:secret#f", "vault:secret/x", "aws-sm:", "env:A\nB"])
def test_malformed_references_are_usage_errors_that_never_echo(ref: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_reference(ref)
    if ":" not in ref[:8] and len(ref) > 4:  # not reference-shaped: maybe a pasted secret
        assert ref not in str(info.value)


def test_keyring(keychain: None) -> None:
    import keyring

    value = fresh()
    keyring.set_password("mcp-keys", "stripe", value)
    assert resolve("keyring:mcp-keys/stripe").reveal() == value
    with pytest.raises(SecretError) as info:
        resolve("keyring:mcp-keys/missing")
    assert "no entry" in str(info.value)


def test_secret_set_reads_stdin_into_the_keychain(keychain: None, run: Cli) -> None:
    value = fresh()
    stored = run("secret", "set", "keyring:mcp-keys/github", input=value + "\n")
    assert stored.exit_code == 0, stored.stderr
    assert resolve("keyring:mcp-keys/github").reveal() == value
    checked = run("secret", "check", "keyring:mcp-keys/github")
    assert checked.exit_code == 0 and f"{len(value)} characters" in checked.stdout
    assert run("secret", "set", "env:X", input="v\n").exit_code == 2
    for output in run.outputs:
        assert_absent(value, output, "secret set/check output")


def test_aws_secrets_manager_on_moto(aws: str) -> None:
    import boto3

    value, plain = fresh(), fresh()
    client = boto3.client("secretsmanager")
    client.create_secret(Name="prod/stripe", SecretString=json.dumps({"api_key": value}))
    client.create_secret(Name="prod/plain", SecretString=plain)
    assert resolve("aws-sm:prod/stripe#api_key").reveal() == value
    assert resolve("aws-sm:prod/plain").reveal() == plain
    with pytest.raises(SecretError) as info:
        resolve("aws-sm:prod/missing")
    assert "aws-sm: prod/missing: ResourceNotFoundException" in str(info.value)
    with pytest.raises(SecretError) as info:
        resolve("aws-sm:prod/stripe#nope")
    assert "no text field 'nope'" in str(info.value)


def test_vault_kv_v2_through_hvac(vault: KvServer, monkeypatch: pytest.MonkeyPatch) -> None:
    value = fresh()
    vault.secrets["secret/stripe"] = {"api_key": value}
    assert resolve("vault:secret/stripe#api_key").reveal() == value
    assert resolve("vault:secret/data/stripe#api_key").reveal() == value  # /data/ optional
    assert ("GET", "/v1/secret/data/stripe", None) in vault.requests
    with pytest.raises(SecretError) as info:
        resolve("vault:secret/missing#api_key")
    assert str(info.value) == "vault: secret/data/missing not found"
    monkeypatch.setenv("VAULT_TOKEN", "wrong")
    with pytest.raises(SecretError) as info:
        resolve("vault:secret/stripe#api_key")
    assert "permission denied" in str(info.value)


def test_vault_approle_and_namespace(vault: KvServer, monkeypatch: pytest.MonkeyPatch) -> None:
    value = fresh()
    vault.secrets["kv/app"] = {"token": value}
    vault.namespace = "team-a"
    monkeypatch.delenv("VAULT_TOKEN")
    monkeypatch.setenv("VAULT_ROLE_ID", vault.approle[0])
    monkeypatch.setenv("VAULT_SECRET_ID", vault.approle[1])
    monkeypatch.setenv("VAULT_NAMESPACE", "team-a")
    assert resolve("vault:kv/app#token").reveal() == value
    assert ("POST", "/v1/auth/approle/login", None) in vault.requests


@pytest.mark.skipif(shutil.which("vault") is None, reason="no vault binary on PATH (the KV v2 "
                    "test server above covers the hvac path)")
def test_real_vault_dev_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(["vault", "server", "-dev", f"-dev-root-token-id={TOKEN}",
                               f"-dev-listen-address=127.0.0.1:{port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        monkeypatch.setenv("VAULT_ADDR", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("VAULT_TOKEN", TOKEN)
        import hvac

        client = hvac.Client(url=f"http://127.0.0.1:{port}", token=TOKEN)
        deadline = time.monotonic() + 20
        while not (_up(port) and client.sys.is_initialized()):
            assert time.monotonic() < deadline, "vault dev server did not start"
            time.sleep(0.1)
        value = fresh()
        client.secrets.kv.v2.create_or_update_secret(path="stripe", secret={"api_key": value})
        assert resolve("vault:secret/stripe#api_key").reveal() == value
    finally:
        server.terminate()
        server.wait(10)


def _up(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def test_missing_extras_say_which_to_install() -> None:
    code = ("import sys; sys.modules['hvac'] = None; sys.modules['boto3'] = None; "
            "sys.modules['keyring'] = None\n"
            "from mcp_keys.secrets import resolve\n"
            "for ref in ('vault:a/b#c', 'aws-sm:x', 'keyring:a/b'):\n"
            "    try:\n        resolve(ref)\n    except Exception as exc:\n        print(exc)\n")
    import sys

    said = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.splitlines()
    hint = "pip install -e '.[{0}]' in a clone, or pip install 'mcp-keys[{0}]'"
    assert said == [f"vault: references need hvac: {hint.format('vault')}",
                    f"aws-sm: references need boto3: {hint.format('aws')}",
                    f"keyring: references need keyring: {hint.format('keyring')}"]


class Flaky:
    """A resolver whose source can be taken down and whose value can change."""

    def __init__(self) -> None:
        self.value = fresh()
        self.down = False
        self.calls = 0

    def __call__(self, ref: str) -> object:
        from mcp_keys.secrets import Secret

        self.calls += 1
        if self.down:
            raise SecretError("vault: secret/data/x: ConnectionError")
        return Secret(self.value, ref)


def test_cache_ttl_stale_on_error_and_backoff(monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture) -> None:
    source = Flaky()
    sleeps: list[float] = []
    monkeypatch.setattr("mcp_keys.secrets.cache.time.sleep", sleeps.append)
    with freeze_time("2026-12-01 12:00:00") as frozen:
        cache = SecretCache(ttl=300, max_stale=3600, resolver=source)  # type: ignore[arg-type]
        first = cache.get("vault:x")
        assert cache.get("vault:x") is first and source.calls == 1  # within the TTL
        frozen.tick(301)
        source.down = True
        with caplog.at_level("WARNING", logger="mcp_keys"):
            assert cache.get("vault:x").reveal() == first.reveal()  # stale, with a warning
            cache.get("vault:x")
        assert sum("serving the cached value" in r.getMessage() for r in caplog.records) == 1
        # Three tries per refresh: two pauses, exponential (0.1 s, 0.2 s) with 50% jitter.
        assert len(sleeps) == 4
        assert 0.05 <= sleeps[0] <= 0.15 and 0.1 <= sleeps[1] <= 0.3
        frozen.tick(3600)
        with pytest.raises(SecretError):
            cache.get("vault:x")  # past max_stale
        source.down = False
        source.value = fresh()
        assert cache.get("vault:x").reveal() == source.value


def test_refresh_on_401_against_a_real_upstream(tmp_path: Path) -> None:
    import urllib.error
    import urllib.request

    secret_file = tmp_path / "token"
    secret_file.write_text(fresh())
    secret_file.chmod(0o600)
    ref = f"file:{secret_file}"
    for upstream in Upstream(accepted=secret_file.read_text()).serve():
        cache = SecretCache(ttl=3600)

        class Response:
            def __init__(self, status: int) -> None:
                self.status_code = status

        def call(secret: object, address: str = upstream.address) -> Response:
            request = urllib.request.Request(address, headers={
                "Authorization": f"Bearer {secret.reveal()}"})  # type: ignore[attr-defined]
            try:
                with urllib.request.urlopen(request, timeout=5) as answer:
                    return Response(answer.status)
            except urllib.error.HTTPError as exc:
                return Response(exc.code)

        assert with_refresh_on_401(cache, ref, call).status_code == 200
        rotated = fresh()  # rotated at the source: the old one stops working
        secret_file.write_text(rotated)
        upstream.accepted = rotated
        assert with_refresh_on_401(cache, ref, call).status_code == 200
        assert upstream.calls == ["ok", "401", "ok"]


def test_secret_check_prints_no_value(run: Cli, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    value = fresh()
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    result = run("secret", "check", "env:CHECKED", "env:ABSENT", env={"CHECKED": value})
    assert result.exit_code == 1
    ok, fail = result.stdout.splitlines()
    assert ok.startswith("OK env:CHECKED: 24") or ok.startswith(f"OK env:CHECKED: {len(value)}")
    assert fail == "FAIL env:ABSENT: env: ABSENT is not set"
    assert_absent(value, result.stdout + result.stderr, "secret check output")
    salt = tmp_path / "config" / "mcp-keys" / "fingerprint-salt"
    assert salt.stat().st_mode & 0o777 == 0o600
    from mcp_keys.secrets import Secret

    assert fingerprint(Secret(value, "x")) in ok


def test_resolve_never_leaks_through_errors(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    value = fresh()
    env_file.write_text(f"OTHER={value}\n")
    with pytest.raises(McpKeysError) as info:
        resolve(f"dotenv:{env_file}#MISSING")
    assert_absent(value, str(info.value), "an error message")
