"""Exec services: run one configured executable with the credential in its environment.

No shell; the executable was resolved to an absolute path when the service was added;
the environment is PATH, a fresh HOME (removed afterwards; ``fresh_home`` says where and
why), LANG and the injected variables, nothing inherited; the working directory is
the configured one (or that fresh HOME); a timeout kills the whole process group;
output is scrubbed, then capped (a secret at the cut is read whole and redacted).
Which arguments may be passed is the service's rules' business (``model.ArgPattern``);
here they are only checked to be printable, non-empty and few.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .scrub import Scrubber

SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
MAX_ARGS = 64
MAX_ARG = 4096


@dataclass(slots=True)
class ExecResult:
    exit_code: int | None  # None when it was killed for the timeout
    stdout: str
    stderr: str
    truncated: bool
    timed_out: bool
    bytes_out: int

    def to_dict(self) -> dict[str, Any]:
        return {"exit_code": self.exit_code, "stdout": self.stdout, "stderr": self.stderr,
                "truncated": self.truncated, "timed_out": self.timed_out}


def check_args(args: object) -> list[str]:
    """A list of printable, non-empty strings (no NUL, CR or LF); raises ``ValueError``.
    An empty argument is refused: tools read it as "the default" (a host, a file), which
    no rule can name."""
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise ValueError("args must be a list of strings")
    if len(args) > MAX_ARGS:
        raise ValueError(f"more than {MAX_ARGS} arguments")
    for arg in args:
        if not arg:
            raise ValueError("an argument is empty")
        if len(arg) > MAX_ARG or any(c in arg for c in "\x00\r\n") or not arg.isprintable():
            raise ValueError(f"argument {arg[:40]!r} holds control characters or is too long")
    return list(args)


def fresh_home() -> str:
    """A new private directory for one run, under the gateway's per-user directory rather
    than the shared temporary one: tools look for their configuration in every parent of
    where they run (git for a repository whose ``core.fsmonitor`` or hooks run a command
    with the credential in its environment, hg, cargo, npm), and anyone can create
    ``/tmp/.git``. The parents of this one are the operator's (where the policy lives)."""
    from ..safefs import make_private_dirs
    from .workspace import user_dir

    parent = user_dir() / "exec"
    make_private_dirs(parent)
    return tempfile.mkdtemp(prefix="run-", dir=parent)


async def _read(stream: asyncio.StreamReader, limit: int) -> tuple[bytes, bool, int]:
    """Up to ``limit`` bytes, draining the rest so the child never blocks on a full pipe."""
    kept, total = bytearray(), 0
    while chunk := await stream.read(65536):
        total += len(chunk)
        if len(kept) < limit:
            kept += chunk[:limit - len(kept)]
    return bytes(kept), total > limit, total


async def run(command: str, args: list[str], env: dict[str, str], *, cwd: str | None,
              timeout: float, limit: int, scrub: Scrubber) -> ExecResult:
    """Run it; stdout and stderr each scrubbed and capped at ``limit`` bytes."""
    home = fresh_home()
    try:
        environment = {"PATH": SAFE_PATH, "HOME": home, "LANG": "C.UTF-8", **env}
        process = await asyncio.create_subprocess_exec(
            command, *args, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=environment, cwd=cwd or home, start_new_session=True, close_fds=True)
        assert process.stdout is not None and process.stderr is not None
        wanted = limit + scrub.lookahead
        reading = asyncio.gather(_read(process.stdout, wanted), _read(process.stderr, wanted))
        timed_out = False
        try:
            (out, cut_out, n_out), (err, cut_err, n_err) = await asyncio.wait_for(
                asyncio.shield(reading), timeout)
            await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            timed_out = True
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)  # the whole group: grandchildren too
            await process.wait()
            (out, cut_out, n_out), (err, cut_err, n_err) = await reading
        out, cut_out = scrub.cut(out, limit, cut_out)
        err, cut_err = scrub.cut(err, limit, cut_err)
        return ExecResult(None if timed_out else process.returncode,
                          out.decode("utf-8", "replace"), err.decode("utf-8", "replace"),
                          cut_out or cut_err, timed_out, n_out + n_err)
    finally:
        shutil.rmtree(home, ignore_errors=True)
