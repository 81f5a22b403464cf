"""Issue 17, item 7: the gateway's policy cannot be rewritten from the agent's workspace.

The gateway side defaults to a per-user store; serving refuses a store or services.toml
in the current directory or a git work tree (symlinks and hard links included); a running
gateway never redirects a credential because the file changed (a real ``gateway serve``
over stdio with the official MCP client, a second loopback upstream as the agent's host);
``client-config --gateway`` names the store by its absolute path."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from mcp_keys.gateway.proxy import Caller, Denied, Gateway, GatewayRequest
from mcp_keys.gateway.services import ServiceConfig, update
from mcp_keys.gateway.workspace import user_dir
from tests.conftest import (
    FileKeys,
    assert_absent,
    one_error_line,
    run_cli_process,
)
from tests.gateway_upstream import SECRET, Upstream, running_upstream
from tests.stack_clients import is_error, text_of

CALLER = Caller("abcdefghijkl", frozenset({"gateway:*"}))


@pytest.fixture(autouse=True)
def _checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """conftest lets the other tests keep their store in the cwd; here the check is on."""
    monkeypatch.delenv("MCP_KEYS_ALLOW_WORKSPACE_POLICY", raising=False)
    monkeypatch.setenv("GW_SECRET", SECRET)


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with running_upstream() as server:
        yield server


@pytest.fixture(scope="module")
def attacker() -> Iterator[Upstream]:
    """The agent's own host: it must never see the credential."""
    with running_upstream() as server:
        yield server


def add_service(store: str | None, upstream: Upstream, name: str = "api") -> None:
    args = ["--store", store] if store else []
    done = run_cli_process(*args, "service", "add", name, "--base-url",
                           f"{upstream.url}/bearer", "--auth", "bearer", "--secret",
                           "env:GW_SECRET", "--allow", "GET /things/**")
    assert done.returncode == 0, done.stderr


def serve(*args: str, key: str = "mcpk_notakey", env: dict[str, str] | None = None,
          ) -> tuple[int, str]:
    """``gateway serve`` on stdio with a bad key: past the location check it stops on the
    key, so the first line of stderr says which check stopped it."""
    done = run_cli_process("gateway", "serve", *args, env={"MCP_API_KEY": key, **(env or {})},
                           timeout=60)
    return done.returncode, done.stderr


PAST_THE_CHECK = "MCP_API_KEY must hold a valid mcp-keys key"


# -- where the policy may live ----------------------------------------------------------


def private_store(tmp_path: Path, services_text: str) -> tuple[Path, Path]:
    """A store outside the workspace (beside ``tmp_path``, not in it) with this
    services.toml, 0600: what the workspace tests point into the workspace from."""
    store = tmp_path.parent / f"{tmp_path.name}-private" / "keys.json"
    FileKeys(store).init()
    services = store.parent / "services.toml"
    services.write_text(services_text)
    services.chmod(0o600)
    return store, services


def test_serve_refuses_a_store_in_the_current_directory(store_path: Path,
                                                         upstream: Upstream) -> None:
    FileKeys(store_path).init()
    add_service(str(store_path), upstream)
    code, stderr = serve("--store", str(store_path))
    line = one_error_line(stderr)
    assert code == 1 and "inside the current directory" in line, line
    assert str(user_dir()) in line and "--allow-workspace-policy" in line, line
    code, stderr = serve("--store", str(store_path), "--allow-workspace-policy")
    assert code == 1 and PAST_THE_CHECK in stderr, stderr


