"""``services.toml``: the gateway's services, references only, beside the store.

Read with ``tomllib`` and validated whole (unknown keys, bad URLs, rule syntax, a literal
where a reference belongs) before anything is served; written by the CLI atomically
(0600) under the store's lock. ``ServiceConfig`` notices a hand edit on the next call
by the file's inode, size, mtime and links, and on ``reload()`` (SIGHUP). A
file that stops being valid makes every call fail (closed), not the last good one.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import McpKeysError, UsageError
from .model import RateLimit, Rule, Service, check_auth, check_name, parse_rate, parse_rule

FILE_NAME = "services.toml"
SERVICES_VAR = "MCP_KEYS_SERVICES"
CHECK_INTERVAL = 0.0  # every call stats the file: an edit applies to the very next call
MAX_TIMEOUT = 600.0
_KEYS = {"base_url", "auth", "secret", "description", "enabled", "timeout", "rate_limit",
         "env", "allow", "deny", "kind", "placeholder", "websocket"}
_EXEC_KEYS = {"kind", "command", "allow_args", "secret_env", "cwd", "description", "enabled",
              "timeout", "rate_limit"}
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class ConfigError(McpKeysError):
    """services.toml is missing, unsafe or invalid; the message names what and where."""


def services_path(store: str | os.PathLike[str] | None = None) -> Path:
    """``MCP_KEYS_SERVICES``, else ``services.toml`` in the JSON store's directory (with no
    store named, and for a PostgreSQL store, the per-user ``~/.config/mcp-keys/``)."""
    override = os.environ.get(SERVICES_VAR)
    if override:
        return Path(override)
    from ..stores import is_url
    from .workspace import gateway_store, user_dir

    location = gateway_store(store)
    if is_url(location):
        return user_dir() / FILE_NAME
    return Path(location).parent / FILE_NAME


def check_base_url(url: object) -> str:
    """An https URL (http only to a loopback host), no user info, query or fragment."""
    if not isinstance(url, str) or not url.isprintable() or " " in url:
        raise UsageError(f"base URL {url!r} must be a URL like https://api.example.com")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise UsageError(f"base URL {url!r} is not a URL ({exc})") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise UsageError(f"base URL {url!r} must start with https://")
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
        raise UsageError(f"base URL {url!r}: plain http is allowed only to a loopback host; "
                         "use https://")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise UsageError(f"base URL {url!r} must not hold a user, password, query or "
                         "fragment (put the credential in --secret)")
    return url.rstrip("/")


def check_secret(ref: object) -> str:
    """A reference, never a value: ``keyring:``, ``env:``, ``vault:`` and the rest."""
    from ..secrets.reference import is_reference, parse_reference, shown

    if not isinstance(ref, str) or not is_reference(ref):
        raise UsageError(f"secret {shown(str(ref))} is not a reference: give where the secret "
                         "lives (keyring:mcp-keys/NAME, env:VAR, vault:PATH#FIELD, aws-sm:ID), "
                         "never the value")
    parse_reference(ref)
    return ref


def _rules(value: object, effect: str, where: str) -> tuple[Rule, ...]:
    if not isinstance(value, list):
        raise UsageError(f"{where}.{effect} must be a list of rules")
    rules = []
    for item in value:
        if isinstance(item, str):
            rules.append(parse_rule(item, effect))
        elif isinstance(item, dict) and set(item) <= {"rule", "scope"} and "rule" in item:
            rules.append(parse_rule(item["rule"], effect, item.get("scope")))
        else:
            raise UsageError(f"{where}.{effect}: each rule is 'METHOD PATH' or "
                             "{ rule = '...', scope = '...' }")
    return tuple(rules)


def _common(where: str, table: dict[str, Any]) -> dict[str, Any]:
    """What every kind of service has: timeout, rate limit, description, enabled."""
    timeout = table.get("timeout", 30.0)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or \
            not 0 < timeout <= MAX_TIMEOUT:
        raise UsageError(f"{where}.timeout must be a number of seconds in (0, {MAX_TIMEOUT:g}]")
    rate = table.get("rate_limit")
    limit: RateLimit | None = None if rate is None else parse_rate(rate)
    description = table.get("description", "")
    if not isinstance(description, str) or not description.isprintable() or \
            len(description) > 1024:
        raise UsageError(f"{where}.description must be printable text (at most 1024)")
    enabled = table.get("enabled", True)
    if not isinstance(enabled, bool):
        raise UsageError(f"{where}.enabled must be true or false")
    return {"timeout": float(timeout), "rate_limit": limit, "description": description,
            "enabled": enabled}


def _unknown(where: str, table: dict[str, Any], known: set[str]) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise UsageError(f"{where}: unknown key {unknown[0]!r} (known: "
                         f"{', '.join(sorted(known))})")


def check_placeholder(template: object, where: str = "--placeholder") -> str:
    """A placeholder format: printable, no spaces, holding ``{random}`` once."""
    import re

    if not isinstance(template, str) or template.count("{random}") != 1 or \
            not re.fullmatch(r"[A-Za-z0-9_.:{}-]{8,128}", template):
        raise UsageError(f"{where} must hold '{{random}}' once, in letters, digits and "
                         "'_.:-' (e.g. sk_live_{random})")
    return template


def check_command(command: object) -> str:
    """An executable, resolved to an absolute path now, so PATH at run time cannot swap it."""
    import shutil

    if not isinstance(command, str) or not command or not command.isprintable():
        raise UsageError("--command must name an executable, e.g. gh or /usr/bin/gh")
    found = shutil.which(command) if not os.path.isabs(command) else command
    if found is None or not os.path.isfile(found) or not os.access(found, os.X_OK):
        raise UsageError(f"command {command!r} is not an executable file on PATH; give its "
                         "full path")
    return os.path.realpath(found)


def _parse_exec(name: str, where: str, table: dict[str, Any]) -> Service:
    from ..secrets.reference import is_variable_name

    _unknown(where, table, _EXEC_KEYS)
    if "command" not in table:
        raise UsageError(f"{where} lacks 'command'")
    command = table["command"]
    if not isinstance(command, str) or not os.path.isabs(command):
        raise UsageError(f"{where}.command must be an absolute path")
    patterns = table.get("allow_args", [])
    if not isinstance(patterns, list) or not all(
            isinstance(p, str) and p.isprintable() and p for p in patterns):
        raise UsageError(f"{where}.allow_args must be a list of argument globs")
    secret_env = table.get("secret_env", {})
    if not isinstance(secret_env, dict):
        raise UsageError(f"{where}.secret_env must be a table of VARIABLE = reference")
    pairs = []
    for var, ref in sorted(secret_env.items()):
        if not is_variable_name(var) or var in ("PATH", "HOME", "LANG"):
            raise UsageError(f"{where}.secret_env: {var!r} is not a variable it may set")
        pairs.append((var, check_secret(ref)))
    cwd = table.get("cwd")
    if cwd is not None and (not isinstance(cwd, str) or not os.path.isabs(cwd)):
        raise UsageError(f"{where}.cwd must be an absolute directory")
    return Service(name=name, base_url="", auth="", secret="", kind="exec", command=command,
                   allow_args=tuple(patterns), secret_env=tuple(pairs), cwd=cwd,
                   **_common(where, table))


def parse_service(name: str, table: object) -> Service:
    """One ``[services.NAME]`` table as a ``Service``, or a ``UsageError``."""
    from ..secrets.reference import is_variable_name

    where = f"services.{name}"
    check_name(name)
    if not isinstance(table, dict):
        raise UsageError(f"{where} must be a table")
    kind = table.get("kind", "http")
    if kind == "exec":
        return _parse_exec(name, where, table)
    if kind != "http":
        raise UsageError(f"{where}.kind must be 'http' or 'exec'")
    _unknown(where, table, _KEYS)
    for required in ("base_url", "auth", "secret"):
        if required not in table:
            raise UsageError(f"{where} lacks {required!r}")
    env = table.get("env")
    if env is not None and (not isinstance(env, str) or not is_variable_name(env)):
        raise UsageError(f"{where}.env must be a variable name")
    placeholder = table.get("placeholder")
    if placeholder is not None:
        check_placeholder(placeholder, where)
    websocket = table.get("websocket", False)
    if not isinstance(websocket, bool):
        raise UsageError(f"{where}.websocket must be true or false")
    return Service(
        name=name, base_url=check_base_url(table["base_url"]),
        auth=check_auth(str(table["auth"])), secret=check_secret(table["secret"]),
        allow=_rules(table.get("allow", []), "allow", where),
        deny=_rules(table.get("deny", []), "deny", where), env=env, placeholder=placeholder,
        websocket=websocket, **_common(where, table))


def parse(raw: bytes, path: Path) -> dict[str, Service]:
    """Every service in the file, or a ``ConfigError`` naming the file and the problem."""
    import tomllib

    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML ({exc})") from None
    unknown = sorted(set(data) - {"services"})
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key {unknown[0]!r}")
    services = data.get("services", {})
    if not isinstance(services, dict):
        raise ConfigError(f"{path}: 'services' must be a table")
    try:
        return {name: parse_service(name, table) for name, table in services.items()}
    except UsageError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _string(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string


def _rule(rule: Rule) -> str:
    if rule.scope is None:
        return _string(rule.text)
    return f"{{ rule = {_string(rule.text)}, scope = {_string(rule.scope)} }}"


def _common_lines(service: Service) -> list[str]:
    lines = [f"enabled = {'true' if service.enabled else 'false'}",
             f"timeout = {service.timeout!r}"]
    if service.description:
        lines.append(f"description = {_string(service.description)}")
    if service.rate_limit is not None:
        lines.append(f"rate_limit = {_string(service.rate_limit.text)}")
    return lines


def serialize(services: dict[str, Service]) -> bytes:
    lines = ["# mcp-keys gateway services: references only, never secret values.",
             "# Edit with 'mcp-keys service ...'; a running gateway reloads within a second."]
    for name in sorted(services):
        service = services[name]
        lines += ["", f"[services.{name}]"]
        if service.kind == "exec":
            lines += ['kind = "exec"', f"command = {_string(service.command or '')}",
                      *_common_lines(service),
                      f"allow_args = [{', '.join(_string(p) for p in service.allow_args)}]"]
            if service.cwd:
                lines.append(f"cwd = {_string(service.cwd)}")
            env = ", ".join(f"{var} = {_string(ref)}" for var, ref in service.secret_env)
            lines.append(f"secret_env = {{ {env} }}" if env else "secret_env = {}")
            continue
        lines += [f"base_url = {_string(service.base_url)}",
                  f"auth = {_string(service.auth)}",
                  f"secret = {_string(service.secret)}", *_common_lines(service)]
        if service.env:
            lines.append(f"env = {_string(service.env)}")
        if service.placeholder:
            lines.append(f"placeholder = {_string(service.placeholder)}")
        if service.websocket:
            lines.append("websocket = true")
        for effect, rules in (("allow", service.allow), ("deny", service.deny)):
            lines.append(f"{effect} = [{', '.join(_rule(r) for r in rules)}]")
    return ("\n".join(lines) + "\n").encode()


def read(path: Path) -> dict[str, Service]:
    """The services in ``path`` (none if it does not exist), checked for ownership first:
    a file others can write could point a secret at their own host."""
    from ..errors import UnsafeFile
    from ..safefs import check_trusted, read_regular

    try:
        check_trusted(path, what="services file", reader=True)
        found = read_regular(path, limit=4 << 20)
    except UnsafeFile as exc:
        raise ConfigError(str(exc)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    return {} if found is None else parse(found[0], path)


def destination(service: Service) -> tuple[object, ...]:
    """Where and how a service's credential goes: what a running gateway keeps from its
    start (a change is refused until a restart; rules, limits and switches apply at once)."""
    return (service.kind, service.base_url, service.auth, service.secret, service.command,
            service.secret_env, service.cwd)


@dataclass(frozen=True, slots=True)
class Snapshot:
    services: dict[str, Service]
    error: str | None = None
    held: dict[str, str] = field(default_factory=dict)  # name -> why it is refused

    def check_held(self, name: str) -> str | None:
        """Why ``name`` is refused until a restart, or ``None``."""
        return self.held.get(name)


class ServiceConfig:
    """The services a running gateway serves, re-read when the file changes."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._signature: tuple[int, ...] | None = None
        self._snapshot = Snapshot({})
        self._next_check = 0.0
        self._force = True
        self._lock = threading.Lock()
        self._pinned: dict[str, tuple[object, ...]] | None = None
        self._links: int | None = None  # the file's hard links at the first good read
        self._linked: str | None = None  # why it is refused until a restart, once linked

    def __repr__(self) -> str:
        return f"ServiceConfig({str(self.path)!r})"

    def reload(self) -> None:
        """Re-read on the next call whatever the file's signature (SIGHUP)."""
        self._force = True
        self._next_check = 0.0

    def current(self) -> Snapshot:
        now = time.monotonic()
        if now < self._next_check and not self._force:
            return self._snapshot
        with self._lock:
            self._next_check = now + CHECK_INTERVAL
            try:
                info = os.stat(self.path)
                signature: tuple[int, ...] = (info.st_ino, info.st_size, info.st_mtime_ns,
                                              info.st_mode, info.st_uid, info.st_nlink)
            except FileNotFoundError:
                signature = ()
            except OSError as exc:
                self._snapshot = Snapshot({}, f"cannot read {self.path}: {exc.strerror}")
                return self._snapshot
            if signature == self._signature and not self._force:
                return self._snapshot
            self._force = False
            self._signature = signature
            self._check_links(signature[-1] if signature else 1)
            if self._linked is not None:
                self._snapshot = Snapshot({}, self._linked)
                return self._snapshot
            try:
                self._snapshot = self._pin(read(self.path))
            except ConfigError as exc:
                self._snapshot = Snapshot({}, str(exc))
            return self._snapshot

    def _check_links(self, links: int) -> None:
        """A hard link made while the gateway runs (one the workspace check at start could
        not see) lets whoever can write where it is rewrite the rules through it: the
        file is refused from then until a restart, which checks where it is again."""
        if self._links is None:
            self._links = links
        elif links > self._links and self._linked is None:
            self._linked = (f"{self.path} gained a hard link while the gateway was running "
                            "(one may be in an agent's workspace): every service is refused "
                            "until the gateway is restarted")

    def _pin(self, services: dict[str, Service]) -> Snapshot:
        """The first good read fixes each service's destination; a later file that adds a
        service or moves one (URL, auth, secret reference, command) holds it until the
        gateway restarts, so a file edit never redirects a credential (SIGHUP included)."""
        if self._pinned is None:
            self._pinned = {name: destination(s) for name, s in services.items()}
        held = {}
        for name, service in services.items():
            pinned = self._pinned.get(name)
            if pinned is None:
                held[name] = (f"service {name} was added to {self.path} after the gateway "
                              "started: it is refused until the gateway is restarted")
            elif pinned != destination(service):
                held[name] = (f"service {name} changed where or how its credential is sent "
                              "(base_url, auth, secret, command) since the gateway started: "
                              "it is refused until the gateway is restarted")
        return Snapshot(services, held=held)


