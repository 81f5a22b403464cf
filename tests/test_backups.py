"""Backups never keep a plaintext secret in the project: ``scan --fix`` and
``client-config --write`` back up to a private per-user directory with the moved values
redacted; ``scan`` reads every file it is given and ``--git-history`` every path."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mcp_keys import backups
from mcp_keys.errors import UnsafeFile
from tests.conftest import assert_absent, rand


def stripe() -> str:
    return "sk_live_" + rand(24)


def github() -> str:
    return "ghp_" + rand(36)


class Setup:
    """A home, a project and a state directory, and the CLI run in the project."""

    def __init__(self, root: Path) -> None:
        self.home = root / "home"
        self.project = root / "project"
        self.state = root / "state"
        for folder in (self.home, self.project):
            folder.mkdir()
        self.env = {**os.environ, "HOME": str(self.home), "XDG_STATE_HOME": str(self.state),
                    "XDG_DATA_HOME": str(root / "keyring"),
                    "PYTHON_KEYRING_BACKEND": "keyrings.alt.file.PlaintextKeyring",
                    "MCP_KEYS_STORE": str(root / "store" / "keys.json"),
                    "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}

    @property
    def backups(self) -> Path:
        return self.state / "mcp-keys" / "backups"

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mcp_keys", *args], cwd=self.project,
                              env=self.env, capture_output=True, text=True, timeout=120,
                              check=False)

    def project_bytes(self) -> bytes:
        return b"".join(p.read_bytes() for p in sorted(self.project.rglob("*"))
                        if p.is_file() and ".git" not in p.parts)


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    return Setup(tmp_path)


def test_scan_fix_keeps_a_redacted_backup_outside_the_project(setup: Setup) -> None:
    key, token = stripe(), github()
    config = setup.project / ".cursor" / "mcp.json"
    config.parent.mkdir()
    original = {"mcpServers": {
        "stripe": {"command": "npx", "args": ["-y", "@stripe/mcp"],
                   "env": {"STRIPE_SECRET_KEY": key}},
        "gh": {"url": "https://example.com/mcp", "headers": {"Authorization": f"Bearer {token}"}}}}
    config.write_text(json.dumps(original, indent=2) + "\n")
    done = setup.cli("scan", str(config), "--fix", "--yes", "--allow-plaintext-keyring")
    assert done.returncode == 0, "scan --fix failed"
    for secret in (key, token):
        assert_absent(secret, setup.project_bytes(), "the project after --fix")
        assert_absent(secret, done.stdout + done.stderr, "scan --fix output")
    assert sorted(p.name for p in config.parent.iterdir()) == ["mcp.json"], "no .bak beside"
    (backup,) = setup.backups.iterdir()
    assert stat.S_IMODE(setup.backups.stat().st_mode) == 0o700
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert re.fullmatch(r".*project_\.cursor_mcp\.json\.\d{8}T\d{12}Z\.bak", backup.name), \
        backup.name
    assert str(backup) in done.stderr, "the CLI says where the backup went"
    for secret in (key, token):
        assert_absent(secret, backup.read_bytes(), "the backup")
    redacted = json.loads(backup.read_text())
    assert redacted["mcpServers"]["stripe"]["env"]["STRIPE_SECRET_KEY"] == \
        "<redacted: moved to keyring:mcp-keys/stripe.STRIPE_SECRET_KEY>"
    assert redacted["mcpServers"]["gh"]["headers"]["Authorization"] == \
        "Bearer <redacted: moved to keyring:mcp-keys/gh.GH_AUTHORIZATION>"
    assert redacted["mcpServers"]["stripe"]["args"] == ["-y", "@stripe/mcp"], \
        "the rest of the backup is the old file"


def test_a_secret_spelled_with_escapes_is_redacted_too(setup: Setup) -> None:
    key = stripe()
    spelled = "".join(f"\\u{ord(c):04x}" for c in key)  # valid JSON, not json.dumps's spelling
    config = setup.project / ".mcp.json"
    config.write_text('{"mcpServers": {"s": {"command": "x", "env": {"STRIPE_SECRET_KEY": "'
                      + spelled + '"}}}}\n')
    done = setup.cli("scan", str(config), "--fix", "--yes", "--allow-plaintext-keyring")
    assert done.returncode == 0, "scan --fix failed"
    (backup,) = setup.backups.iterdir()
    text = backup.read_text()
    assert spelled not in text and key not in json.dumps(json.loads(text))
    assert "<redacted: moved to keyring:" in text


def test_client_config_write_backs_up_outside_the_project_redacted(setup: Setup) -> None:
    token = github()
    config = setup.project / ".cursor" / "mcp.json"
    config.parent.mkdir()
    config.write_text(json.dumps({"mcpServers": {"gh": {
        "command": "gh-mcp", "env": {"GITHUB_TOKEN": token}}}}, indent=2))
    done = setup.cli("client-config", "cursor", "--url", "https://mcp.example.com/mcp",
                     "--name", "notes", "--write")
    assert done.returncode == 0, "client-config --write failed"
    assert sorted(p.name for p in config.parent.iterdir()) == ["mcp.json"], "no .bak beside"
    assert json.loads(config.read_text())["mcpServers"]["gh"]["env"]["GITHUB_TOKEN"] == token
    (backup,) = setup.backups.iterdir()
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600 and str(backup) in done.stderr
    assert_absent(token, backup.read_bytes(), "the client-config backup")
    assert json.loads(backup.read_text())["mcpServers"]["gh"]["env"]["GITHUB_TOKEN"] \
        .startswith("<redacted: a hard-coded secret, still in ")
    assert_absent(token, done.stdout + done.stderr, "client-config output")


def test_client_config_will_not_replace_an_entry_whose_secret_would_be_lost(
        setup: Setup) -> None:
    token = github()
    config = setup.project / ".cursor" / "mcp.json"
    config.parent.mkdir()
    config.write_text(json.dumps({"mcpServers": {"notes": {
        "url": "https://old.example.com", "headers": {"Authorization": f"Bearer {token}"}}}}))
    before = config.read_bytes()
    done = setup.cli("client-config", "cursor", "--url", "https://mcp.example.com/mcp",
                     "--name", "notes", "--write")
    assert done.returncode == 1 and "scan --fix" in done.stderr
    assert config.read_bytes() == before and not setup.backups.exists()
    assert_absent(token, done.stdout + done.stderr, "the refusal")


def test_the_backup_directory_defaults_to_local_state(monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for value in (None, "relative/state"):  # the XDG spec ignores a relative path
        if value is None:
            monkeypatch.delenv("XDG_STATE_HOME", raising=False)
        else:
            monkeypatch.setenv("XDG_STATE_HOME", value)
        assert backups.backup_dir() == tmp_path / "home" / ".local" / "state" / "mcp-keys" \
            / "backups"
    monkeypatch.delenv("XDG_STATE_HOME")
    (tmp_path / "home").mkdir(mode=0o700)
    path = backups.write_backup(tmp_path / "p" / "mcp.json", b"{}")
    assert path.parent == backups.backup_dir() and path.read_bytes() == b"{}"
    for folder in (path.parent, path.parent.parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_a_symlinked_backup_directory_is_refused(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "state" / "mcp-keys").mkdir(parents=True)
    (tmp_path / "state" / "mcp-keys" / "backups").symlink_to(elsewhere)
    with pytest.raises(UnsafeFile) as info:
        backups.write_backup(tmp_path / "mcp.json", b"{}")
    assert "symlink" in str(info.value) and list(elsewhere.iterdir()) == []


def test_a_backup_directory_owned_by_someone_else_is_refused(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("chown needs root (CI runs as root)")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    directory = backups.backup_dir()
    directory.mkdir(parents=True, mode=0o700)
    os.chown(directory, 1, 1)
    with pytest.raises(UnsafeFile) as info:
        backups.write_backup(tmp_path / "mcp.json", b"{}")
    assert "owned by uid 1" in str(info.value) and list(directory.iterdir()) == []


def test_a_loose_directory_is_tightened_and_a_planted_link_is_never_followed(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    directory = backups.backup_dir()
    directory.mkdir(parents=True)
    directory.chmod(0o755)
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (directory / backups.backup_name(tmp_path / "mcp.json", now)).symlink_to(victim)
    path = backups.write_backup(tmp_path / "mcp.json", b"new", now=now)
    assert victim.read_text() == "keep" and path.read_bytes() == b"new"
    assert not path.is_symlink() and stat.S_IMODE(directory.stat().st_mode) == 0o700


JSONC = ('// my backup\n{"mcpServers": {"s": {"command": "x", '
         '"env": {"STRIPE_SECRET_KEY": "%s"}}}}\n')
ODD_NAMES = ["mcp.json.bak", "mcp.json.20261202T101010Z.bak", ".mcp.json.orig", "config",
             ".hidden", "settings.json~", "claude.backup"]


@pytest.mark.parametrize("name", ODD_NAMES)
def test_scan_reads_a_file_given_whatever_its_name(setup: Setup, name: str) -> None:
    key = stripe()
    path = setup.project / name
    path.write_text(JSONC % key)
    done = setup.cli("scan", str(path), "--json")
    found = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 1 and [f["kind"] for f in found] == ["stripe-secret-key"], name
    assert_absent(key, done.stdout + done.stderr, "scan output")


def test_a_folder_walk_does_not_skip_backup_like_names(setup: Setup) -> None:
    folder = setup.project / "configs"
    folder.mkdir()
    keys = {}
    for name in ODD_NAMES:
        keys[name] = stripe()
        (folder / name).write_text(JSONC.replace("// my backup\n", "") % keys[name])
    token = github()
    (folder / ".env.bak").write_text(f"GITHUB_TOKEN={token}\n")
    (folder / "prod.env~").write_text(f"GITHUB_TOKEN={token}\n")
    done = setup.cli("scan", str(folder), "--json")
    found = {Path(json.loads(line)["file"]).name for line in done.stdout.splitlines()}
    assert found == {*ODD_NAMES, ".env.bak", "prod.env~"}, sorted(found)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          check=True, env={**os.environ, "GIT_AUTHOR_NAME": "t",
                                           "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                                           "GIT_COMMITTER_EMAIL": "t@t"}).stdout.strip()


def test_git_history_covers_every_path(setup: Setup) -> None:
    repo = setup.project
    git(repo, "init", "-q")
    (repo / "clean.json").write_text("{}\n")
    files = {
        "mcp.json.bak": (JSONC % "{}").replace("// my backup\n", ""),
        "deploy/creds": "STRIPE_KEY={}\n",
        "src/settings.py": 'import os\nSTRIPE_KEY = "{}"\ntoken = compute_token_for(user_id)\n',
        "odd dir/ü\tname~": (JSONC % "{}"),
        "notes.md": "rotate `{}` tomorrow\nAPI_TOKEN={}\n",
    }
    keys = {}
    for name, template in files.items():
        keys[name] = stripe()
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(template.replace("{}", keys[name]))
    (repo / "blob.bin").write_bytes(b"\0\1\2" + stripe().encode())
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "add")
    first = git(repo, "rev-parse", "HEAD")
    git(repo, "rm", "-q", "-r", "--", *files, "blob.bin")
    git(repo, "commit", "-qm", "remove")
    done = setup.cli("scan", str(repo / "clean.json"), "--git-history", "--json")
    found = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 1
    assert {f["file"] for f in found} == set(files), sorted(f["file"] for f in found)
    assert {f["commit"] for f in found} == {first}
    assert all(f["kind"] == "stripe-secret-key" for f in found), \
        "code that merely looks like a secret is not reported"
    for key in keys.values():
        assert_absent(key, done.stdout + done.stderr, "scan --git-history output")


def test_a_file_given_is_scanned_in_utf16_or_said_to_be_skipped(setup: Setup) -> None:
    key = stripe()
    utf16 = setup.project / "exported"
    utf16.write_bytes((JSONC % key).encode("utf-16"))  # with its byte-order mark
    huge = setup.project / "huge.json"
    huge.write_bytes(b" " * (6 * 1024 * 1024) + b"{}")
    done = setup.cli("scan", str(utf16), str(huge), "--json")
    found = [json.loads(line) for line in done.stdout.splitlines()]
    assert [f["kind"] for f in found] == ["stripe-secret-key"]
    assert f"{huge} was not scanned" in done.stderr, "a skipped file is not silent"


def test_source_files_named_env_are_not_walked_as_env_files(setup: Setup) -> None:
    (setup.project / "env.py").write_text('token = compute_the_token_for(user)\n')
    (setup.project / ".env.local").write_text(f"GITHUB_TOKEN={github()}\n")
    done = setup.cli("scan", str(setup.project), "--json")
    assert [Path(json.loads(line)["file"]).name for line in done.stdout.splitlines()] == [
        ".env.local"]


def test_a_secret_left_in_the_file_is_redacted_in_the_fix_backup(setup: Setup) -> None:
    moved, left = stripe(), github()
    config = setup.project / ".mcp.json"
    config.write_text(json.dumps({"mcpServers": {"s": {
        "command": "x", "args": [f"--token={left}"], "env": {"STRIPE_SECRET_KEY": moved}}}}))
    done = subprocess.run([sys.executable, "-m", "mcp_keys", "scan", str(config), "--fix",
                           "--allow-plaintext-keyring"], cwd=setup.project, env=setup.env,
                          input="n\ny\n", capture_output=True, text=True, timeout=120,
                          check=False)  # the args secret is declined, the env one moved
    assert done.returncode == 1, "the declined secret is reported, not moved"
    (backup,) = setup.backups.iterdir()
    for secret in (moved, left):
        assert_absent(secret, backup.read_bytes(), "the backup")
    args = json.loads(backup.read_text())["mcpServers"]["s"]["args"]
    assert args == [f"--token=<redacted: a hard-coded secret, still in {config}>"]


def test_the_pre_commit_hook_checks_staged_backups_too() -> None:
    hooks = (Path(__file__).resolve().parent.parent / ".pre-commit-hooks.yaml").read_text()
    match = re.search(r"^  files: '(.*)'$", hooks, re.M)
    assert match is not None
    files = re.compile(match.group(1))
    for name in ("mcp.json.bak", ".mcp.json.20261202T101010123456Z.bak", "a/.mcp.json.orig",
                 ".cursor/mcp.json~", ".env.bak", "deploy/prod.env", "settings.json"):
        assert files.search(name), name
    for name in ("env.py", "package.json", "src/app.ts"):
        assert not files.search(name), name