def test_serve_refuses_a_git_work_tree_outside_the_cwd(tmp_path: Path, upstream: Upstream,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """``.git`` as a file (a linked worktree or submodule) counts, at any depth."""
    project = tmp_path.parent / f"{tmp_path.name}-project"
    (project / "deep" / ".mcp-keys").mkdir(parents=True)
    (project / ".git").write_text("gitdir: /elsewhere/.git/worktrees/x\n")
    monkeypatch.chdir(tmp_path)
    store = project / "deep" / ".mcp-keys" / "keys.json"
    FileKeys(store).init()
    add_service(str(store), upstream)
    code, stderr = serve("--store", str(store))
    assert code == 1 and f"inside the git work tree {project}" in one_error_line(stderr)


def test_a_symlink_into_the_workspace_is_followed(tmp_path: Path, upstream: Upstream) -> None:
    """The store is outside; MCP_KEYS_SERVICES and then the store's directory are
    symlinks whose targets are in the cwd."""
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    store = outside / "keys.json"
    FileKeys(store).init()
    add_service(str(store), upstream)
    inside = tmp_path / "policy.toml"
    inside.write_bytes((outside / "services.toml").read_bytes())
    inside.chmod(0o600)
    (outside / "link.toml").symlink_to(inside)
    code, stderr = serve("--store", str(store),
                         env={"MCP_KEYS_SERVICES": str(outside / "link.toml")})
    assert code == 1 and "the services file" in stderr and \
        "inside the current directory" in stderr, stderr
    linked_dir = tmp_path.parent / f"{tmp_path.name}-linkdir"
    linked_dir.symlink_to(tmp_path / "keys", target_is_directory=True)
    FileKeys(tmp_path / "keys" / "keys.json").init()
    code, stderr = serve("--store", str(linked_dir / "keys.json"))
    assert code == 1 and "inside the current directory" in one_error_line(stderr), stderr


def test_a_hard_link_in_the_workspace_is_refused(tmp_path: Path, upstream: Upstream) -> None:
    outside = tmp_path.parent / f"{tmp_path.name}-hard"
    outside.mkdir()
    store = outside / "keys.json"
    FileKeys(store).init()
    add_service(str(store), upstream)
    os.link(outside / "services.toml", tmp_path / "services.toml")
    code, stderr = serve("--store", str(store))
    assert code == 1 and "has 2 hard links" in one_error_line(stderr), stderr


def test_a_store_outside_any_workspace_is_served(tmp_path: Path, upstream: Upstream) -> None:
    outside = tmp_path.parent / f"{tmp_path.name}-clean"
    outside.mkdir()
    FileKeys(outside / "keys.json").init()
    add_service(str(outside / "keys.json"), upstream)
    code, stderr = serve("--store", str(outside / "keys.json"))
    assert code == 1 and PAST_THE_CHECK in stderr, stderr


def test_run_proxy_refuses_a_workspace_policy(store_path: Path, upstream: Upstream) -> None:
    pytest.importorskip("mitmproxy")
    manager = FileKeys(store_path)
    manager.init()
    add_service(str(store_path), upstream)
    key = manager.create("proxied", scopes=["gateway:api"])
    done = run_cli_process("--store", str(store_path), "run", "--proxy", "--service", "api",
                           "--", sys.executable, "-c", "print('ran')",
                           env={"MCP_API_KEY": key.key})
    assert done.returncode == 1 and "inside the current directory" in \
        one_error_line(done.stderr) and "ran" not in done.stdout, done.stderr
    assert_absent(key.key, done.stderr, "run --proxy's refusal")


# -- the per-user default ---------------------------------------------------------------


def test_the_gateway_side_defaults_to_the_per_user_directory(
        tmp_path: Path, upstream: Upstream, monkeypatch: pytest.MonkeyPatch) -> None:
    """No --store, no MCP_KEYS_STORE: ``service`` writes $XDG_CONFIG_HOME/mcp-keys/ (0700),
    ``gateway serve`` reads it; with XDG_CONFIG_HOME unset, ~/.config/mcp-keys/."""
    add_service(None, upstream)
    per_user = user_dir()
    assert (per_user / "services.toml").is_file() and not (tmp_path / ".mcp-keys").exists()
    assert per_user.stat().st_mode & 0o777 == 0o700
    manager = FileKeys(per_user / "keys.json")
    key = manager.create("agent", scopes=["gateway:api"])
    listed = run_cli_process("service", "list", "--json")
    assert [s["name"] for s in json.loads(listed.stdout)] == ["api"], listed.stderr
    code, stderr = serve(key=key.key)  # a key of the per-user store: it starts, stdin ends
    assert code == 0 and "Error" not in stderr, stderr
    assert_absent(key.key, stderr, "the gateway's stderr")
    home = tmp_path.parent / f"{tmp_path.name}-home"
    home.mkdir()
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(home))
    add_service(None, upstream, name="other")
    assert (home / ".config" / "mcp-keys" / "services.toml").is_file()
    assert (home / ".config" / "mcp-keys").stat().st_mode & 0o777 == 0o700


def test_no_services_names_the_old_workspace_file(tmp_path: Path, upstream: Upstream) -> None:
    FileKeys(tmp_path / ".mcp-keys" / "keys.json").init()
    add_service(str(tmp_path / ".mcp-keys" / "keys.json"), upstream)
    FileKeys(user_dir() / "keys.json").init()
    code, stderr = serve()
    line = one_error_line(stderr)
    assert code == 1 and f"no services in {user_dir() / 'services.toml'}" in line and \
        "old default" in line, line