def lock_path(path: Path, store: str | os.PathLike[str] | None) -> Path:
    """The store's lock for a JSON store beside the file; else one beside the file."""
    from ..stores import is_url
    from .workspace import gateway_store

    location = gateway_store(store)
    if not is_url(location) and Path(location).parent == path.parent:
        return Path(location).with_name(Path(location).name + ".lock")
    return path.with_name(path.name + ".lock")


def update(path: Path, change: Any, *, store: str | os.PathLike[str] | None = None
           ) -> dict[str, Service]:
    """Read, ``change(services)`` (which mutates the dict or raises), validate the result
    by parsing what would be written, and write it atomically (0600) under the lock."""
    from ..atomic import write_atomic
    from ..locking import LockFile, LockTimeout
    from ..safefs import make_private_dirs

    if not path.parent.exists():
        make_private_dirs(path.parent)
    lock = LockFile(lock_path(path, store), timeout=10)
    try:
        lock.acquire()
    except LockTimeout:
        raise McpKeysError(f"{path} is locked by another mcp-keys; try again") from None
    try:
        services = read(path)
        change(services)
        data = serialize(services)
        parse(data, path)  # what is written must read back
        try:
            write_atomic(path, data, mode=0o600)
        except OSError as exc:
            raise McpKeysError(f"cannot write {path}: {exc.strerror or exc}") from None
        return services
    finally:
        lock.release()
