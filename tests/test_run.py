"""mcp-keys run: references resolved into a real child, exec semantics (exit code,
signals, stdio), --mask, reference files; nothing resolved leaks."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets as random_source
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from tests.conftest import assert_absent, mcp_keys_cmd, one_error_line, run_cli_process
from tests.secret_servers import TOKEN as VAULT_TOKEN
from tests.secret_servers import KvServer

SERVER = Path(__file__).resolve().parent / "data" / "stdio_server.py"


def fresh() -> str:
    return "rv_" + random_source.token_urlsafe(24)


def test_exit_code_and_environment() -> None:
    value = fresh()
    done = run_cli_process("run", "--env", "TOKEN=env:SOURCE", "--",
                           sys.executable, "-c",
                           "import os, sys; sys.exit(len(os.environ['TOKEN']))",
                           env={"SOURCE": value})
    assert done.returncode == len(value)
    assert_absent(value, done.stdout + done.stderr, "run's output")


def test_a_failed_reference_stops_before_the_command(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    done = run_cli_process("run", "--env", "A=env:MISSING_ONE", "--", "touch", str(marker))
    assert done.returncode == 1 and "env: MISSING_ONE is not set" in one_error_line(done.stderr)
    assert not marker.exists()
    bad = run_cli_process("run", "--env", "A=notareference", "--", "true")
    assert bad.returncode == 2 and "SCHEME" in one_error_line(bad.stderr)
    empty = run_cli_process("run", "--env", "A=env:HOME")
    assert empty.returncode == 2


WAIT_FOR_TERM = ("import signal, sys, time\n"
                 "signal.signal(signal.SIGTERM, lambda *a: (print('got TERM', flush=True), "
                 "sys.exit(3)))\nprint('ready', flush=True)\ntime.sleep(60)\n")


def test_sigterm_reaches_the_command_as_if_started_directly() -> None:
    for extra in ([], ["--mask"]):
        child = subprocess.Popen(
            mcp_keys_cmd("run", *extra, "--env", "A=env:HOME", "--", sys.executable, "-c",
                         WAIT_FOR_TERM),
            stdout=subprocess.PIPE, text=True, env=os.environ.copy())
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        child.send_signal(signal.SIGTERM)
        out, _ = child.communicate(timeout=30)
        assert child.returncode == 3 and out.strip() == "got TERM", (extra, child.returncode)


def test_mask_filters_the_values_out_of_both_streams() -> None:
    value = fresh()
    script = ("import os, sys\nv = os.environ['TOKEN']\nprint('config:', v, flush=True)\n"
              "sys.stderr.write('err ' + v[:10]); sys.stderr.write(v[10:] + '\\n')\n"
              "sys.exit(5)\n")
    done = run_cli_process("run", "--mask", "--env", "TOKEN=env:SOURCE", "--",
                           sys.executable, "-c", script, env={"SOURCE": value})
    assert done.returncode == 5
    assert done.stdout == "config: ****\n" and done.stderr == "err ****\n"


def test_reference_files(tmp_path: Path) -> None:
    value = fresh()
    refs = tmp_path / "mcp.refs"
    refs.write_text("# safe to commit\nTOKEN=env:SOURCE\n")
    done = run_cli_process("run", "--env-file-refs", str(refs), "--", sys.executable, "-c",
                           "import os; print(len(os.environ['TOKEN']))", env={"SOURCE": value})
    assert done.returncode == 0 and done.stdout.strip() == str(len(value))
    refs.write_text(f"TOKEN={value}\n")  # a value where a reference belongs
    refused = run_cli_process("run", "--env-file-refs", str(refs), "--", "true")
    assert refused.returncode == 2 and "not a secret reference" in refused.stderr
    assert_absent(value, refused.stderr, "the refusal")


async def _call(params: StdioServerParameters, value: str) -> tuple[int, bool]:
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        length = await session.call_tool("secret_length", {"name": "STRIPE_SECRET_KEY"})
        digest = hashlib.sha256(value.encode()).hexdigest()
        same = await session.call_tool("has_value", {"name": "STRIPE_SECRET_KEY",
                                                     "fingerprint": digest})
        return (int(length.content[0].text),  # type: ignore[union-attr]
                same.content[0].text == "true")  # type: ignore[union-attr]


def test_a_stdio_mcp_server_runs_through_it() -> None:
    value = fresh()
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "mcp_keys", "run", "--env", "STRIPE_SECRET_KEY=env:VAULTED", "--",
              sys.executable, str(SERVER)],
        env={"VAULTED": value, "PATH": os.environ["PATH"]})
    assert asyncio.run(_call(params, value)) == (len(value), True)


def test_a_fifo_as_the_reference_file_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "refs"
    os.mkfifo(fifo)
    done = run_cli_process("run", "--env-file-refs", str(fifo), "--", "true", timeout=20)
    assert done.returncode == 1 and "not a regular file" in one_error_line(done.stderr)


def test_the_credentials_of_a_source_stay_with_mcp_keys(vault: KvServer,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A vault: reference is read with VAULT_TOKEN; the command gets the value it asked for,
    not the token (which opens every secret its policy allows), unless it binds it."""
    value = fresh()
    vault.secrets["secret/stripe"] = {"api_key": value}
    monkeypatch.setenv("VAULT_SECRET_ID", "sid-" + fresh())
    show = ("import json, os; print(json.dumps({k: os.environ.get(k) for k in "
            "('TOKEN', 'VAULT_TOKEN', 'VAULT_SECRET_ID', 'VAULT_ADDR', 'HOME')}))")
    for extra, shown in (([], value), (["--mask"], "****")):
        done = run_cli_process("run", *extra, "--env", "TOKEN=vault:secret/stripe#api_key",
                               "--", sys.executable, "-c", show)
        assert done.returncode == 0, done.stderr[-500:]
        seen = json.loads(done.stdout)
        assert seen["TOKEN"] == shown and seen["HOME"] == os.environ["HOME"]
        assert seen["VAULT_TOKEN"] is None and seen["VAULT_SECRET_ID"] is None, \
            "the source's credentials reached the command"
        assert seen["VAULT_ADDR"] == vault.address, "VAULT_ADDR (no credential) is kept"
    bound = run_cli_process("run", "--env", "TOKEN=vault:secret/stripe#api_key", "--env",
                            "VAULT_TOKEN=env:VAULT_TOKEN", "--", sys.executable, "-c", show)
    assert json.loads(bound.stdout)["VAULT_TOKEN"] == VAULT_TOKEN, "bound explicitly: kept"