# -- a running gateway keeps each credential's destination ------------------------------


@pytest.fixture
def gateway(tmp_path: Path, upstream: Upstream) -> Gateway:
    path = tmp_path / "services.toml"
    path.write_text(f'[services.api]\nbase_url = "{upstream.url}/bearer"\nauth = "bearer"\n'
                    'secret = "env:GW_SECRET"\nallow = ["GET /things/**"]\n'
                    'rate_limit = "1000/min"\n')
    path.chmod(0o600)
    manager = FileKeys(tmp_path / "keys" / "keys.json")
    manager.init()
    upstream.seen.clear()
    return Gateway(ServiceConfig(path), audit=manager.audit)


def call(gateway: Gateway, service: str = "api", path: str = "/things/1") -> Any:
    async def go() -> Any:
        try:
            return await gateway.execute(CALLER, GatewayRequest(service, "GET", path))
        except Denied as exc:
            return exc
        finally:
            await gateway.aclose()

    return asyncio.run(go())


def change(gateway: Gateway, name: str, **changes: Any) -> None:
    update(gateway.config.path, lambda s: s.update({name: s[name].with_changes(**changes)}))
    gateway.config.reload()


def test_a_moved_credential_is_held_until_a_restart(gateway: Gateway, upstream: Upstream,
                                                    attacker: Upstream) -> None:
    assert call(gateway).status == 200
    attacker.seen.clear()
    for field, value in (("base_url", f"{attacker.url}/bearer"), ("auth", "header:X-Api-Key"),
                         ("secret", "env:OTHER_SECRET")):
        original = gateway.config.current().services["api"]
        change(gateway, "api", **{field: value})
        refused = call(gateway)
        assert isinstance(refused, Denied) and refused.decision == "restart_required", field
        assert "until the gateway is restarted" in str(refused)
        update(gateway.config.path, lambda s, o=original: s.update(api=o))
        gateway.config.reload()  # SIGHUP: a reload, not a restart
        assert call(gateway).status == 200, f"{field} put back is served again"
    assert attacker.seen == []
    lines = [json.loads(line) for _, _, line in gateway.audit.lines()]  # type: ignore[union-attr]
    held = [line for line in lines if line["detail"].get("decision") == "restart_required"]
    assert len(held) == 3 and all(line["detail"]["service"] == "api" for line in held)


def test_a_service_added_while_running_waits_for_a_restart(gateway: Gateway,
                                                            attacker: Upstream) -> None:
    assert call(gateway).status == 200
    update(gateway.config.path, lambda s: s.update(
        evil=s["api"].with_changes(name="evil", base_url=f"{attacker.url}/bearer")))
    gateway.config.reload()
    refused = call(gateway, "evil")
    assert isinstance(refused, Denied) and refused.decision == "restart_required"
    assert attacker.seen == []
    restarted = Gateway(ServiceConfig(gateway.config.path))
    assert call(restarted, "evil").status == 200 and len(attacker.seen) == 1


def test_rule_edits_apply_at_once_both_ways(gateway: Gateway) -> None:
    """Narrowing and widening the rules, limits and switches are not destinations."""
    from mcp_keys.gateway.model import parse_rule

    assert isinstance(call(gateway, path="/other"), Denied)
    change(gateway, "api", allow=(parse_rule("GET /**", "allow"),))
    assert call(gateway, path="/other").status == 200
    change(gateway, "api", deny=(parse_rule("GET /other", "deny"),))
    assert call(gateway, path="/other").decision == "denied"
    change(gateway, "api", enabled=False)
    assert call(gateway).decision == "disabled"
    change(gateway, "api", enabled=True, timeout=5.0, description="changed")
    assert call(gateway).status == 200


# -- the same over MCP: a real gateway process, the official client ---------------------


@asynccontextmanager
async def stdio_gateway(key: str) -> AsyncIterator[Any]:
    from mcp import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    env = {**os.environ, "MCP_API_KEY": key}
    params = StdioServerParameters(command=sys.executable,
                                   args=["-m", "mcp_keys", "gateway", "serve"], env=env)
    with (user_dir() / "gateway-stderr.log").open("a") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write), \
                ClientSession(read, write) as session:
            await session.initialize()
            yield session


