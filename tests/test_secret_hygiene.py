"""One sweep over everything mcp-keys prints, logs, stores and reprs: no plaintext key and
no digest anywhere but create/rotate output, the asked-for .env, and (digests) the store."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

from mcp_keys import KeyManager, McpKeysError, Validator, tokens
from mcp_keys.integrations.mcp import McpKeysTokenVerifier
from tests.conftest import Cli, assert_absent, files_under


def test_no_secret_or_digest_leaks_anywhere(run: Cli, tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="mcp_keys")
    secrets: list[str] = []
    exempt: list[str] = []

    def issue(*args: str) -> str:
        result = run(*args)
        assert result.exit_code == 0, result.stderr
        exempt.extend([result.stdout, result.stderr])
        key = json.loads(result.stdout)["key"] if "--json" in args else result.stdout.strip()
        secrets.append(key)
        return key

    run("init", "--env-file", ".env")
    first = issue("create", "alpha", "--scope", "tools:call", "--env-file", ".env")
    second = issue("create", "beta", "--json", "--expires-in", "1h")
    first_id, second_id = first[5:17], second[5:17]
    third = issue("rotate", first_id, "--grace", "1h", "--env-file", ".env")
    issue("rotate", third[5:17], "--json")

    everything = [
        ("list",), ("list", "--json"), ("list", "--status", "revoked", "--json"),
        ("show", first_id), ("show", first_id, "--json"), ("show", second_id[:4]),
        ("verify", first), ("verify", second, "--json"), ("verify", "--scope", "x", first),
        ("verify", third), ("revoke", second_id, "--reason", "leak drill"),
        ("verify", second), ("sweep",), ("sweep", "--json", "--warn-within", "30d"),
        ("sweep", "--dry-run", "--purge-after", "1s"), ("audit",), ("audit", "--json"),
        ("doctor",), ("doctor", "--json"), ("require", "on", "--env-file", ".env"),
        ("rotate", second_id), ("rotate", first_id), ("show", first),
        ("create", "bad\nname"), ("delete", second_id, "--yes"), ("show", second_id),
        ("verify", first[:-1] + "Q"),
        ("service", "add", "api", "--base-url", "https://api.example.com", "--auth", "bearer",
         "--secret", "env:HYGIENE_UPSTREAM", "--allow", "GET /**", "--env", "API_KEY"),
        ("service", "list", "--json"), ("service", "show", "api", "--json"),
        ("service", "add", "api", "--base-url", "https://x.example", "--auth", "bearer",
         "--secret", first), ("ca", "rotate"), ("ca", "show", "--json"),
        ("client-config", "cursor", "--url", "https://mcp.example.com/mcp", "--json"),
        ("audit", "--event", "gateway_call", "--json"), ("doctor",),
        ("verify", "--resource", "https://mcp.example.com/mcp", first),
    ]
    for args in everything:
        run(*args)
    outputs = [o for o in run.outputs if o not in exempt]

    manager = KeyManager(run.store)
    validator = Validator(run.store, refresh_interval=0)
    results = [validator.validate(k) for k in secrets] + [validator.validate(tokens.generate())]
    records = manager.list()
    report = manager.sweep(dry_run=True)
    verifier = McpKeysTokenVerifier(validator=validator)
    access = asyncio.run(verifier.verify_token(secrets[-1]))
    errors: list[str] = []
    for bad in (lambda: manager.get(secrets[0]), lambda: manager.rotate(first_id),
                lambda: manager.create(secrets[0] + "\n")):
        try:
            bad()
        except McpKeysError as exc:
            errors.extend([str(exc), repr(exc)])
    issued = manager.create("python-api")
    secrets.append(issued.key)
    rotated = manager.rotate(issued.record.id)
    secrets.append(rotated.key)
    objects = [manager, validator, verifier, access, report, *records, *results, issued, rotated,
               *manager.audit.read().events, manager.store, manager.audit]
    outputs += [repr(o) for o in objects] + [str(o) for o in objects] + errors
    outputs += [json.dumps(r.to_dict()) for r in results] + [json.dumps(report.to_dict())]
    outputs += [r.getMessage() for r in caplog.records]

    digests = [tokens.digest(k) for k in secrets]
    for index, text in enumerate(outputs):
        for secret in secrets + digests:
            assert_absent(secret, text, f"output #{index}")
    for name, data in files_under(tmp_path).items():
        if name == ".env":
            continue
        for secret in secrets:
            assert_absent(secret, data, name)
        if not name.endswith("keys.json"):
            for digest in digests:
                assert_absent(digest, data, name)
    env_text = (tmp_path / ".env").read_text()
    assert env_text.count("MCP_API_KEY=") == 1 and secrets[2] in env_text


def test_no_upstream_secret_leaks_from_secret_run_or_scan(
        run: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Every command that touches upstream secrets, on success and on failure: the values
    appear in no output, log line, exception message, repr or file but the source."""
    import secrets as random_source
    import subprocess
    import sys

    from mcp_keys.errors import SecretError
    from mcp_keys.scan import scan
    from mcp_keys.secrets import SecretCache, resolve
    from tests.conftest import run_cli_process

    caplog.set_level(logging.DEBUG, logger="mcp_keys")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "keyring"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyrings.alt.file.PlaintextKeyring")
    values = ["sk_live_" + random_source.token_hex(16) for _ in range(3)]
    monkeypatch.setenv("UPSTREAM", values[0])
    dotenv = tmp_path / "up.env"
    dotenv.write_text(f"B={values[1]}\n")
    config = tmp_path / ".cursor" / "mcp.json"
    config.parent.mkdir()
    config.write_text(json.dumps({"mcpServers": {"s": {"command": "true",
                                                       "env": {"K": values[2]}}}}))
    outputs = []
    commands: list[tuple[str, ...]] = [
                 ("secret", "check", "env:UPSTREAM", f"dotenv:{dotenv}#B", "env:NONE"),
                 ("secret", "set", "keyring:mcp-keys/x"), ("scan", str(config)),
                 ("scan", str(config), "--json"), ("scan", str(config), "--sarif"),
                 ("secret", "check", f"dotenv:{dotenv}#MISSING", values[0]),
                 ("run", "--env", f"X={values[0]}", "--", "true"),
                 ("scan", str(config), "--fix", "--yes",
                  "--allow-plaintext-keyring")]
    for args in commands:
        result = run(*args, input=values[1] + "\n" if "set" in args else None)
        outputs += [result.stdout, result.stderr]
    for args in (("run", "--env", "X=env:UPSTREAM", "--", "false"),
                 ("run", "--mask", "--env", "X=env:UPSTREAM", "--", sys.executable, "-c",
                  "import os; print(os.environ['X'])"),
                 ("run", "--env", "X=env:UPSTREAM", "--", "/no/such/binary")):
        done = run_cli_process(*args)
        outputs += [done.stdout, done.stderr]
    secret = resolve("env:UPSTREAM")
    cache = SecretCache()
    cache.get("env:UPSTREAM")
    outputs += [repr(secret), str(secret), repr(cache), repr(scan([config]))]
    try:
        resolve(f"dotenv:{dotenv}#NOPE")
    except SecretError as exc:
        outputs.append(str(exc))
    outputs += [record.getMessage() for record in caplog.records]
    outputs += [path.read_text(errors="replace") for path in tmp_path.rglob("*")
                if path.is_file() and path.suffix != ".bak" and path != dotenv
                and "keyring" not in path.parts]
    for value in values:
        for text in outputs:
            assert_absent(value, text, f"output #{outputs.index(text)} (of {len(outputs)})")
    assert subprocess.run(["true"]).returncode == 0
