"""The first hour with mcp-keys (issue 18): what a new operator types and what it answers.

Scopes the docs name, the gateway's help, missing extras (in a real venv without them),
install hints, bare groups, ``--store`` after every command, audit event names, ``scan``
of a missing path, and ``doctor`` / ``list`` without a store.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tomllib
import venv
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from mcp_keys import KeyManager
from mcp_keys.cli import cli
from tests.conftest import Cli, assert_absent, mcp_keys_cmd, one_error_line, run_cli_process

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "mcp_keys"
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def pyproject_extras() -> set[str]:
    with (REPO / "pyproject.toml").open("rb") as handle:
        return set(tomllib.load(handle)["project"]["optional-dependencies"])


def sources() -> Iterator[tuple[Path, str]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, path.read_text()


# -- 3. every scope the docs name is one create accepts -----------------------------------

def doc_scopes() -> set[str]:
    found: set[str] = set()
    for path in DOCS:
        text = path.read_text()
        found.update(re.findall(r"--scope[ =]'?([^\s'`\]\)|\"]+)", text))
        found.update(re.findall(r"`(gateway:[^`\s]+)`", text))
    return found


def test_every_scope_the_docs_name_is_valid() -> None:
    from mcp_keys.errors import UsageError
    from mcp_keys.manager import check_scopes

    scopes = doc_scopes()
    assert "gateway:*" in scopes and "gateway:stripe" in scopes, sorted(scopes)
    refused = []
    for scope in sorted(scopes):
        try:
            check_scopes([scope])
        except UsageError:
            refused.append(scope)
    assert not refused, f"the docs name scopes the validator refuses: {refused}"


def test_gateway_all_scope_is_granted_by_create_and_kept_by_rotate(run: Cli) -> None:
    created = run("create", "agent", "--scope", "gateway:*", "--json")
    assert created.exit_code == 0, created.stderr
    record = json.loads(created.stdout)["record"]
    assert record["scopes"] == ["gateway:*"], record["scopes"]
    rotated = run("rotate", record["id"], "--json")
    assert rotated.exit_code == 0, rotated.stderr
    successor = json.loads(rotated.stdout)
    assert successor["record"]["scopes"] == ["gateway:*"], successor["record"]["scopes"]
    checked = run("verify", "--scope", "gateway:*", input=successor["key"] + "\n")
    assert checked.exit_code == 0 and checked.stdout.startswith("VALID"), checked.stdout


def test_other_wildcards_stay_invalid(run: Cli) -> None:
    for scope in ("tools:*", "*", "gateway:**", "gateway:*x"):
        result = run("create", "agent", "--scope", scope)
        assert result.exit_code == 2, scope
        one_error_line(result.stderr)


# -- 6. gateway serve --help names every tool ---------------------------------------------

def gateway_tools() -> list[str]:
    """The names of the functions server.py decorates with ``@tool()``."""
    tree = ast.parse((PACKAGE / "gateway" / "server.py").read_text())
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for decorator in node.decorator_list:
                call = decorator.func if isinstance(decorator, ast.Call) else decorator
                if isinstance(call, ast.Name) and call.id == "tool":
                    names.append(node.name)
    return names


def test_serve_help_names_every_tool() -> None:
    tools = gateway_tools()
    assert {"list_services", "execute", "exec", "explain"} <= set(tools), tools
    result = CliRunner().invoke(cli, ["gateway", "serve", "--help"])
    assert result.exit_code == 0
    words = set(re.findall(r"[a-z_]+", result.stdout))
    missing = [name for name in tools if name not in words]
    assert not missing, f"gateway serve --help does not name {missing}"


# -- 7. a venv without the extras: one line naming the extra, never a traceback -----------

BASE_DISTRIBUTIONS = ("click", "rich", "python-dotenv", "markdown-it-py", "mdurl", "pygments")
OPTIONAL = ("mcp", "uvicorn", "cryptography", "psycopg", "keyring", "hvac", "boto3",
            "botocore", "mitmproxy", "fastmcp", "fastapi", "httpx", "httpx2", "starlette")


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real venv holding mcp-keys (from this checkout) and its required dependencies
    only, as ``pipx install mcp-keys`` without extras leaves it. The required packages are
    linked from this venv, which is what pip would install, without reaching an index."""
    root = tmp_path_factory.mktemp("bare-venv")
    venv.EnvBuilder(with_pip=False, symlinks=True).create(root)
    python = root / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path("
                                "'purelib'))"], capture_output=True, text=True,
                               check=True).stdout.strip())
    for name in BASE_DISTRIBUTIONS:
        dist = importlib.metadata.distribution(name)
        origin = Path(str(dist.locate_file("")))
        for top in sorted({Path(str(f)).parts[0] for f in dist.files or ()
                           if not str(f).startswith("..")}):
            (site / top).symlink_to(origin / top)
    (site / "mcp_keys_checkout.pth").write_text(f"{REPO}\n")
    probe = "; ".join(f"__import__('importlib.util').util.find_spec({m!r}) and print({m!r})"
                      for m in OPTIONAL)
    present = subprocess.run([python, "-c", probe], capture_output=True, text=True,
                             check=True, env=bare_env()).stdout.split()
    assert not present, f"the bare venv has optional modules: {present}"
    return python


