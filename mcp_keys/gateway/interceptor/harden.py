"""Keep the ``run --proxy`` parent's secrets from the child it starts (and from any other
process of the same user): the credentials leave ``os.environ``, the environment block
the kernel shows as ``/proc/<pid>/environ`` is wiped, the process becomes non-dumpable (its
``/proc/<pid>/environ``, ``mem`` and ``maps`` are closed to other processes without
CAP_SYS_PTRACE, and ptrace is refused) and it writes no core file."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from ...errors import McpKeysError
from ...secrets.held import hold

PR_SET_DUMPABLE = 4


def _environment_block() -> tuple[int, int] | None:
    """Where the environment the process was started with lies in its memory (Linux)."""
    try:
        stat = Path("/proc/self/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # after the command name, field 3 on
    if len(fields) < 49:
        return None
    return int(fields[47]), int(fields[48])  # env_start, env_end (fields 50 and 51)


def wipe_initial_environment() -> None:
    """Overwrite the environment block the process was started with, which
    ``/proc/<pid>/environ`` shows (``os.environ`` is a copy: deleting from it leaves the
    block as it was). What we still use is first copied to the heap (``putenv``), so C
    code's ``getenv`` keeps working."""
    block = _environment_block()
    if block is None:
        return
    for name, value in os.environ.items():
        os.putenv(name, value)
    start, end = block
    with contextlib.suppress(OSError), open("/proc/self/mem", "r+b", buffering=0) as memory:
        memory.seek(start)
        memory.write(b"\0" * (end - start))


def forbid_dumps() -> None:
    """No core file, and (Linux) not dumpable: closed to same-user readers and ptrace."""
    if sys.platform == "win32":
        return
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (0, hard))  # the child may raise its own
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:  # fail closed: nothing started
            raise McpKeysError("cannot make this process non-dumpable (prctl: "
                               f"{os.strerror(ctypes.get_errno())}): not starting the command")


def withdraw(names: Iterable[str]) -> list[str]:
    """Take ``names`` out of this process's environment (held in memory for the secret
    sources), wipe the initial environment block, and forbid dumps."""
    moved = hold(names)
    wipe_initial_environment()
    forbid_dumps()
    return moved
