"""mcp-keys scan on every client's real config shape (tests/data/configs, with fake
secrets made at test time), zero findings on the placeholder set, JSON and SARIF output,
--fix round trips that leave a server that still starts, and --git-history."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mcp_keys import KeyManager
from tests.conftest import B62, Cli, assert_absent, rand
from tests.secret_servers import KvServer

DATA = Path(__file__).resolve().parent / "data" / "configs"




def fakes(mcp_key: str) -> dict[str, str]:
    return {
        "stripe": "sk_live_" + rand(24), "stripe2": "sk_test_" + rand(24),
        "github": "ghp_" + rand(36), "github2": "github_pat_" + rand(82, B62 + "_"),
        "openai": "sk-proj-" + rand(40), "anthropic": "sk-ant-api03-" + rand(90),
        "slack": "xoxb-" + rand(12, "0123456789") + "-" + rand(24),
        "awsid": "AKIA" + rand(16, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"),
        "awssecret": rand(40, B62 + "/+"), "google": "AIza" + rand(35, B62 + "_-"),
        "generic": rand(32), "password": rand(20), "mcpkey": mcp_key,
    }


PLACES = {
    "claude_desktop_config.json": ".config/Claude/claude_desktop_config.json",
    "claude.json": ".claude.json",
    "cursor-mcp.json": ".cursor/mcp.json",
    "vscode-settings.json": ".config/Code/User/settings.json",
    "windsurf-mcp_config.json": ".codeium/windsurf/mcp_config.json",
}
PROJECT = {"dot-mcp.json": ".mcp.json", "vscode-mcp.json": ".vscode/mcp.json",
           "dot-env": ".env"}
EXPECTED = {
    ("claude_desktop_config.json", "mcpServers.stripe.env.STRIPE_SECRET_KEY",
     "stripe-secret-key"),
    ("claude_desktop_config.json", "mcpServers.github.env.GITHUB_PERSONAL_ACCESS_TOKEN",
     "github-token"),
    (".claude.json", "mcpServers.openai.env.OPENAI_API_KEY", "openai-api-key"),
    (".claude.json", 'projects."/home/me/app".mcpServers.slack.env.SLACK_BOT_TOKEN',
     "slack-token"),
    (".mcp.json", "mcpServers.remote.headers.Authorization", "mcp-keys-key"),
    (".mcp.json", "mcpServers.anthropic.args[1]", "anthropic-api-key"),
    ("mcp.json", "mcpServers.aws.env.AWS_ACCESS_KEY_ID", "aws-access-key-id"),
    ("mcp.json", "mcpServers.aws.env.AWS_SECRET_ACCESS_KEY", "aws-secret-access-key"),
    ("mcp.json", "mcpServers.maps.headers.X-Goog-Api-Key", "google-api-key"),
    ("mcp.json", "servers.internal.headers.Authorization", "generic-bearer"),
    ("settings.json", "mcp.servers.db.env.DATABASE_PASSWORD", "generic-secret"),
    ("mcp_config.json", "mcpServers.stripe-test.env.STRIPE_SECRET_KEY", "stripe-secret-key"),
    (".env", "GITHUB_TOKEN", "github-fine-grained-token"),
}


class Machine:
    """A home directory and a project with every client's config in its real place."""

    def __init__(self, root: Path, store: Path) -> None:
        self.home = root / "home"
        self.project = root / "project"
        self.project.mkdir(parents=True)
        self.store = store
        self.key = KeyManager(store).create("leaked", scopes=["tools:call"])
        self.secrets = fakes(self.key.key)
        for name, place in [*PLACES.items(), *PROJECT.items()]:
            base = self.home if name in PLACES else self.project
            target = base / place
            target.parent.mkdir(parents=True, exist_ok=True)
            text = (DATA / name).read_text()
            for kind, value in self.secrets.items():
                text = text.replace("{{" + kind + "}}", value)
            target.write_text(text)

    def cli(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "HOME": str(self.home), "MCP_KEYS_STORE": str(self.store),
               "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        return subprocess.run([sys.executable, "-m", "mcp_keys", *args], cwd=self.project,
                              env=env, capture_output=True, text=True, input=input,
                              timeout=120, check=False)

    def assert_no_leak(self, *texts: str) -> None:
        for text in texts:
            for value in self.secrets.values():
                assert_absent(value, text, "scan output")


@pytest.fixture
def machine(tmp_path: Path, store_path: Path, monkeypatch: pytest.MonkeyPatch) -> Machine:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "keyring"))
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyrings.alt.file.PlaintextKeyring")
    return Machine(tmp_path, store_path)


