"""Keep the ``run --proxy`` parent's secrets from the child it starts (and from any other
process of the same user): the credentials leave ``os.environ``, the environment block
the kernel shows as ``/proc/<pid>/environ`` is wiped, the process becomes non-dumpable (its
``/proc/<pid>/environ``, ``mem`` and ``maps`` are closed to other processes without
CAP_SYS_PTRACE, and ptrace is refused) and it writes no core file."""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterable
from pathlib import Path

from ...errors import McpKeysError
from ...secrets.held import held_values, hold

PR_SET_DUMPABLE = 4


def _block(first: int) -> tuple[int, int] | None:
    """Where a block the kernel shows in ``/proc/<pid>`` lies in our memory (Linux):
    ``first`` is the 0-based index, after the command name, of its start field."""
    try:
        stat = Path("/proc/self/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # after the command name, field 3 on
    if len(fields) < 49:
        return None
    return int(fields[first]), int(fields[first + 1])


def _environment_block() -> tuple[int, int] | None:
    """The environment the process was started with: env_start, env_end (fields 50, 51)."""
    return _block(47)


def _argument_block() -> tuple[int, int] | None:
    """Our command line, world-readable as ``/proc/<pid>/cmdline``: arg_start, arg_end
    (fields 48, 49)."""
    return _block(45)


_URL_PASSWORD = re.compile(rb"://[^/@:\s\0]*:([^/@\s\0]+)@")
_PASSWORD_PARAMETER = re.compile(rb"(?i)(?:password|passwd|pwd|token|secret)=([^&\s\0]+)")


def scrub_arguments(values: Iterable[str] = ()) -> None:
    """Overwrite, in our command line as ``/proc/<pid>/cmdline`` shows it to every user,
    each URL's password (``--store postgresql://user:password@host/db``), each
    ``password=``/``token=`` parameter, and each of ``values``, with ``*``; the words keep
    their length, so the layout is unchanged."""
    block = _argument_block()
    if block is None:
        return
    start, end = block
    with contextlib.suppress(OSError), open("/proc/self/mem", "r+b", buffering=0) as memory:
        memory.seek(start)
        text = bytearray(memory.read(end - start))
        spans = [m.span(1) for pattern in (_URL_PASSWORD, _PASSWORD_PARAMETER)
                 for m in pattern.finditer(text)]
        for value in (v.encode() for v in values if len(v) >= 8):
            at = text.find(value)
            while at >= 0:
                spans.append((at, at + len(value)))
                at = text.find(value, at + 1)
        if spans:
            for begin, stop in spans:
                text[begin:stop] = b"*" * (stop - begin)
            memory.seek(start)
            memory.write(bytes(text))


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
    sources), scrub passwords from our command line, wipe the initial environment block,
    and forbid dumps."""
    moved = hold(names)
    scrub_arguments(held_values())
    wipe_initial_environment()
    forbid_dumps()
    return moved