def bare_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "MCP_API_KEY",
                        "MCP_KEYS_STORE")}
    return {**env, "PYTHONNOUSERSITE": "1", "NO_COLOR": "1", **extra}


def bare(python: Path, *args: str, cwd: Path, stdin: str = "",
         **env: str) -> subprocess.CompletedProcess[str]:
    # the key side and the gateway side share the project's store (the gateway side would
    # otherwise default to the per-user one)
    env = {"MCP_KEYS_STORE": str(cwd / ".mcp-keys" / "keys.json"), **env}
    return subprocess.run([str(python), "-m", "mcp_keys", *args], cwd=cwd, env=bare_env(**env),
                          capture_output=True, text=True, timeout=60, input=stdin, check=False)


def assert_names_extra(line: str, extra: str) -> None:
    assert extra in pyproject_extras(), extra
    assert f"pip install -e '.[{extra}]'" in line and f"pip install 'mcp-keys[{extra}]'" in line, \
        line


@pytest.fixture
def bare_project(bare_python: Path, tmp_path: Path) -> tuple[Path, str]:
    """A store with one http service and a gateway key, made by the bare venv's CLI."""
    assert bare(bare_python, "init", cwd=tmp_path).returncode == 0
    added = bare(bare_python, "service", "add", "api", "--base-url", "https://api.example.com",
                 "--auth", "bearer", "--secret", "env:UPSTREAM", "--allow", "GET /**",
                 cwd=tmp_path)
    assert added.returncode == 0, added.stderr
    created = bare(bare_python, "create", "agent", "--scope", "gateway:api", cwd=tmp_path)
    assert created.returncode == 0, "create failed"
    return tmp_path, created.stdout.strip()


@pytest.mark.parametrize(("args", "extra"), [
    (["gateway", "serve"], "gateway"),
    (["gateway", "serve", "--transport", "http", "--port", "1"], "gateway"),
    (["service", "test", "api"], "gateway"),
    (["ca", "show"], "proxy"),
    (["ca", "rotate"], "proxy"),
    (["--store", "postgresql://127.0.0.1:1/none", "list"], "postgres"),
    (["migrate", "--to", "postgresql://127.0.0.1:1/none"], "postgres"),
    (["run", "--env", "TOKEN=keyring:mcp-keys/x", "--", "true"], "keyring"),
    (["secret", "set", "keyring:mcp-keys/x"], "keyring"),
    (["scan", "client.json", "--fix", "--to", "keyring", "--yes"], "keyring"),
    (["scan", "client.json", "--fix", "--to", "vault:secret/x", "--yes"], "vault"),
])
def test_missing_extra_is_one_line(bare_python: Path, bare_project: tuple[Path, str],
                                   args: list[str], extra: str) -> None:
    project, key = bare_project
    if args == ["ca", "show"]:  # a CA to load, so show gets as far as reading it
        for name in ("proxy-ca.key", "proxy-ca.pem"):
            (project / ".mcp-keys" / name).write_bytes(b"")
            (project / ".mcp-keys" / name).chmod(0o600)
    literal = "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc"
    (project / "client.json").write_text(json.dumps(
        {"mcpServers": {"pay": {"command": "npx", "env": {"STRIPE_SECRET_KEY": literal}}}}))
    result = bare(bare_python, *args, cwd=project, stdin="a-value\n", MCP_API_KEY=key,
                  UPSTREAM="upstream-value", VAULT_ADDR="http://127.0.0.1:1", VAULT_TOKEN="t")
    for output in (result.stdout, result.stderr):
        assert_absent(key, output, "output")
        assert_absent(literal, output, "output")
    assert result.returncode == 1, f"{args}: exit {result.returncode}"
    assert_names_extra(one_error_line(result.stderr), extra)


