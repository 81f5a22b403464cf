"""``mcp-keys run``: start a command with secret references resolved into its environment.

Every reference is resolved before the command starts; one that fails stops everything
with its name and exit 1. Then the command replaces this process (``exec``): it keeps
stdin, stdout and stderr untouched (an MCP stdio server runs through it), receives
signals as if started directly, and its exit code is ``run``'s. With ``mask``, the
command runs as a child whose stdout and stderr pass through a filter that replaces the
resolved values, in every spelling the gateway's scrubber finds (``gateway.scrub``), with
``****`` (for servers that echo their configuration), however the output is split into
reads; signals are forwarded and its exit code returned.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping, Sequence

from .errors import McpKeysError, UsageError
from .secrets import Secret, parse_reference, resolve
from .secrets.reference import is_variable_name

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: the launch path imports neither it nor re
if TYPE_CHECKING:
    import re

    from .gateway.scrub import Scrubber

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


def expand_arguments(command: Sequence[str], resolved: Mapping[str, Secret]) -> list[str]:
    """``command`` with ``${NAME}`` in its arguments (not the program) replaced by the value
    bound to ``NAME`` by ``--env`` in this same run; any other ``${...}`` is left as it is
    (never the parent's environment: an argument cannot pull in an unrelated secret).
    ``$${NAME}`` is the escape: one ``$`` is removed and the rest kept literally, so
    ``$${NAME}`` gives ``${NAME}`` (and ``escape_arguments`` undoes what this does). The
    value ends up in the child's argv, which other users on the host can read in
    ``/proc/PID/cmdline``: a variable is the better place when the program reads one."""
    if not resolved or not any("${" in arg for arg in command[1:]):
        return list(command)  # the usual launch: no regex compiled, ``re`` not imported
    pattern = _placeholders(resolved)

    def replace(match: re.Match[str]) -> str:
        dollars, name = match.group(1), match.group(2)
        if len(dollars) > 1:
            return dollars[1:] + "{" + name + "}"
        return resolved[name].reveal()

    return [command[0], *(pattern.sub(replace, arg) for arg in command[1:])]


def escape_arguments(arguments: Sequence[str], names: Iterable[str]) -> list[str]:
    """``arguments`` written so that ``expand_arguments`` with ``names`` bound gives them
    back unchanged (one more ``$`` before each ``${NAME}``)."""
    pattern = _placeholders(dict.fromkeys(names))
    return [pattern.sub(lambda m: "$" + m.group(0), arg) for arg in arguments]


def _placeholders(names: Iterable[str]) -> re.Pattern[str]:
    import re

    alternatives = "|".join(re.escape(name) for name in sorted(names, key=len, reverse=True))
    return re.compile(r"(\$+)\{(" + (alternatives or r"(?!)") + r")\}")


def exec_command(command: Sequence[str], resolved: Mapping[str, Secret]) -> None:
    """Replace this process with ``command`` (only returns by raising)."""
    if not command:
        raise UsageError("give the command to run after --, e.g. mcp-keys run --env "
                         "K=env:X -- npx -y @stripe/mcp")
    environment = child_environment(resolved)
    argv = expand_arguments(command, resolved)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(argv[0], argv, environment)
    except OSError as exc:
        raise McpKeysError(f"cannot run {command[0]}: {exc.strerror}") from None


def run_masked(command: Sequence[str], resolved: Mapping[str, Secret]) -> int:
    """Run ``command`` with its output filtered of the resolved values; its exit code."""
    import signal
    import subprocess
    import threading

    if not command:
        raise UsageError("give the command to run after --")
    try:
        child = subprocess.Popen(expand_arguments(command, resolved),
                                 env=child_environment(resolved),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as exc:
        raise McpKeysError(f"cannot run {command[0]}: {exc.strerror}") from None
    assert child.stdout is not None and child.stderr is not None

    def forward(signum: int, frame: object) -> None:
        child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(signum, forward)
    scrubber = Masker(values_for(resolved)).scrubber  # one for both streams; built while
    pumps = [  # the child starts (its output waits in the pipes)
        threading.Thread(target=_pump, args=(pipe, out.fileno(), scrubber), daemon=True)
        for pipe, out in ((child.stdout, sys.stdout), (child.stderr, sys.stderr))]
    for pump in pumps:
        pump.start()
    code = child.wait()
    for pump in pumps:
        pump.join(5)
    return code if code >= 0 else 128 - code


def values_for(resolved: Mapping[str, Secret]) -> list[str]:
    """The resolved values to mask (one shorter than 4 characters would mask ordinary
    text, so it is not)."""
    return [secret.reveal() for secret in resolved.values() if len(secret) >= 4]


class Masker:
    """Replaces the given secrets, in every spelling the gateway's ``Scrubber`` finds, with
    ``****`` in a byte stream that arrives in pieces of any size.

    ``feed`` returns what can be written now: everything except a tail that could still
    grow into a secret (only when that tail is the start of one, so a finished line is not
    held up unless a secret could go on past its line break; at most about twice the
    scrubber's ``lookahead``). ``close`` returns the rest. Whatever the chunking, the
    output is what ``Scrubber.data`` gives for the whole stream."""

    def __init__(self, values: Sequence[str] | Scrubber) -> None:
        from .gateway.scrub import Scrubber

        self.scrubber = values if isinstance(values, Scrubber) else Scrubber(
            list(values), marker=MASK.decode())  # a Scrubber: one for stdout and stderr
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self._pending + chunk
        out, end = self.scrubber.stream(data)
        self._pending = data[end:]
        return out

    def close(self) -> bytes:
        data, self._pending = self._pending, b""
        return self.scrubber.data(data)


def _pump(source: object, fd: int, scrubber: Scrubber) -> None:
    """Copy ``source`` to ``fd`` through a ``Masker``."""
    masker = Masker(scrubber)
    read = source.read1  # type: ignore[attr-defined]
    while True:
        chunk = read(65536)
        if not chunk:
            break
        out = masker.feed(chunk)
        if out:
            _write_all(fd, out)
    rest = masker.close()
    if rest:
        _write_all(fd, rest)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
