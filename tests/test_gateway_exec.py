"""Exec services: only the configured executable, only allowed arguments, a minimal
environment with the credential injected, a fresh HOME removed afterwards, a timeout that
kills the whole process group, and output scrubbed of the secret."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from mcp_keys.gateway.proxy import Caller, Denied, Gateway
from mcp_keys.gateway.services import ServiceConfig
from tests.conftest import Cli, FileKeys, assert_absent

SECRET = "ghp_exec_test_token_9f8e7d6c5b4a"
CALLER = Caller("abcdefghijkl", frozenset({"gateway:tool"}))
SCRIPT = r'''#!/usr/bin/env python3
import hashlib, json, os, subprocess, sys, time
args = sys.argv[1:]
with open(os.environ["MARKER"], "a") as marker:
    marker.write(json.dumps(args) + "\n")
if args[:1] == ["spawn"]:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    open(os.environ["MARKER"] + ".pid", "w").write(str(child.pid))
    time.sleep(60)
if args[:1] == ["flood"]:
    sys.stdout.write("y" * 500000)
token = os.environ.get("GH_TOKEN", "")
print(json.dumps({"args": args, "env": sorted(os.environ), "home": os.environ["HOME"],
                  "cwd": os.getcwd(), "echo": token,
                  "sha": hashlib.sha256(token.encode()).hexdigest()}))
print("token=" + token, file=sys.stderr)
'''


@pytest.fixture
def tool(tmp_path: Path, run: Cli, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    script = tmp_path / "fake-gh"
    script.write_text(SCRIPT)
    script.chmod(0o755)
    marker = tmp_path / "runs.log"
    monkeypatch.setenv("GH_SECRET", SECRET)
    monkeypatch.setenv("INHERITED_SECRET", "must-not-pass")
    assert run("init").exit_code == 0
    added = run("service", "add", "tool", "--exec", "--command", str(script),
                "--allow-args", "api repos/**", "--allow-args", "issue list*",
                "--allow-args", "spawn", "--allow-args", "flood",
                "--secret-env", "GH_TOKEN=env:GH_SECRET", "--secret-env",
                "MARKER=env:MARKER_PATH", "--timeout", "2s")
    assert added.exit_code == 0, added.stderr
    monkeypatch.setenv("MARKER_PATH", str(marker))
    return {"script": script, "marker": marker, "services": run.store.parent / "services.toml"}


def gateway_for(tool: dict[str, Any], manager: FileKeys) -> Gateway:
    return Gateway(ServiceConfig(tool["services"]), audit=manager.audit, max_body=100_000)


def run_exec(gateway: Gateway, args: Any) -> Any:
    return asyncio.run(gateway.run_exec(CALLER, "tool", args))


def test_allowed_args_run_with_a_minimal_environment(tool: dict[str, Any],
                                                     manager: FileKeys) -> None:
    result = run_exec(gateway_for(tool, manager), ["api", "repos/o/r/issues"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["args"] == ["api", "repos/o/r/issues"]
    assert report["env"] == ["GH_TOKEN", "HOME", "LANG", "MARKER", "PATH"], \
        "nothing is inherited: only PATH, HOME, LANG and the injected variables"
    import hashlib

    assert report["sha"] == hashlib.sha256(SECRET.encode()).hexdigest(), \
        "the command received the real credential"
    assert report["echo"] == "[redacted]" and "[redacted]" in result.stderr
    assert_absent(SECRET, json.dumps(result.to_dict()), "an exec result")
    assert report["cwd"] == report["home"] and not Path(report["home"]).exists(), \
        "the fresh HOME is the working directory and is removed afterwards"
    (line,) = manager.audit.read(event="gateway_exec").events
    assert line.detail["decision"] == "allowed" and line.detail["exit_code"] == 0 and \
        line.detail["args"] == "api repos/o/r/issues"
    assert_absent(SECRET, b"".join(raw for _, _, raw in manager.audit.lines()), "the audit log")


@pytest.mark.parametrize("args", [["api", "user"], ["issue", "list", "/etc/passwd"],
                                  ["repo", "delete", "o/r"], [], ["api\nrepos/x"],
                                  ["issue", "list\x00"], "issue list", [1, 2]])
def test_refused_args_never_run(tool: dict[str, Any], manager: FileKeys, args: Any) -> None:
    with pytest.raises(Denied) as info:
        run_exec(gateway_for(tool, manager), args)
    assert info.value.decision in ("denied", "bad_request"), info.value.decision
    assert not tool["marker"].exists(), "a refused call ran the command"


def test_timeout_kills_the_process_group(tool: dict[str, Any], manager: FileKeys) -> None:
    started = time.monotonic()
    result = run_exec(gateway_for(tool, manager), ["spawn"])
    assert result.timed_out and result.exit_code is None
    assert time.monotonic() - started < 30
    grandchild = int(Path(str(tool["marker"]) + ".pid").read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        with open(f"/proc/{grandchild}/stat") as stat:  # a reaped-later zombie is dead too
            if stat.read().split()[2] == "Z":
                break
        time.sleep(0.05)
    else:
        pytest.fail("the grandchild outlived the timeout", pytrace=False)


def test_output_is_capped(tool: dict[str, Any], manager: FileKeys) -> None:
    result = run_exec(gateway_for(tool, manager), ["flood"])
    assert result.truncated and len(result.stdout) <= 100_000


def test_exec_and_http_tools_do_not_mix(tool: dict[str, Any], manager: FileKeys) -> None:
    from mcp_keys.gateway.proxy import GatewayRequest

    gateway = gateway_for(tool, manager)
    with pytest.raises(Denied) as info:
        asyncio.run(gateway.execute(CALLER, GatewayRequest("tool", "GET", "/")))
    assert "use exec" in str(info.value)
    assert gateway.visible(CALLER)[0]["allowed"][0] == "exec api repos/**"
    services = tool["services"].read_text()
    assert str(tool["script"]) in services and "env:GH_SECRET" in services
    assert_absent(SECRET, services, "services.toml")


def test_command_must_exist(run: Cli, tmp_path: Path) -> None:
    assert run("init").exit_code == 0
    result = run("service", "add", "x", "--exec", "--command", "no-such-binary-xyz")
    assert result.exit_code == 2 and "not an executable" in result.stderr


def test_a_command_that_vanished_is_a_clear_error(tool: dict[str, Any],
                                                  manager: FileKeys) -> None:
    tool["script"].unlink()
    with pytest.raises(Denied) as info:
        run_exec(gateway_for(tool, manager), ["api", "repos/x"])
    assert info.value.decision == "upstream_error" and "could not be started" in str(info.value)
    (line,) = manager.audit.read(event="gateway_exec").events
    assert line.detail["decision"] == "upstream_error"