def test_doctor_without_cryptography_reports_a_failed_check(bare_python: Path,
                                                            bare_project: tuple[Path, str]
                                                            ) -> None:
    project, _ = bare_project
    ca_key = project / ".mcp-keys" / "proxy-ca.key"
    ca_key.write_bytes(b"")
    ca_key.chmod(0o600)
    result = bare(bare_python, "doctor", "--json", cwd=project)
    assert "Traceback" not in result.stderr and result.returncode == 1, result.stderr[-300:]
    checks = {c["check"]: c for c in json.loads(result.stdout)}
    assert checks["proxy CA"]["outcome"] == "fail"
    assert_names_extra(checks["proxy CA"]["message"], "proxy")


def test_missing_secret_sources_name_their_extras(bare_python: Path, tmp_path: Path) -> None:
    for ref, extra in (("keyring:mcp-keys/x", "keyring"), ("aws-sm:x", "aws"),
                       ("vault:secret/x#y", "vault")):
        result = bare(bare_python, "secret", "check", ref, cwd=tmp_path,
                      VAULT_ADDR="http://127.0.0.1:1", VAULT_TOKEN="t")
        assert result.returncode == 1 and "Traceback" not in result.stderr, ref
        assert_names_extra(result.stdout, extra)


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="mitmproxy 12 runs on 3.12+")
def test_run_proxy_on_python_311_names_the_python(run: Cli, bare_python: Path,
                                                  bare_project: tuple[Path, str]) -> None:
    result = run("run", "--proxy", "--service", "api", "--", "true")
    said = bare(bare_python, "run", "--proxy", "--service", "api", "--", "true",
                cwd=bare_project[0])
    for code, stderr in ((result.exit_code, result.stderr), (said.returncode, said.stderr)):
        line = one_error_line(stderr)
        assert code == 1 and "Python 3.12 or later" in line, line
        assert "pip install" not in line, line


# -- 8. install hints: extras that exist, both forms --------------------------------------

def named_extras(text: str) -> set[str]:
    found: set[str] = set()
    for pattern in (r"mcp-keys\[([a-z0-9,-]+)\]", r"'\.\[([a-z0-9,-]+)\]'",
                    r"install_hint\(['\"]([a-z0-9-]+)['\"]\)"):
        for group in re.findall(pattern, text):
            found.update(group.split(","))
    return found


def test_every_extra_a_message_names_exists() -> None:
    from mcp_keys.extras import MODULE_EXTRAS
    from mcp_keys.secrets.reference import EXTRAS

    extras = pyproject_extras()
    named: dict[str, set[str]] = {}
    for path, text in [*sources(), *((p, p.read_text()) for p in DOCS)]:
        for extra in named_extras(text):
            named.setdefault(extra, set()).add(path.name)
    for extra in [*MODULE_EXTRAS.values(), *EXTRAS.values()]:
        named.setdefault(extra, set()).add("a table")
    unknown = {extra: sorted(where) for extra, where in named.items() if extra not in extras}
    assert not unknown, f"extras named but not in pyproject.toml: {unknown}"
    assert {"gateway", "proxy", "postgres"} <= set(named), sorted(named)


def test_every_install_hint_names_both_forms() -> None:
    from mcp_keys.extras import install_hint

    assert_names_extra(install_hint("mcp"), "mcp")
    elsewhere = [path.name for path, text in sources()
                 if "pip install" in text and path.name != "extras.py"]
    assert not elsewhere, f"install hints written by hand (use extras.install_hint): {elsewhere}"