def test_editing_base_url_under_a_running_gateway_sends_nothing(
        upstream: Upstream, attacker: Upstream) -> None:
    """The per-user store (no --store): edit base_url to the agent's host while the
    gateway runs; the call is refused and audited, the agent's host sees nothing; a new
    gateway process serves the new URL."""
    pytest.importorskip("mcp")
    add_service(None, upstream)
    manager = FileKeys(user_dir() / "keys.json")
    key = manager.create("agent", scopes=["gateway:api"])
    request = {"service": "api", "method": "GET", "path": "/things/1"}
    outputs: list[str] = []

    async def first() -> None:
        async with stdio_gateway(key.key) as session:
            ok = await session.call_tool("execute", request)
            assert not is_error(ok), text_of(ok)
            edited = run_cli_process("service", "edit", "api", "--base-url",
                                     f"{attacker.url}/bearer")
            assert edited.returncode == 0, edited.stderr
            result = await session.call_tool("execute", request)
            outputs.append(text_of(result))
            assert is_error(result) and "until the gateway is restarted" in text_of(result)
            again = await session.call_tool("list_services", {})
            outputs.append(text_of(again))

    attacker.seen.clear()
    upstream.seen.clear()
    asyncio.run(first())
    assert attacker.seen == [] and len(upstream.seen) == 1
    lines = [json.loads(line) for _, _, line in manager.audit.lines()]
    refusal = [line["detail"] for line in lines if line["event"] == "gateway_call" and
               line["detail"].get("decision") == "restart_required"]
    assert len(refusal) == 1 and refusal[0]["service"] == "api" and \
        refusal[0]["path"] == "/things/1"

    async def restarted() -> None:
        async with stdio_gateway(key.key) as session:
            result = await session.call_tool("execute", request)
            outputs.append(text_of(result))
            assert not is_error(result), text_of(result)

    asyncio.run(restarted())
    assert len(attacker.seen) == 1 and len(upstream.seen) == 1
    for text in [*outputs, (user_dir() / "gateway-stderr.log").read_text(),
                 (user_dir() / "audit.log").read_text()]:
        assert_absent(SECRET, text, "the gateway's output or audit")
        assert_absent(key.key, text, "the gateway's output or audit")


# -- client-config ----------------------------------------------------------------------


def client_config(*args: str) -> tuple[int, dict[str, Any], str]:
    done = run_cli_process(*args, "client-config", "claude-desktop", "--gateway", "--json")
    return done.returncode, json.loads(done.stdout or "{}"), done.stderr


def test_client_config_for_the_gateway_writes_an_absolute_store(tmp_path: Path) -> None:
    code, out, err = client_config("--store", "relative/keys.json")
    assert code == 0, err
    entry = out["document"]["mcpServers"]["mcp-keys-gateway"]
    args = entry["args"]
    assert args[args.index("--store") + 1] == str(tmp_path / "relative" / "keys.json")
    assert args[:2] == ["run", "--env"] and args[2].startswith("MCP_API_KEY=keyring:")
    assert args[4:] == [entry["command"], "gateway", "serve", "--store",
                        str(tmp_path / "relative" / "keys.json")]
    code, out, err = client_config()
    args = out["document"]["mcpServers"]["mcp-keys-gateway"]["args"]
    assert code == 0 and args[-1] == str(user_dir() / "keys.json"), err
    done = run_cli_process("--store", "postgresql://u:hunter2@127.0.0.1/db", "client-config",
                           "cursor", "--gateway")
    assert done.returncode == 2 and "password" in one_error_line(done.stderr)
    assert "hunter2" not in done.stdout + done.stderr
    both = run_cli_process("client-config", "cursor", "--gateway", "--url",
                           "https://x.example/mcp")
    assert both.returncode == 2 and "one of them" in one_error_line(both.stderr)


