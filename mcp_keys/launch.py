"""``mcp-keys run``: start a command with secret references resolved into its environment.

Every reference is resolved before the command starts; one that fails stops everything
with its name and exit 1. Then the command replaces this process (``exec``): it keeps
stdin, stdout and stderr untouched (an MCP stdio server runs through it), receives
signals as if started directly, and its exit code is ``run``'s. With ``mask``, the
command runs as a child whose stdout and stderr pass through a filter that replaces the
resolved values with ``****`` (for servers that echo their configuration); signals are
forwarded and its exit code returned.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

from .errors import McpKeysError, UsageError
from .secrets import Secret, parse_reference, resolve
from .secrets.reference import is_variable_name

MASK = b"****"


def parse_bindings(pairs: Sequence[str]) -> dict[str, str]:
    """``NAME=REF`` pairs (``--env``) as a mapping, every reference checked."""
    bindings: dict[str, str] = {}
    for pair in pairs:
        name, sep, ref = pair.partition("=")
        if not sep or not is_variable_name(name):
            raise UsageError(f"--env takes NAME=REFERENCE (e.g. STRIPE_KEY=env:STRIPE), not "
                             f"{name!r}")
        parse_reference(ref)
        bindings[name] = ref
    return bindings


def read_reference_file(path: str) -> dict[str, str]:
    """A .env-shaped file whose values are references (safe to commit)."""
    from .envfile import read_values

    try:
        found = read_values(path)
    except OSError as exc:
        raise McpKeysError(f"cannot read {path}: {exc.strerror}") from None
    if found is None:
        raise McpKeysError(f"cannot read {path}: no such file")
    values = found
    bindings: dict[str, str] = {}
    for name, ref in values.items():
        if ref is None:
            raise UsageError(f"{path}: {name} has no value (expected NAME=REFERENCE)")
        try:
            parse_reference(ref)
        except UsageError:
            raise UsageError(f"{path}: {name} is not a secret reference (values in this "
                             "file must be references like vault:secret/stripe#api_key, "
                             "never secrets)") from None
        bindings[name] = ref
    return bindings


def resolve_all(bindings: Mapping[str, str]) -> dict[str, Secret]:
    """Resolve every reference, or raise on the first that fails (nothing has started)."""
    return {name: resolve(ref) for name, ref in bindings.items()}


SOURCE_CREDENTIALS = {"vault": ("VAULT_TOKEN", "VAULT_SECRET_ID", "VAULT_ROLE_ID"),
                      "aws-sm": ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                 "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")}


def child_environment(resolved: Mapping[str, Secret]) -> dict[str, str]:
    """Ours, without the credentials of the sources the references were read from (a
    Vault token opens more than the one secret the command asked for), plus the resolved
    values. A command that needs one of them binds it: ``--env VAULT_TOKEN=env:VAULT_TOKEN``."""
    environment = dict(os.environ)
    for secret in resolved.values():
        for name in SOURCE_CREDENTIALS.get(parse_reference(secret.reference).scheme, ()):
            environment.pop(name, None)
    return {**environment, **{name: secret.reveal() for name, secret in resolved.items()}}


def launch(pairs: Sequence[str], ref_file: str | None, mask: bool,
           command: Sequence[str]) -> int:
    """What ``mcp-keys run`` does: resolve, then exec the command (never returns) or, with
    ``mask``, run it filtered and return its exit code."""
    bindings = read_reference_file(ref_file) if ref_file else {}
    bindings.update(parse_bindings(pairs))
    resolved = resolve_all(bindings)
    if mask:
        return run_masked(command, resolved)
    exec_command(command, resolved)
    raise AssertionError("unreachable")  # pragma: no cover - exec replaced the process


def exec_command(command: Sequence[str], resolved: Mapping[str, Secret]) -> None:
    """Replace this process with ``command`` (only returns by raising)."""
    if not command:
        raise UsageError("give the command to run after --, e.g. mcp-keys run --env "
                         "K=env:X -- npx -y @stripe/mcp")
    environment = child_environment(resolved)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(command[0], list(command), environment)
    except OSError as exc:
        raise McpKeysError(f"cannot run {command[0]}: {exc.strerror}") from None


def run_masked(command: Sequence[str], resolved: Mapping[str, Secret]) -> int:
    """Run ``command`` with its output filtered of the resolved values; its exit code."""
    import signal
    import subprocess
    import threading

    if not command:
        raise UsageError("give the command to run after --")
    needles = sorted({s.reveal().encode() for s in resolved.values() if len(s) >= 4},
                     key=len, reverse=True)
    try:
        child = subprocess.Popen(list(command), env=child_environment(resolved),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as exc:
        raise McpKeysError(f"cannot run {command[0]}: {exc.strerror}") from None
    assert child.stdout is not None and child.stderr is not None

    def forward(signum: int, frame: object) -> None:
        child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(signum, forward)
    pumps = [threading.Thread(target=_pump, args=(pipe, out.fileno(), needles), daemon=True)
             for pipe, out in ((child.stdout, sys.stdout), (child.stderr, sys.stderr))]
    for pump in pumps:
        pump.start()
    code = child.wait()
    for pump in pumps:
        pump.join(5)
    return code if code >= 0 else 128 - code


def _pump(source: object, fd: int, needles: list[bytes]) -> None:
    """Copy ``source`` to ``fd``, replacing every needle; output is held back only as long
    as it could be the start of a needle, and flushed at each newline or read."""
    longest = max((len(n) for n in needles), default=1)
    pending = b""
    read = source.read1  # type: ignore[attr-defined]
    while True:
        chunk = read(65536)
        if not chunk:
            break
        pending = mask(pending + chunk, needles)
        cut = len(pending) if not needles else max(pending.rfind(b"\n") + 1,
                                                   len(pending) - longest + 1)
        if cut > 0:
            _write_all(fd, pending[:cut])
            pending = pending[cut:]
    if pending:
        _write_all(fd, mask(pending, needles))


def mask(data: bytes, needles: list[bytes]) -> bytes:
    for needle in needles:
        data = data.replace(needle, MASK)
    return data


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