def test_gateway_extra_brings_what_the_gateway_imports() -> None:
    with (REPO / "pyproject.toml").open("rb") as handle:
        gateway = tomllib.load(handle)["project"]["optional-dependencies"]["gateway"]
    names = {re.split(r"[<>=!;\[ ]", requirement)[0] for requirement in gateway}
    assert {"mcp", "uvicorn"} <= names, names


# -- 9. a bare group prints its help ------------------------------------------------------

@pytest.mark.parametrize("group", [[], ["service"], ["secret"], ["gateway"], ["ca"]])
def test_bare_group_prints_help(group: list[str]) -> None:
    result = run_cli_process(*group)
    output = result.stdout + result.stderr
    lines = output.splitlines()
    assert "Error" not in output and "Traceback" not in output, lines[:2]
    assert lines[0].startswith("Usage: "), lines[:1]
    assert len(lines) > 5 and any(line.startswith("Commands:") for line in lines), len(lines)
    assert result.returncode in (0, 2), result.returncode  # 2 since Click 8.2


# -- 10. --store after every command ------------------------------------------------------

def every_command() -> Iterator[tuple[list[str], click.Command]]:
    def walk(command: click.Command, path: list[str]) -> Iterator[tuple[list[str],
                                                                       click.Command]]:
        yield path, command
        if isinstance(command, click.Group):
            ctx = click.Context(command)
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                assert sub is not None
                yield from walk(sub, [*path, name])

    for path, command in walk(cli, []):
        if path:
            yield path, command


def test_store_is_accepted_after_every_command(tmp_path: Path) -> None:
    refused = []
    for path, command in every_command():
        if not any("--store" in param.opts for param in command.params):
            refused.append(" ".join(path))
            continue
        result = CliRunner().invoke(cli, [*path, "--store", str(tmp_path / "s.json"), "--help"])
        if result.exit_code != 0:
            refused.append(" ".join(path))
    assert not refused, f"--store is refused after: {refused}"


def test_store_after_run_secret_check_client_config_completion(tmp_path: Path) -> None:
    store = str(tmp_path / "elsewhere" / "keys.json")
    ran = run_cli_process("run", "--store", store, "--env", "GREETING=env:FIRST_HOUR", "--",
                          sys.executable, "-c", "import os; print(os.environ['GREETING'])",
                          env={"FIRST_HOUR": "hello"})
    assert ran.returncode == 0 and ran.stdout.strip() == "hello", ran.stderr[-300:]
    runner = CliRunner()
    for args in (["secret", "check", "env:FIRST_HOUR", "--store", store],
                 ["client-config", "cursor", "--url", "https://mcp.example.com/mcp",
                  "--store", store],
                 ["completion", "bash", "--store", store]):
        result = runner.invoke(cli, args, env={"FIRST_HOUR": "hello"})
        assert result.exit_code == 0, f"{args[0]}: {result.stderr}"


# -- 11. audit events: one list for the writers and the filter ----------------------------

def written_events() -> dict[str, str]:
    events: dict[str, str] = {}
    for path, text in sources():
        for pattern in (r"\bappend\(\s*\"([a-z_]+)\"", r"\bevent=\"([a-z_]+)\""):
            for name in re.findall(pattern, text):
                events[name] = path.name
    return events


def test_every_event_the_package_writes_is_in_events() -> None:
    from mcp_keys.audit import EVENTS

    written = written_events()
    assert {"create", "gateway_call", "proxy_blocked"} <= set(written), sorted(written)
    missing = {name: where for name, where in written.items() if name not in EVENTS}
    assert not missing, f"events written but not in audit.EVENTS: {missing}"


def test_audit_event_filter_accepts_every_event(run: Cli) -> None:
    from mcp_keys.audit import EVENTS

    run("init")
    for name in sorted(set(EVENTS) | set(written_events())):
        result = run("audit", "--event", name, "--json")
        assert result.exit_code == 0, name


def test_writer_refuses_an_event_not_in_the_list(manager: KeyManager) -> None:
    manager.init()
    before = list(manager.audit.lines())
    with pytest.raises(ValueError, match=r"not in mcp_keys\.audit\.EVENTS"):
        manager.audit.append("made_up_event")
    assert list(manager.audit.lines()) == before


# -- 12. scan of a path that does not exist ----------------------------------------------

