"""The bad-input corpus: every case ends in the documented exit code, one clear line with
no traceback, and the store, audit log and .env byte-identical to before."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from freezegun import freeze_time

from mcp_keys import KeyManager, tokens
from tests.conftest import Cli, FileKeys, assert_absent, in_child, one_error_line, snapshot

IDS = ["abcd11111111", "abcd22222222", "rrrr00000000", "eeee00000000"]
ENV_TEXT = "# settings\nA=1\nMCP_API_KEY=placeholder\n"
HOLD_LOCK = """
import sys
from mcp_keys.locking import LockFile
lock = LockFile(sys.argv[1], 10); lock.acquire(); print("locked", flush=True); sys.stdin.readline()
"""


@dataclass
class Case:
    args: list[str]
    code: int
    setup: Callable[[Path], object] | None = None
    input: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    stdout_reason: str | None = None  # verify answers on stdout, not as an error


def write_store(content: bytes) -> Callable[[Path], None]:
    def setup(store: Path) -> None:
        store.write_bytes(content)
    return setup


def make_dir(store: Path) -> None:
    store.unlink()
    store.mkdir()


def dev_null(store: Path) -> None:
    store.unlink()
    store.symlink_to("/dev/null")


def read_only(store: Path) -> None:
    store.chmod(0o400)


def env_dir(store: Path) -> None:
    (store.parent.parent / "envdir").mkdir()


WRONG_CHECKSUM = tokens.generate()
WRONG_CHECKSUM = WRONG_CHECKSUM[:-1] + ("A" if WRONG_CHECKSUM[-1] != "A" else "B")
GOOD_ENTRY = (b'{"name": "x", "digest": "' + b"0" * 64 + b'", "created_at": '
              b'"2026-01-01T00:00:00Z", "expires_at": null}')

CASES: dict[str, Case] = {
    # unknown ID / ambiguous prefix on every command that takes one
    **{f"{cmd}-unknown": Case([cmd, "zzzzzzzzzzzz", *extra], 1)
       for cmd, extra in (("show", []), ("revoke", []), ("delete", ["--yes"]), ("rotate", []))},
    **{f"{cmd}-ambiguous": Case([cmd, "abcd", *extra], 1)
       for cmd, extra in (("show", []), ("revoke", []), ("delete", ["--yes"]), ("rotate", []))},
    "show-short-prefix": Case(["show", "abc"], 1),
    "show-pasted-token": Case(["show", WRONG_CHECKSUM], 1),
    "rotate-revoked": Case(["rotate", "rrrr00000000"], 1),
    "rotate-expired": Case(["rotate", "eeee00000000"], 1),
    # durations
    **{f"expires-{d or 'empty'}": Case(["create", "x", "--expires-in", d], 2)
       for d in ("0d", "-1d", "1.5d", "99999999y", "", "5x", "1d2h")},
    "grace-negative": Case(["rotate", "abcd11111111", "--grace", "-1h"], 2),
    "grace-word": Case(["rotate", "abcd11111111", "--grace", "abc"], 2),
    "purge-never": Case(["sweep", "--purge-after", "never"], 2),
    "expiring-within-zero": Case(["list", "--expiring-within", "0d"], 2),
    "audit-since-bad": Case(["audit", "--since", "yesterday"], 2),
    # names, descriptions, scopes, reasons, variable names
    "name-empty": Case(["create", ""], 2),
    "name-65": Case(["create", "x" * 65], 2),
    "name-10kb": Case(["create", "x" * 10_240], 2),
    "name-newline": Case(["create", "evil\nname"], 2),
    "name-control": Case(["create", "bell\x07"], 2),
    "name-ansi": Case(["create", "\x1b[31mred\x1b[0m"], 2),
    "description-newline": Case(["create", "x", "--description", "a\nb"], 2),
    "scope-space": Case(["create", "x", "--scope", "tools call"], 2),
    "scope-empty": Case(["create", "x", "--scope", ""], 2),
    "scope-wildcard": Case(["create", "x", "--scope", "tools:*"], 2),
    "reason-escape": Case(["revoke", "abcd11111111", "--reason", "\x1b]0;pwned\x07"], 2),
    "env-var-name": Case(["create", "x", "--env-file", ".env", "--env-var", "BAD NAME"], 2),
    "audit-limit-zero": Case(["audit", "--limit", "0"], 2),
    "status-bogus": Case(["list", "--status", "bogus"], 2),
    "require-bogus": Case(["require", "maybe"], 2),
    # verify
    "verify-empty-stdin": Case(["verify"], 1, input="", stdout_reason="MISSING"),
    "verify-1mb": Case(["verify"], 1, input="a" * 1_048_576 + "\n", stdout_reason="MALFORMED"),
    "verify-checksum": Case(["verify", WRONG_CHECKSUM], 1, stdout_reason="MALFORMED"),
    "verify-stripe": Case(["verify", "sk_live_" + "a" * 24], 1, stdout_reason="MALFORMED"),
    "verify-github": Case(["verify", "ghp_" + "a" * 36], 1, stdout_reason="MALFORMED"),
    # stores that are not stores
    "store-empty": Case(["list"], 1, setup=write_store(b"")),
    "store-array": Case(["create", "x"], 1, setup=write_store(b"[]")),
    "store-v99": Case(["create", "x"], 1, setup=write_store(b'{"version": 99}')),
    "store-truncated": Case(["revoke", "abcd11111111"], 1,
                            setup=write_store(b'{"version": 1, "ke')),
    "store-missing-field": Case(["list"], 1, setup=write_store(
        b'{"version": 1, "keys": {"aaaaaaaaaaaa": {"name": "x"}}}')),
    "store-wrong-type": Case(["create", "x"], 1, setup=write_store(
        b'{"version": 1, "keys": {"aaaaaaaaaaaa": ' + GOOD_ENTRY.replace(b'"x"', b"7") + b"}}")),
    "store-duplicate-ids": Case(["create", "x"], 1, setup=write_store(
        b'{"version": 1, "keys": {"aaaaaaaaaaaa": ' + GOOD_ENTRY + b', "aaaaaaaaaaaa": '
        + GOOD_ENTRY + b"}}")),
    "store-dev-null": Case(["create", "x"], 1, setup=dev_null),
    "store-directory": Case(["create", "x"], 2, setup=make_dir),
    "store-read-only": Case(["create", "x"], 1, setup=read_only),
    "sweep-corrupt": Case(["sweep"], 1, setup=write_store(b"{")),
    "env-is-directory": Case(["create", "x", "--env-file", "envdir"], 1, setup=env_dir),
    "require-env-directory": Case(["require", "on", "--env-file", "envdir"], 1, setup=env_dir),
    "store-locked": Case(["create", "x"], 1, env={"MCP_KEYS_LOCK_TIMEOUT": "0.2"}),
}


@pytest.fixture
def seeded(manager: FileKeys, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FileKeys:
    """Two keys sharing the prefix abcd, one revoked, one expired, and a .env."""
    ids = iter(IDS)
    with monkeypatch.context() as patch:
        patch.setattr("mcp_keys.tokens.generate_id", lambda: next(ids))
        with freeze_time(datetime.now(UTC) - timedelta(days=30)):
            for name in ("one", "two", "revoked"):
                manager.create(name)
            manager.create("expired", expires_in=timedelta(days=1))
    manager.revoke("rrrr00000000")
    (tmp_path / ".env").write_text(ENV_TEXT)
    return manager


@contextlib.contextmanager
def lock_held(lock_path: Path) -> Iterator[None]:
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(lock_path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        yield
    finally:
        holder.communicate("\n", timeout=10)


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input(name: str, seeded: FileKeys, run: Cli, tmp_path: Path) -> None:
    case = CASES[name]
    store = seeded.store.path
    if case.setup is not None:
        case.setup(store)
    watched = [store, seeded.audit.path, tmp_path / ".env"]
    before = snapshot(watched)
    held = lock_held(seeded.store.lock_path) if name == "store-locked" else contextlib.nullcontext()
    with held:
        result = run(*case.args, input=case.input, env=case.env)
    assert result.exit_code == case.code, (name, result.exit_code, result.stderr[-300:])
    if case.stdout_reason is not None:
        assert result.stdout.startswith(case.stdout_reason) and result.stdout.count("\n") == 1
        assert result.stderr == ""
    else:
        line = one_error_line(result.stderr)
        assert len(line) < 400
    assert "Traceback" not in result.stdout + result.stderr
    assert snapshot(watched) == before, f"{name} changed the files"
    assert_absent(WRONG_CHECKSUM, result.stdout + result.stderr, "an error message")


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 40


def _in_child_without_privileges(store: Path) -> str:
    """A create by 'nobody' (or by this unprivileged user): the error it reports."""
    import mcp_keys.locking  # noqa: F401  (imported before fork: the child may not read site-packages)

    def attempt() -> str:
        KeyManager(store, lock_timeout=1).create("blocked")
        return "no error"

    return in_child(attempt, uid=65534 if os.geteuid() == 0 else None)


def test_unwritable_store_directory() -> None:
    base = Path(tempfile.mkdtemp(prefix="mcp-keys-ro-"))
    try:
        base.chmod(0o755)
        store = base / "keys.json"
        KeyManager(store).create("existing")
        store.chmod(0o644)  # readable by the unprivileged child
        (base / "keys.json.lock").unlink(missing_ok=True)
        (base / "audit.log").unlink()
        (base / "audit.log.head").unlink()
        base.chmod(0o555)
        before = store.read_bytes()
        message = _in_child_without_privileges(store)
        assert message.startswith("StoreError: "), message
        assert "Permission denied" in message and str(base) in message
        assert store.read_bytes() == before
        assert sorted(p.name for p in base.iterdir()) == ["keys.json"]
    finally:
        base.chmod(0o755)
        for path in base.iterdir():
            path.unlink()
        base.rmdir()
