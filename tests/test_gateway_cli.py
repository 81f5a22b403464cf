"""``mcp-keys service ...`` and ``audit --service``: clear errors that change nothing,
references only on disk and in every output, and ``service test`` against a real
upstream."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Cli, assert_absent, one_error_line
from tests.gateway_upstream import SECRET, Upstream, running_upstream


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with running_upstream() as server:
        yield server


def services_file(run: Cli) -> Path:
    return run.store.parent / "services.toml"


def add(run: Cli, upstream: Upstream, *extra: str) -> None:
    result = run("service", "add", "api", "--base-url", f"{upstream.url}/bearer", "--auth",
                 "bearer", "--secret", "env:GW_SECRET", *extra)
    assert result.exit_code == 0, result.stderr


def test_add_list_show_edit_remove(run: Cli, upstream: Upstream) -> None:
    assert run("init").exit_code == 0
    result = run("service", "add", "api", "--base-url", f"{upstream.url}/bearer", "--auth",
                 "bearer", "--secret", "env:GW_SECRET")
    assert result.exit_code == 0 and "denies everything" in result.stderr and \
        "service edit api --allow" in result.stderr, "a service with no allow rule says so"
    path = services_file(run)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert run("service", "edit", "api", "--allow", "GET /v1/**", "--allow", "POST /v1/refunds",
               "--scope", "billing:write", "--rate-limit", "10/min").exit_code == 0
    record = json.loads(run("service", "show", "api", "--json").stdout)
    assert record["allow"] == [{"rule": "GET /v1/**", "scope": "billing:write"},
                               {"rule": "POST /v1/refunds", "scope": "billing:write"}]
    assert record["rate_limit"] == "10/min" and record["secret"] == "env:GW_SECRET"
    assert run("service", "edit", "api", "--remove-allow", "POST /v1/refunds").exit_code == 0
    listed = json.loads(run("service", "list", "--json").stdout)
    assert [s["name"] for s in listed] == ["api"] and len(listed[0]["allow"]) == 1
    assert run("service", "disable", "api").exit_code == 0
    assert json.loads(run("service", "show", "api", "--json").stdout)["enabled"] is False
    assert run("service", "enable", "api").exit_code == 0
    assert run("service", "remove", "api").exit_code == 0
    assert json.loads(run("service", "list", "--json").stdout) == []


@pytest.mark.parametrize("args", [
    ["--base-url", "http://evil.example", "--auth", "bearer", "--secret", "env:X"],
    ["--base-url", "https://user:pw@api.example", "--auth", "bearer", "--secret", "env:X"],
    ["--base-url", "https://api.example?x=1", "--auth", "bearer", "--secret", "env:X"],
    ["--base-url", "ftp://api.example", "--auth", "bearer", "--secret", "env:X"],
    ["--base-url", "https://api.example", "--auth", "magic", "--secret", "env:X"],
    ["--base-url", "https://api.example", "--auth", "header:Host", "--secret", "env:X"],
    ["--base-url", "https://api.example", "--auth", "bearer", "--secret", SECRET],
    ["--base-url", "https://api.example", "--auth", "bearer", "--secret", "nope:x"],
    ["--base-url", "https://api.example", "--auth", "bearer", "--secret", "env:X",
     "--allow", "GET"],
    ["--base-url", "https://api.example", "--auth", "bearer", "--secret", "env:X",
     "--allow", "FETCH /x"],
    ["--base-url", "https://api.example", "--auth", "bearer", "--secret", "env:X",
     "--allow", "GET /a/../b"],
    ["--base-url", "https://api.example", "--auth", "bearer", "--secret", "env:X",
     "--allow", "GET /a/**b"],
    ["--base-url", "https://api.example", "--auth", "bearer", "--secret", "env:X",
     "--rate-limit", "lots"],
    ["--base-url", "https://api.example", "--auth", "bearer", "--secret", "env:X",
     "--rate-limit", "0/min"],
    ["--base-url", "https://api.example", "--auth", "bearer", "--secret", "env:X",
     "--env", "1BAD"],
    ["--base-url", "https://api.example", "--auth", "bearer", "--secret", "env:X",
     "--description", "a\x1b[2Jb"],
    ["--auth", "bearer", "--secret", "env:X"],
])
def test_bad_input_is_exit_2_and_changes_nothing(run: Cli, upstream: Upstream,
                                                 args: list[str]) -> None:
    assert run("init").exit_code == 0
    add(run, upstream, "--allow", "GET /**")
    before = services_file(run).read_bytes()
    result = run("service", "add", "other", *args)
    assert result.exit_code == 2, f"exit {result.exit_code}: {result.stderr}"
    line = one_error_line(result.stderr)
    assert "\x1b" not in line
    assert_absent(SECRET, result.stdout + result.stderr, "an error")
    assert services_file(run).read_bytes() == before, "a refused add changed the file"


def test_missing_and_duplicate_services_are_exit_1(run: Cli, upstream: Upstream) -> None:
    assert run("init").exit_code == 0
    add(run, upstream)
    before = services_file(run).read_bytes()
    again = run("service", "add", "api", "--base-url", "https://x.example", "--auth", "bearer",
                "--secret", "env:X")
    assert again.exit_code == 1 and "service edit api" in one_error_line(again.stderr)
    for command in (["show", "nope"], ["edit", "nope", "--allow", "GET /x"], ["remove", "nope"],
                    ["disable", "nope"]):
        result = run("service", *command)
        assert result.exit_code == 1 and "no service 'nope'" in one_error_line(result.stderr)
    missing_rule = run("service", "edit", "api", "--remove-allow", "GET /zzz")
    assert missing_rule.exit_code == 2
    assert services_file(run).read_bytes() == before


def test_a_hand_broken_file_is_reported_not_served(run: Cli, upstream: Upstream) -> None:
    assert run("init").exit_code == 0
    add(run, upstream)
    path = services_file(run)
    path.write_text(path.read_text() + "\nunknown_key = 1\n")
    result = run("service", "list")
    assert result.exit_code == 1 and "unknown key 'unknown_key'" in \
        one_error_line(result.stderr)
    path.write_text(path.read_text().replace("unknown_key = 1", ""))
    path.chmod(0o666)
    unsafe = run("service", "list")
    assert unsafe.exit_code == 1 and "chmod" in one_error_line(unsafe.stderr), \
        "a services file others can write is refused (it could redirect a credential)"


def test_service_test_and_audit_filter(run: Cli, upstream: Upstream,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GW_SECRET", SECRET)
    assert run("init").exit_code == 0
    add(run, upstream, "--allow", "GET /nothing")
    ok = run("service", "test", "api", "--path", "/things")
    assert ok.exit_code == 0 and ok.stdout.startswith("api: HTTP 200 in ") and \
        ok.stdout.rstrip().endswith(" ms"), ok.stdout + ok.stderr
    assert upstream.authorised("bearer", upstream.seen[-1])
    monkeypatch.setenv("GW_SECRET", "wrong-value-123")
    refused = run("service", "test", "api")
    assert refused.exit_code == 1 and "HTTP 401" in refused.stdout
    events = json.loads(run("audit", "--event", "gateway_call", "--service", "api",
                            "--json").stdout)
    assert [e["detail"]["status"] for e in events] == [200, 401]
    assert json.loads(run("audit", "--service", "other", "--json").stdout) == []
    assert len(json.loads(run("audit", "--service", "api", "--limit", "1", "--json").stdout)) \
        == 1
    for output in run.outputs:
        assert_absent(SECRET, output, "a CLI output")
    assert_absent(SECRET, services_file(run).read_text(), "services.toml")


def test_serving_beyond_loopback_needs_public(run: Cli, upstream: Upstream) -> None:
    assert run("init").exit_code == 0
    add(run, upstream, "--allow", "GET /**")
    result = run("gateway", "serve", "--transport", "http", "--host", "0.0.0.0")
    assert result.exit_code == 2 and "--public" in one_error_line(result.stderr)


def test_a_gateway_with_no_services_does_not_start(run: Cli) -> None:
    assert run("init").exit_code == 0
    result = run("gateway", "serve", env={"MCP_API_KEY": "mcpk_x"})
    assert result.exit_code == 1 and "mcp-keys service add" in one_error_line(result.stderr)


@pytest.mark.parametrize("size", ["1GB", "lots", "0", "-5KiB", "2GiB"])
def test_bad_max_body_is_exit_2(run: Cli, upstream: Upstream, size: str) -> None:
    assert run("init").exit_code == 0
    add(run, upstream, "--allow", "GET /**")
    result = run("gateway", "serve", "--max-body", size)
    assert result.exit_code == 2 and "invalid size" in one_error_line(result.stderr)