def test_scan_of_a_missing_path_is_a_usage_error(run: Cli, tmp_path: Path) -> None:
    (tmp_path / "real.json").write_text("{}")
    for paths in (["missing.json"], ["real.json", "missing.json"]):
        result = run("scan", *paths)
        assert result.exit_code == 2, paths
        assert "missing.json" in one_error_line(result.stderr)


# -- 13. doctor and list with no store ---------------------------------------------------

def test_doctor_and_list_in_an_empty_folder_say_there_is_no_store(tmp_path: Path) -> None:
    runner = CliRunner()
    doctor = runner.invoke(cli, ["doctor"])
    assert doctor.exit_code == 1
    assert "no store at" in doctor.stdout and str(tmp_path) in doctor.stdout, doctor.stdout
    for args in (["list"], ["list", "--json"]):
        listed = runner.invoke(cli, args)
        assert listed.exit_code == 1, args
        line = one_error_line(listed.stderr)
        assert "no store at" in line and str(tmp_path) in line, line
    fast = subprocess.run(mcp_keys_cmd("list", "--json"), capture_output=True, text=True,
                          check=False, timeout=60)  # the fast path
    assert fast.returncode == 1 and fast.stdout == "", fast.stdout
    assert "no store at" in one_error_line(fast.stderr)
    assert not (tmp_path / ".mcp-keys").exists()


@pytest.mark.parametrize("args", [["show", "abcd"], ["revoke", "abcd"], ["delete", "abcd", "--yes"],
                                  ["rotate", "abcd"], ["sweep"], ["sweep", "--json"], ["audit"],
                                  ["audit", "verify"]])
def test_commands_on_keys_say_there_is_no_store(tmp_path: Path, args: list[str]) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1 and result.stdout == "", args
    line = one_error_line(result.stderr)
    assert "no store at" in line and str(tmp_path) in line, line
    assert list(tmp_path.iterdir()) == [], args


def test_audit_of_a_deleted_store_still_reads_its_trail(run: Cli, store_path: Path) -> None:
    run("create", "svc")
    store_path.unlink()
    assert run("audit", "verify").exit_code == 0
    assert run("audit", "--json").exit_code == 0


def test_list_in_a_subfolder_names_the_parent_store(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    KeyManager(tmp_path / ".mcp-keys" / "keys.json").create("svc")
    (tmp_path / "src").mkdir()
    monkeypatch.chdir(tmp_path / "src")
    for args in (["list"], ["doctor"]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 1, args
        said = result.stderr + result.stdout
        assert str(tmp_path / ".mcp-keys" / "keys.json") in said, said


# -- 14. doctor checks services.toml as the gateway does ---------------------------------

def test_doctor_fails_a_literal_secret_in_services_toml(run: Cli, store_path: Path) -> None:
    literal = "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc"
    run("init")
    run("service", "add", "api", "--base-url", "https://api.example.com", "--auth", "bearer",
        "--secret", "env:UPSTREAM", "--allow", "GET /**")
    good = run("doctor", "--json")
    checks = {c["check"]: c["outcome"] for c in json.loads(good.stdout)}
    assert checks.get("services.toml") == "pass", checks
    services = store_path.parent / "services.toml"
    services.write_text(services.read_text().replace('"env:UPSTREAM"', f'"{literal}"'))
    bad = run("doctor", "--json")
    for output in (bad.stdout, bad.stderr):
        assert_absent(literal, output, "doctor output")
    assert bad.exit_code == 1
    checks = {c["check"]: c["outcome"] for c in json.loads(bad.stdout)}
    assert checks.get("services.toml") == "fail", checks


def test_only_optional_modules_become_one_line() -> None:
    from mcp_keys.extras import install_hint, missing_module

    found = missing_module(ModuleNotFoundError("No module named 'uvicorn'", name="uvicorn"))
    assert found is not None
    assert_names_extra(str(found), "gateway")
    own = ImportError(f"this integration needs FastMCP: {install_hint('fastmcp')}")
    assert str(missing_module(own)) == str(own)
    assert missing_module(ModuleNotFoundError("No module named 'yaml'", name="yaml")) is None
    assert missing_module(ImportError("cannot import name 'x' from 'mcp'")) is None