def test_default_locations_and_every_client_shape(machine: Machine) -> None:
    done = machine.cli("scan", "--json")
    assert done.returncode == 1
    found = [json.loads(line) for line in done.stdout.splitlines()]
    assert {(Path(f["file"]).name, f["path"], f["kind"]) for f in found} == EXPECTED
    machine.assert_no_leak(done.stdout, done.stderr)
    key = next(f for f in found if f["kind"] == "mcp-keys-key")
    assert key["key_status"] == "active" and key["key_id"] == machine.key.record.id
    assert key["advice"] == f"revoke it: mcp-keys revoke {machine.key.record.id}"
    stripe = next(f for f in found if f["path"].endswith("stripe.env.STRIPE_SECRET_KEY"))
    assert stripe["line"] == 6 and stripe["preview"] == "sk_l… (32 chars)"
    db = next(f for f in found if f["kind"] == "generic-secret")
    assert db["line"] == 9  # comments kept the line numbers right
    text = machine.cli("scan")
    assert text.returncode == 1 and len(text.stdout.splitlines()) == len(EXPECTED)
    machine.assert_no_leak(text.stdout, text.stderr)


def test_no_false_positives_on_placeholders_and_references(tmp_path: Path, run: Cli) -> None:
    clean = tmp_path / "placeholders.json"
    shutil.copy(DATA / "placeholders.json", clean)
    result = run("scan", str(clean))
    assert result.exit_code == 0 and result.stdout == ""
    assert "No secrets found in 1 file." in result.stderr


def test_sarif_is_valid_2_1_0_that_github_accepts(machine: Machine) -> None:
    from sarif_pydantic import Sarif

    done = machine.cli("scan", "--sarif", str(machine.project))
    assert done.returncode == 1
    log = json.loads(done.stdout)
    Sarif.model_validate(log)  # the SARIF 2.1.0 object model
    assert log["version"] == "2.1.0" and log["$schema"].endswith("sarif-2.1.0.json")
    run = log["runs"][0]
    rules = [rule["id"] for rule in run["tool"]["driver"]["rules"]]
    assert run["tool"]["driver"]["name"] == "mcp-keys" and len(run["results"]) == 4
    for result in run["results"]:
        location = result["locations"][0]["physicalLocation"]
        assert not location["artifactLocation"]["uri"].startswith(("/", "file:"))
        assert location["region"]["startLine"] >= 1 and result["message"]["text"]
        assert rules[result["ruleIndex"]] == result["ruleId"]
    machine.assert_no_leak(done.stdout)


def test_fix_moves_secrets_to_the_keychain_and_the_server_still_starts(
        machine: Machine) -> None:
    config = machine.home / ".config" / "Claude" / "claude_desktop_config.json"
    before = config.read_bytes()
    done = machine.cli("scan", str(config), "--fix", "--yes", "--allow-plaintext-keyring")
    assert done.returncode == 0, done.stderr[-500:]
    machine.assert_no_leak(done.stdout, done.stderr, config.read_text())
    backups = Path(os.environ["XDG_STATE_HOME"]) / "mcp-keys" / "backups"
    (backup,) = backups.glob("*claude_desktop_config.json.*.bak")  # not beside the config
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600 and str(backup) in done.stderr
    machine.assert_no_leak(backup.read_text())
    assert machine.cli("scan", str(config)).returncode == 0  # nothing left to find
    servers = json.loads(config.read_text())["mcpServers"]
    assert list(servers) == ["stripe", "github", "filesystem"]  # order kept
    stripe = servers["stripe"]
    assert Path(stripe["command"]).is_absolute() and Path(stripe["command"]).name == "mcp-keys"
    assert stripe["args"][:3] == ["run", "--env",
                                  "STRIPE_SECRET_KEY=keyring:mcp-keys/stripe.STRIPE_SECRET_KEY"]
    assert stripe["args"][3:] == ["--", "npx", "-y", "@stripe/mcp", "--tools=all"]
    assert "env" not in stripe and servers["filesystem"] == json.loads(before)["mcpServers"][
        "filesystem"]


def test_a_fixed_entry_launches_a_real_stdio_server(machine: Machine) -> None:
    from mcp import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    config = machine.project / ".cursor" / "mcp.json"
    config.parent.mkdir()
    value = machine.secrets["stripe"]
    server = Path(__file__).resolve().parent / "data" / "stdio_server.py"
    config.write_text(json.dumps({"mcpServers": {"stripe": {
        "command": sys.executable, "args": [str(server)],
        "env": {"STRIPE_SECRET_KEY": value}}}}, indent=2) + "\n")
    assert machine.cli("scan", str(config), "--fix", "--yes",
                       "--allow-plaintext-keyring").returncode == 0
    entry = json.loads(config.read_text())["mcpServers"]["stripe"]

    async def call() -> str:
        params = StdioServerParameters(command=entry["command"], args=entry["args"], env={
            "PATH": os.environ["PATH"], "HOME": str(machine.home),
            "XDG_DATA_HOME": os.environ["XDG_DATA_HOME"],
            "PYTHON_KEYRING_BACKEND": "keyrings.alt.file.PlaintextKeyring"})
        async with stdio_client(params) as (read, write), \
                ClientSession(read, write) as session:
            await session.initialize()
            answer = await session.call_tool("has_value", {
                "name": "STRIPE_SECRET_KEY",
                "fingerprint": hashlib.sha256(value.encode()).hexdigest()})
            return str(answer.content[0].text)  # type: ignore[union-attr]

    assert asyncio.run(call()) == "true"


