"""Fault injection: SIGKILL at random instants, a full disk, failing fsync and replace."""

from __future__ import annotations

import contextlib
import errno
import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mcp_keys import KeyManager, StoreError
from tests.conftest import Cli, FileKeys, one_error_line, run_cli_process

KILLS = 200


def _child_loop(store: Path, write_fd: int) -> None:  # pragma: no cover - runs in the child
    """Create and rotate forever, reporting each finished call over the pipe."""
    manager = KeyManager(store, lock_timeout=30)
    n = 0
    while True:
        issued = manager.create(f"crash-{os.getpid()}-{n}")
        os.write(write_fd, f"C {issued.record.id}\n".encode())
        if n % 2 == 0:
            successor = manager.rotate(issued.record.id)
            os.write(write_fd, f"R {issued.record.id} {successor.record.id}\n".encode())
        n += 1


def _spawn(store: Path) -> tuple[int, int]:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover
        os.close(read_fd)
        try:
            _child_loop(store, write_fd)
        finally:
            os._exit(1)
    os.close(write_fd)
    return pid, read_fd


def _drain(read_fd: int) -> list[list[str]]:
    data = b""
    while chunk := os.read(read_fd, 65536):
        data += chunk
    os.close(read_fd)
    # Each report is one small os.write, atomic on a pipe: there are no partial lines.
    return [line.split() for line in data.decode().splitlines()]


def test_sigkill_at_random_instants(tmp_path: Path) -> None:
    store = tmp_path / "s" / "keys.json"
    manager = KeyManager(store, lock_timeout=5)
    for n in range(200):  # a store big enough that writes take a while
        manager.create(f"seed-{n}", description="z" * 100)
    rng = random.Random(20261201)
    reported: set[str] = set()
    rotations: list[tuple[str, str]] = []
    mid_write = 0
    for kill in range(KILLS):
        pid, read_fd = _spawn(store)
        time.sleep(rng.uniform(0, 0.03))  # the random instant itself, not a wait for a condition
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        for fields in _drain(read_fd):
            if fields[0] == "C":
                reported.add(fields[1])
            elif len(fields) == 3:
                rotations.append((fields[1], fields[2]))
                reported.add(fields[2])

        mid_write += bool(list(store.parent.glob(".keys.json.*.tmp")))
        keys = manager.store.read()  # parses, or raises and fails the test
        missing = reported - set(keys)
        assert not missing, f"after kill {kill}: {len(missing)} reported keys lost"
        for key in keys.values():  # never a new key without its link
            if key.rotated_from is not None:
                assert keys[key.rotated_from].rotated_to == key.id
        after = manager.create(f"after-{kill}")  # the lock is not stale
        reported.add(after.record.id)
        leftovers = list(store.parent.glob(".keys.json.*.tmp"))
        assert leftovers == [], f"after kill {kill}: temp files left behind"
        if kill % 10 == 9:
            result = run_cli_process("--store", str(store), "create", f"cli-after-{kill}",
                                     env={"MCP_KEYS_LOCK_TIMEOUT": "5"})
            assert result.returncode == 0, result.stderr
    assert all(keys[new].rotated_from == old for old, new in rotations)
    assert len(reported) > KILLS
    assert mid_write > 0, "no kill landed inside a write: the test exercised nothing"


@contextlib.contextmanager
def tiny_tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root); the injected faults below cover it")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)


def test_full_disk_leaves_the_previous_store(tmp_path: Path) -> None:
    with tiny_tmpfs(tmp_path / "small", "48k") as mount:
        manager = FileKeys(mount / "keys.json")
        last_good = b""
        with pytest.raises(StoreError) as info:
            for n in range(10_000):
                manager.create(f"fill-{n}", description="f" * 500)
                last_good = manager.store.path.read_bytes()
        assert "No space left on device" in str(info.value)
        assert "intact" in str(info.value)
        assert manager.store.path.read_bytes() == last_good
        assert list(mount.glob(".keys.json.*.tmp")) == []
        manager.store.read()


@pytest.mark.parametrize("target", ["fsync", "replace"])
def test_failing_fsync_or_replace_reports_one_line(run: Cli, target: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    assert run("create", "first").exit_code == 0
    before = run.store.read_bytes()
    audit_before = (run.store.parent / "audit.log").read_bytes()

    def broken(*args: object) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(f"mcp_keys.stores.jsonfile.os.{target}", broken)
    result = run("create", "second")
    monkeypatch.undo()
    assert result.exit_code == 1
    line = one_error_line(result.stderr)
    assert "Input/output error" in line and str(run.store) in line
    assert run.store.read_bytes() == before
    assert (run.store.parent / "audit.log").read_bytes() == audit_before
    assert list(run.store.parent.glob(".keys.json.*.tmp")) == []
