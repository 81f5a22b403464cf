"""``scan --fix`` beyond ``env``: secrets in ``args`` and URLs, ``${NAME}`` in ``mcp-keys
run`` arguments, a file that cannot be fixed among others, a plaintext keyring refused,
and an mcp-keys key that stays active after it moved. Every command runs in a real
subprocess; every output is searched for every secret."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcp_keys import KeyManager
from mcp_keys.secrets import Secret
from tests.conftest import assert_absent, rand

PLAINTEXT = "keyrings.alt.file.PlaintextKeyring"
ARGV_REPORTER = ("import hashlib, json, sys; print(json.dumps("
                 "[hashlib.sha256(a.encode()).hexdigest() for a in sys.argv[1:]]))")


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Home:
    """A home and a project folder; the CLI runs in a subprocess with a file keyring."""

    def __init__(self, root: Path, store: Path, backend: str = PLAINTEXT) -> None:
        self.root = root
        self.home = root / "home"
        self.project = root / "project"
        self.project.mkdir(parents=True)
        self.home.mkdir()
        self.store = store
        self.backend = backend
        self.secrets: list[str] = []

    def secret(self, value: str) -> str:
        self.secrets.append(value)
        return value

    def env(self) -> dict[str, str]:
        return {**os.environ, "HOME": str(self.home), "MCP_KEYS_STORE": str(self.store),
                "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
                "XDG_DATA_HOME": str(self.root / "keyring"),
                "PYTHON_KEYRING_BACKEND": self.backend}

    def cli(self, *args: str, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([sys.executable, "-m", "mcp_keys", *args], cwd=self.project,
                              env={**self.env(), **(env or {})}, capture_output=True,
                              text=True, timeout=120, check=False)
        self.no_leak(done.stdout, done.stderr)
        return done

    def no_leak(self, *texts: str) -> None:
        for text in texts:
            for value in self.secrets:
                assert_absent(value, text, "output or file")

    def write(self, relative: str, document: object) -> Path:
        path = self.project / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document, indent=2) + "\n")
        return path


@pytest.fixture
def home(tmp_path: Path, store_path: Path) -> Home:
    return Home(tmp_path, store_path)


# --- ${NAME} in mcp-keys run arguments -------------------------------------------------

@pytest.mark.parametrize("mask", [False, True], ids=["exec", "mask"])
def test_run_expands_only_names_it_binds_in_arguments(home: Home, mask: bool) -> None:
    value = home.secret("sk_live_" + rand(24))
    unrelated = home.secret("ghp_" + rand(36))
    args = ["${KEY}", "--api-key=${KEY}", "${UNRELATED}", "${HOME}", "$${KEY}", "$$${KEY}",
            "${KEY", "$KEY", "${env:KEY}"]
    done = subprocess.run(
        [str(Path(sys.executable).parent / "mcp-keys"), "run", "--env", "KEY=env:SOURCE",
         *(["--mask"] if mask else []), "--", sys.executable, "-c", ARGV_REPORTER, *args],
        env={**home.env(), "SOURCE": value, "UNRELATED": unrelated}, capture_output=True,
        text=True, timeout=60, check=False)
    assert done.returncode == 0, "run failed"
    got = json.loads(done.stdout)
    expected = [value, "--api-key=" + value, "${UNRELATED}", "${HOME}", "${KEY}", "$${KEY}",
                "${KEY", "$KEY", "${env:KEY}"]
    assert got == [digest(e) for e in expected], "argument expansion differs"
    home.no_leak(done.stderr)


def test_run_does_not_expand_the_program_itself(home: Home, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "mcp_keys", "run", "--env", "KEY=env:SOURCE",
                           "--", "${KEY}"], env={**home.env(), "SOURCE": sys.executable},
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1 and "cannot run ${KEY}" in done.stderr


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet="${}KEYAB_x", max_size=14), max_size=4))
def test_escaped_arguments_come_back_unchanged(arguments: list[str]) -> None:
    from mcp_keys.launch import escape_arguments, expand_arguments

    resolved = {"KEY": Secret("value", "env:K"), "KEY_B": Secret("other", "env:B")}
    escaped = escape_arguments(arguments, resolved)
    assert expand_arguments(["prog", *escaped], resolved)[1:] == arguments


# --- --fix on args and URLs -----------------------------------------------------------

def test_fix_moves_a_secret_argument_into_run(home: Home) -> None:
    anthropic = home.secret("sk-ant-api03-" + rand(90))
    github = home.secret("ghp_" + rand(36))
    config = home.write(".mcp.json", {"mcpServers": {
        "anthropic": {"command": "python", "args": [
            "server.py", f"--api-key={anthropic}", "--literal=${ANTHROPIC_API_KEY}"]},
        "gh": {"command": "gh-mcp", "args": ["--token", github, "--verbose"]}}})
    done = home.cli("scan", str(config), "--fix", "--yes", "--allow-plaintext-keyring")
    assert done.returncode == 0, done.stderr[-600:]
    servers = json.loads(config.read_text())["mcpServers"]
    entry = servers["anthropic"]
    assert Path(entry["command"]).name == "mcp-keys"
    assert entry["args"] == [
        "run", "--env", "ANTHROPIC_API_KEY=keyring:mcp-keys/anthropic.ANTHROPIC_API_KEY",
        "--", "python", "server.py", "--api-key=${ANTHROPIC_API_KEY}",
        "--literal=$${ANTHROPIC_API_KEY}"]  # a literal stays literal under run
    assert servers["gh"]["args"][1:] == ["--env", "GH_TOKEN=keyring:mcp-keys/gh.GH_TOKEN",
                                         "--", "gh-mcp", "--token", "${GH_TOKEN}", "--verbose"]
    assert "/proc/PID/cmdline" in done.stderr  # argv is visible on the host: said
    assert home.cli("scan", str(config)).returncode == 0  # nothing left to report
    home.no_leak(config.read_text())


@pytest.mark.parametrize(("place", "key", "expected"), [
    (".mcp.json", "url", "https://mcp.example.com/v1/mcp?api_key=${REMOTE_API_KEY}&x=1"),
    (".cursor/mcp.json", "url",
     "https://mcp.example.com/v1/mcp?api_key=${env:REMOTE_API_KEY}&x=1"),
    (".codeium/windsurf/mcp_config.json", "serverUrl",
     "https://mcp.example.com/v1/mcp?api_key=${env:REMOTE_API_KEY}&x=1"),
], ids=["claude-code", "cursor", "windsurf"])
def test_fix_moves_a_key_out_of_a_url_in_the_clients_syntax(
        home: Home, place: str, key: str, expected: str) -> None:
    value = home.secret("sk_live_" + rand(24))
    config = home.write(place, {"mcpServers": {"remote": {
        key: f"https://mcp.example.com/v1/mcp?api_key={value}&x=1"}}})
    done = home.cli("scan", str(config), "--fix", "--yes", "--allow-plaintext-keyring")
    assert done.returncode == 0, done.stderr[-600:]
    assert json.loads(config.read_text())["mcpServers"]["remote"][key] == expected
    ref = "keyring:mcp-keys/remote.REMOTE_API_KEY"
    assert f"start it with: mcp-keys run --env REMOTE_API_KEY={ref} -- " in done.stderr


def test_every_credential_of_one_url_moves_to_its_own_variable(home: Home) -> None:
    """The walk reports a URL once; --fix moves each credential in it (the password, a key
    in a path segment, a random value under a key-named query parameter), so a second
    scan finds nothing and each variable reads back the value it replaced."""
    password = home.secret("p4ss" + rand(16))
    key = home.secret("sk_live_" + rand(24))
    api_key = home.secret(rand(32))
    config = home.write(".mcp.json", {"mcpServers": {"remote": {
        "url": f"https://app:{password}@mcp.example.com/v1/{key}/mcp?apiKey={api_key}&x=1"}}})
    done = home.cli("scan", str(config), "--fix", "--yes", "--allow-plaintext-keyring")
    assert done.returncode == 0, done.stderr[-600:]
    assert json.loads(config.read_text())["mcpServers"]["remote"]["url"] == (
        "https://app:${REMOTE_PASSWORD}@mcp.example.com/v1/${REMOTE_SECRET}/mcp"
        "?apiKey=${REMOTE_APIKEY}&x=1")
    assert home.cli("scan", str(config)).returncode == 0  # nothing left to report
    home.no_leak(config.read_text())
    for variable, value in (("REMOTE_PASSWORD", password), ("REMOTE_SECRET", key),
                            ("REMOTE_APIKEY", api_key)):
        read = home.cli("run", "--env", f"V=keyring:mcp-keys/remote.{variable}", "--",
                        sys.executable, "-c", "import hashlib, os; print(hashlib.sha256("
                        "os.environ['V'].encode()).hexdigest())")
        assert read.returncode == 0 and read.stdout.strip() == digest(value), variable


def test_claude_desktop_remote_entry_goes_through_run_and_mcp_remote(home: Home) -> None:
    token = home.secret("ghp_" + rand(36))
    key = home.secret("sk_live_" + rand(24))
    config = home.write("claude_desktop_config.json", {"mcpServers": {"remote": {
        "url": f"https://mcp.example.com/mcp?key={key}",
        "headers": {"Authorization": f"Bearer {token}"}}}})
    done = home.cli("scan", str(config), "--fix", "--yes", "--allow-plaintext-keyring")
    assert done.returncode == 0, done.stderr[-600:]
    entry = json.loads(config.read_text())["mcpServers"]["remote"]
    assert Path(entry["command"]).name == "mcp-keys" and "url" not in entry
    args = entry["args"]
    assert args[args.index("--") + 1:] == [
        "npx", "-y", "mcp-remote", "https://mcp.example.com/mcp?key=${REMOTE_KEY}",
        "--header", "Authorization:Bearer $${REMOTE_AUTHORIZATION}"]
    assert "REMOTE_KEY=keyring:mcp-keys/remote.REMOTE_KEY" in args
    assert "REMOTE_AUTHORIZATION=keyring:mcp-keys/remote.REMOTE_AUTHORIZATION" in args


# --- a file that cannot be fixed --------------------------------------------------------

def test_a_file_that_cannot_be_fixed_does_not_stop_the_others(home: Home) -> None:
    first = home.secret("sk_live_" + rand(24))
    second = home.secret("ghp_" + rand(36))
    commented = home.project / "a" / "mcp.json"
    commented.parent.mkdir()
    commented.write_text('{\n  // the stripe server\n  "mcpServers": {"stripe": {"command": '
                         f'"npx", "env": {{"STRIPE_SECRET_KEY": "{first}"}}}}}}\n}}\n')
    before = commented.read_bytes()
    plain = home.write("b/mcp.json", {"mcpServers": {"gh": {
        "command": "gh-mcp", "env": {"GITHUB_TOKEN": second}}}})
    done = home.cli("scan", str(commented), str(plain), "--fix", "--yes",
                    "--allow-plaintext-keyring")
    assert done.returncode == 1  # something is left
    assert f"Not fixed: {commented} has comments; fix it by hand" in done.stderr
    assert commented.read_bytes() == before
    assert "GITHUB_TOKEN=keyring:" in plain.read_text()
    assert f"{commented}:" in done.stdout and str(plain) not in done.stdout


# --- the keyring backend ----------------------------------------------------------------

@pytest.mark.parametrize(("backend", "writer"), [
    (PLAINTEXT, PLAINTEXT), ("keyring.backends.null.Keyring", "keyring.backends.null.Keyring"),
    ("keyring.backends.chainer.ChainerBackend", PLAINTEXT)], ids=["plaintext", "null", "chain"])
def test_fix_refuses_a_keyring_that_stores_in_plaintext(
        tmp_path: Path, store_path: Path, backend: str, writer: str) -> None:
    home = Home(tmp_path, store_path, backend)
    value = home.secret("sk_live_" + rand(24))
    config = home.write(".mcp.json", {"mcpServers": {"stripe": {
        "command": "npx", "env": {"STRIPE_SECRET_KEY": value}}}})
    before = config.read_bytes()
    done = home.cli("scan", str(config), "--fix", "--yes")
    assert done.returncode == 1
    assert f"keyring: {writer} " in done.stderr and "--allow-plaintext-keyring" in done.stderr
    assert config.read_bytes() == before
    assert not (tmp_path / "keyring").exists()  # nothing written to the plaintext file
    if writer == PLAINTEXT:
        assert "plaintext file" in done.stderr
        allowed = home.cli("scan", str(config), "--fix", "--yes", "--allow-plaintext-keyring")
        assert allowed.returncode == 0 and "STRIPE_SECRET_KEY=keyring:" in config.read_text()


def test_the_os_keychains_count_as_encrypting() -> None:
    from keyring.backends import SecretService, libsecret

    from mcp_keys.secrets.sources.keyring import plaintext_reason

    for backend in (SecretService.Keyring, libsecret.Keyring):
        assert plaintext_reason(backend()) is None


def test_secret_set_still_writes_the_keychain_the_user_named(home: Home) -> None:
    value = home.secret("sk_live_" + rand(24))
    done = subprocess.run([sys.executable, "-m", "mcp_keys", "secret", "set",
                           "keyring:mcp-keys/x"], input=value + "\n", env=home.env(),
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-300:]


# --- an mcp-keys key that moved ---------------------------------------------------------

def test_a_moved_mcp_keys_key_is_said_to_be_active_with_the_rotate_command(
        home: Home) -> None:
    issued = KeyManager(home.store).create("leaked", scopes=["tools:call"])
    home.secret(issued.key)
    config = home.write(".mcp.json", {"mcpServers": {"remote": {
        "type": "http", "url": "https://mcp.example.com/mcp",
        "headers": {"Authorization": f"Bearer {issued.key}"}}}})
    target = home.project / "secrets.env"
    done = home.cli("scan", str(config), "--fix", "--yes", "--to", f"dotenv:{target}")
    assert done.returncode == 0, done.stderr[-600:]
    key_id = issued.record.id
    assert f"mcp-keys key {key_id} is still active" in done.stderr
    line = next(x for x in done.stderr.splitlines() if "Retire it: " in x)
    command = shlex.split(line.partition("Retire it: ")[2])
    assert command[:2] == ["mcp-keys", "--store"] and f"rotate {key_id}" in line
    manager = KeyManager(home.store)
    assert manager.get(key_id).status.value == "active"  # still valid until rotated
    rotated = subprocess.run([sys.executable, "-m", "mcp_keys", *command[1:]], env=home.env(),
                             capture_output=True, text=True, timeout=60, check=False)
    assert rotated.returncode == 0
    old = manager.get(key_id)
    assert old.status.value == "revoked" and old.rotated_to  # the old value is retired
    from dotenv import dotenv_values

    new = dotenv_values(target)["REMOTE_AUTHORIZATION"]
    assert new and f"_{old.rotated_to}_" in new  # the new key is where the entry reads it


# --- two servers of the same name -------------------------------------------------------

ENV_REPORTER = ("import hashlib, os; "
                "print(hashlib.sha256(os.environ['STRIPE_SECRET_KEY'].encode()).hexdigest())")


@pytest.mark.parametrize("to", ["keyring", "dotenv"])
def test_a_server_of_the_same_name_in_another_file_keeps_its_own_value(
        home: Home, to: str) -> None:
    values = [home.secret("sk_live_" + rand(24)) for _ in range(2)]
    configs = [home.write(place, {"mcpServers": {"stripe": {
        "command": sys.executable, "args": ["-c", ENV_REPORTER],
        "env": {"STRIPE_SECRET_KEY": value}}}})
        for place, value in zip((".cursor/mcp.json", ".mcp.json"), values, strict=True)]
    destination = "keyring" if to == "keyring" else f"dotenv:{home.root / 'moved.env'}"
    for _ in range(2):  # a second --fix of fixed files changes nothing
        done = home.cli("scan", *map(str, configs), "--fix", "--yes", "--to", destination,
                        "--allow-plaintext-keyring")
        assert done.returncode == 0, done.stderr[-600:]
    for config, value in zip(configs, values, strict=True):
        entry = json.loads(config.read_text())["mcpServers"]["stripe"]
        launched = subprocess.run([entry["command"], *entry["args"]], env=home.env(),
                                  capture_output=True, text=True, timeout=60, check=False)
        assert launched.stdout.strip() == digest(value), f"{config.name}: another value"


def test_an_unknown_destination_is_a_usage_error_and_changes_nothing(home: Home) -> None:
    value = home.secret("sk_live_" + rand(24))
    config = home.write(".mcp.json", {"mcpServers": {"stripe": {
        "command": "npx", "env": {"STRIPE_SECRET_KEY": value}}}})
    before = config.read_bytes()
    done = home.cli("scan", str(config), "--fix", "--yes", "--to", "s3:bucket")
    assert done.returncode == 2 and "--to 's3:bucket'" in done.stderr
    assert config.read_bytes() == before


FAKE_MCP_REMOTE = r'''#!PYTHON
import hashlib, json, os, re, sys
header = sys.argv[sys.argv.index("--header") + 1]
expanded = re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: os.environ.get(m.group(1), ""),
                  header)  # what mcp-remote does with --header
print(json.dumps({"argv": hashlib.sha256(header.encode()).hexdigest(),
                  "sent": hashlib.sha256(expanded.encode()).hexdigest()}))
'''


def test_an_mcp_remote_header_is_left_for_mcp_remote_to_expand(home: Home) -> None:
    token = home.secret("ghp_" + rand(36))
    bin_dir = home.root / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "mcp-remote"
    fake.write_text(FAKE_MCP_REMOTE.replace("PYTHON", sys.executable))
    fake.chmod(0o755)
    config = home.write("claude_desktop_config.json", {"mcpServers": {"gh": {
        "command": "mcp-remote", "args": ["https://mcp.example.com/mcp", "--header",
                                          f"Authorization:Bearer {token}"]}}})
    done = home.cli("scan", str(config), "--fix", "--yes", "--allow-plaintext-keyring")
    assert done.returncode == 0, done.stderr[-600:]
    assert "/proc/PID/cmdline" not in done.stderr  # the value never reaches argv
    entry = json.loads(config.read_text())["mcpServers"]["gh"]
    assert entry["args"][-2:] == ["--header", "Authorization:Bearer $${GH_HEADER}"]
    launched = subprocess.run([entry["command"], *entry["args"]],
                              env={**home.env(), "PATH": f"{bin_dir}:{home.env()['PATH']}"},
                              capture_output=True, text=True, timeout=60, check=False)
    assert launched.returncode == 0, "the fixed entry did not start"
    report = json.loads(launched.stdout)
    assert report["argv"] == digest("Authorization:Bearer ${GH_HEADER}")
    assert report["sent"] == digest(f"Authorization:Bearer {token}"), "header differs"


def test_a_launch_without_placeholders_does_not_import_re(home: Home) -> None:
    def imported(*args: str) -> set[str]:
        done = subprocess.run([sys.executable, "-X", "importtime", "-m", "mcp_keys", "run",
                               "--env", "KEY=env:SOURCE", "--", "true", *args],
                              env={**home.env(), "SOURCE": "x" * 20}, capture_output=True,
                              text=True, timeout=60, check=False)
        assert done.returncode == 0
        return {line.rpartition("|")[2].strip() for line in done.stderr.splitlines()}

    assert "re" not in imported("--plain")  # the launch budget: no regex module
    assert "re" in imported("--key=${KEY}")