def test_fix_into_a_dotenv_file_and_env_ref_style(machine: Machine) -> None:
    config = machine.home / ".cursor" / "mcp.json"
    target = machine.home / "secrets.env"
    done = machine.cli("scan", str(config), "--fix", "--yes", "--to", f"dotenv:{target}",
                       "--style", "env-ref")
    assert done.returncode == 0, done.stderr[-500:]
    fixed = json.loads(config.read_text())["mcpServers"]
    assert fixed["aws"]["env"]["AWS_ACCESS_KEY_ID"] == "${env:AWS_ACCESS_KEY_ID}"
    assert fixed["maps"]["headers"]["X-Goog-Api-Key"] == "${env:MAPS_X_GOOG_API_KEY}"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    from dotenv import dotenv_values

    stored = dotenv_values(target)
    assert stored["AWS_ACCESS_KEY_ID"] == machine.secrets["awsid"]
    assert stored["MAPS_X_GOOG_API_KEY"] == machine.secrets["google"]
    machine.assert_no_leak(done.stdout, done.stderr, config.read_text())


def test_fix_into_vault(machine: Machine, vault: KvServer) -> None:
    config = machine.home / ".codeium" / "windsurf" / "mcp_config.json"
    done = machine.cli("scan", str(config), "--fix", "--yes", "--to", "vault:secret/mcp")
    assert done.returncode == 0, done.stderr[-500:]
    assert vault.secrets["secret/mcp/stripe-test"] == {
        "STRIPE_SECRET_KEY": machine.secrets["stripe2"]}
    args = json.loads(config.read_text())["mcpServers"]["stripe-test"]["args"]
    assert args[2] == "STRIPE_SECRET_KEY=vault:secret/mcp/stripe-test#STRIPE_SECRET_KEY"


def test_fix_without_a_keychain_says_what_to_use_instead(machine: Machine) -> None:
    config = machine.home / ".claude.json"
    before = config.read_bytes()
    env = {**os.environ, "HOME": str(machine.home), "PYTHON_KEYRING_BACKEND":
           "keyring.backends.fail.Keyring"}
    done = subprocess.run([sys.executable, "-m", "mcp_keys", "scan", str(config), "--fix",
                           "--yes"], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 1 and "--to dotenv:PATH" in done.stderr
    assert config.read_bytes() == before
    machine.assert_no_leak(done.stdout, done.stderr)


def test_git_history_reports_the_commit_that_added_a_secret(machine: Machine) -> None:
    repo = machine.project
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True,
                              text=True, check=True,
                              env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL":
                                   "t@t", "GIT_COMMITTER_NAME": "t",
                                   "GIT_COMMITTER_EMAIL": "t@t"}).stdout.strip()

    git("init", "-q")
    git("add", ".mcp.json")
    git("commit", "-qm", "add config")
    first = git("rev-parse", "HEAD")
    (repo / ".mcp.json").write_text('{"mcpServers": {}}\n')
    git("commit", "-qam", "remove the secret")
    done = machine.cli("scan", str(repo / ".mcp.json"), "--git-history", "--json")
    found = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 1 and {f["commit"] for f in found} == {first}
    assert {f["kind"] for f in found} == {"mcp-keys-key", "anthropic-api-key"}
    machine.assert_no_leak(done.stdout, done.stderr)


def test_pre_commit_hook_is_shipped() -> None:
    hooks = (Path(__file__).resolve().parent.parent / ".pre-commit-hooks.yaml").read_text()
    assert "- id: mcp-keys-scan" in hooks and "entry: mcp-keys scan" in hooks
    assert "pass_filenames: true" in hooks


def test_fix_writes_through_a_symlinked_config(machine: Machine) -> None:
    real = machine.home / "dotfiles" / "claude.json"
    real.parent.mkdir()
    link = machine.home / ".claude.json"
    link.rename(real)
    link.symlink_to(real)
    done = machine.cli("scan", str(link), "--fix", "--yes", "--allow-plaintext-keyring")
    assert done.returncode == 0, done.stderr[-300:]
    assert link.is_symlink() and machine.cli("scan", str(real)).returncode == 0