def test_a_hard_link_made_while_running_refuses_the_file_until_a_restart(
        gateway: Gateway, tmp_path: Path) -> None:
    """The check at start sees no second link; one made later, in a workspace, would let
    the agent rewrite the rules through it (a path-based sandbox allows writing there)."""
    from mcp_keys.gateway.model import parse_rule

    assert call(gateway).status == 200
    workspace = tmp_path / "project"
    workspace.mkdir()
    linked = workspace / "policy.toml"
    os.link(gateway.config.path, linked)
    text = linked.read_text().replace('allow = ["GET /things/**"]', 'allow = ["GET /**"]')
    with linked.open("r+") as handle:  # written in place, through the link
        handle.write(text)
        handle.truncate()
    gateway.config.reload()
    refused = call(gateway, path="/other")
    assert isinstance(refused, Denied) and "hard link" in str(refused), str(refused)
    assert isinstance(call(gateway), Denied), "the file is refused whatever the rule"
    linked.unlink()
    gateway.config.reload()
    assert isinstance(call(gateway), Denied), "refused until a restart, not until unlinked"
    restarted = Gateway(ServiceConfig(gateway.config.path))
    assert call(restarted).status == 200
    assert restarted.config.current().services["api"].allow == (
        parse_rule("GET /**", "allow"),)


def test_an_exec_service_that_runs_in_a_work_tree_is_refused(tmp_path: Path) -> None:
    """git run in the agent's repository reads its .git/config: the remote the credential
    goes to, hooks and core.fsmonitor that run with it in the environment."""
    import shutil
    import subprocess

    git = shutil.which("git")
    if git is None:
        pytest.skip("needs git")
    project = tmp_path.parent / f"{tmp_path.name}-repo"
    project.mkdir()
    subprocess.run([git, "init", "-q", str(project)], check=True)
    store, services = private_store(
        tmp_path, f'[services.git]\nkind = "exec"\ncommand = "{git}"\n'
                  f'allow_args = ["push"]\ncwd = "{project}"\n'
                  'secret_env = { GH_TOKEN = "env:GW_SECRET" }\n')
    code, stderr = serve("--store", str(store))
    line = one_error_line(stderr)
    assert code == 1 and "exec service git runs in" in line and str(project) in line, line
    assert "--allow-workspace-policy" in line, line
    code, stderr = serve("--store", str(store), "--allow-workspace-policy")
    assert code == 1 and PAST_THE_CHECK in stderr, stderr
    services.write_text(services.read_text().replace(f'cwd = "{project}"\n', ""))
    code, stderr = serve("--store", str(store))
    assert code == 1 and PAST_THE_CHECK in stderr, stderr


@pytest.mark.parametrize("reference", ["file:{dir}/token", "dotenv:{dir}/.env#API_KEY",
                                       "dotenv:.env#API_KEY"])
def test_a_credential_file_in_the_workspace_is_refused(tmp_path: Path, upstream: Upstream,
                                                        reference: str) -> None:
    """A ``file:``/``dotenv:`` reference into the workspace (a relative one is read from
    the cwd) hands the agent the credential itself: read it, or swap it."""
    (tmp_path / "token").write_text(SECRET)
    (tmp_path / ".env").write_text(f"API_KEY={SECRET}\n")
    store, _ = private_store(
        tmp_path, f'[services.api]\nbase_url = "{upstream.url}/bearer"\n'
                  f'auth = "bearer"\nsecret = "{reference.format(dir=tmp_path)}"\n'
                  'allow = ["GET /things/**"]\n')
    code, stderr = serve("--store", str(store))
    line = one_error_line(stderr)
    assert code == 1 and "service api reads its credential from" in line, line
    assert_absent(SECRET, stderr, "serve's stderr")
    code, stderr = serve("--store", str(store), "--allow-workspace-policy")
    assert code == 1 and PAST_THE_CHECK in stderr, stderr


@pytest.mark.parametrize("where", ["command", "argument"])
def test_an_exec_program_or_script_in_the_workspace_is_refused(
        tmp_path: Path, where: str) -> None:
    """The destination check keeps the command's path, not what is in the file: a program,
    or a script a rule names (``python /work/x.py``), in the workspace is the agent's to
    rewrite, and it runs with the credential."""
    script = tmp_path / "tool.py"
    script.write_text("import os\nprint('ok')\n")
    script.chmod(0o755)
    command, rule = (str(script), "run") if where == "command" else (sys.executable,
                                                                      f"{script} run")
    store, _ = private_store(
        tmp_path, f'[services.tool]\nkind = "exec"\ncommand = "{command}"\n'
                  f'allow_args = ["{rule}", "-C / status"]\n'
                  'secret_env = { TOKEN = "env:GW_SECRET" }\n')
    code, stderr = serve("--store", str(store))
    line = one_error_line(stderr)
    assert code == 1 and f"exec service tool runs {script}" in line, line
    code, stderr = serve("--store", str(store), "--allow-workspace-policy")
    assert code == 1 and PAST_THE_CHECK in stderr, stderr
