"""``mcp-keys doctor``: read-only checks of what an operator can get wrong around the keys.

Permissions and ownership, git exposure of the store and the .env, keys that never expire
and keys about to. Each check passes, warns or fails; nothing is changed.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from .errors import McpKeysError
from .gitignore import git_status
from .manager import DEFAULT_WARN_WITHIN, KeyManager
from .models import Status, utcnow
from .stores import JsonStore

Outcome = Literal["pass", "warn", "fail"]
HealthRow = tuple[str, Outcome, str]


@dataclass(frozen=True, slots=True)
class Check:
    """One finding."""

    name: str
    outcome: Outcome
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.name, "outcome": self.outcome, "message": self.message}


def _mode_check(name: str, path: Path, wanted: int) -> Check:
    try:
        info = path.stat()
    except FileNotFoundError:
        return Check(name, "pass", f"{path} does not exist yet")
    mode = stat.S_IMODE(info.st_mode)
    if info.st_uid != os.getuid():
        return Check(name, "fail", f"{path} is owned by uid {info.st_uid}, not you")
    if mode & 0o077:
        return Check(name, "fail", f"{path} is mode {mode:04o}; run chmod {wanted:o} {path}")
    return Check(name, "pass", f"{path} is mode {mode:04o}")


def _trust_check(store: JsonStore) -> Check:
    """The StrictModes rule writers enforce: ownership and write bits up to ``/``."""
    try:
        store.check_trusted()
    except McpKeysError as exc:
        return Check("store ownership", "fail", str(exc))
    audit = store.directory / "audit.log"
    for path in (store.lock_path, audit, audit.with_name("audit.log.head")):
        if path.is_symlink():
            return Check("store ownership", "fail",
                         f"{path} is a symlink; remove it (mcp-keys never follows one there)")
    return Check("store ownership", "pass",
                 f"{store.path} and its parents are writable only by their owners")


def _file_checks(store: JsonStore) -> list[Check]:
    return [
        _trust_check(store),
        _mode_check("store directory", store.directory, 0o700),
        _mode_check("store file", store.path, 0o600),
        _mode_check("audit log", store.directory / "audit.log", 0o600),
        _git_check("store in git", store.path),
    ]


def _chain_check(manager: KeyManager) -> Check:
    from .audit_verify import verify

    verdict = verify(manager.audit)
    return Check("audit chain", "pass" if verdict.ok else "fail", verdict.summary())


def _git_check(name: str, path: Path) -> Check:
    state = git_status(path)
    if state == "tracked":
        return Check(name, "fail", f"{path} is tracked by git: git rm --cached it and rotate keys")
    if state == "exposed":
        return Check(name, "fail", f"{path} is not git-ignored: add it to .gitignore")
    if state == "ignored":
        return Check(name, "pass", f"{path} is git-ignored")
    return Check(name, "pass", f"{path} is not inside a git work tree")


def _proxy_ca_check(manager: KeyManager) -> Check | None:
    """The proxy CA, if there is one: key mode 0600 and not expired (warn within 30 days)."""
    from .gateway.services import services_path

    store = manager.store
    location = getattr(store, "path", None) or getattr(store, "url", None)
    directory = services_path(location).parent
    key = directory / "proxy-ca.key"
    if not key.exists():
        return None
    try:
        from .gateway.interceptor.ca import LocalCA

        authority = LocalCA(directory)
        authority.load()
        info = authority.info()
    except McpKeysError as exc:
        return Check("proxy CA", "fail", str(exc))
    except ImportError as exc:
        from .extras import missing_module

        missing = missing_module(exc)
        if missing is None:
            raise
        return Check("proxy CA", "fail", str(missing))
    left = info.not_after - utcnow()
    if left.total_seconds() <= 0:
        return Check("proxy CA", "fail", f"expired {info.not_after:%Y-%m-%d}: run "
                     "'mcp-keys ca rotate'")
    if left.days < 30:
        return Check("proxy CA", "warn", f"expires in {left.days}d: run 'mcp-keys ca rotate'")
    return Check("proxy CA", "pass", f"key 0600, expires {info.not_after:%Y-%m-%d}, "
                 f"certifies {', '.join(info.hosts)}")


def _services_check(manager: KeyManager) -> Check | None:
    """services.toml, if there is one, read and validated by the gateway's own loader: a
    literal secret, an unsafe file or a bad rule fails here as it would fail the gateway."""
    from .gateway.services import ConfigError, read, services_path

    store = manager.store
    path = services_path(getattr(store, "path", None) or getattr(store, "url", None))
    if not path.exists() and not path.is_symlink():
        return None
    try:
        services = read(path)
    except ConfigError as exc:
        return Check("services.toml", "fail", str(exc))
    return Check("services.toml", "pass", f"{path}: {len(services)} services, references only")


def run_checks(manager: KeyManager, env_file: str | os.PathLike[str] | None = None,
               warn_within: timedelta = DEFAULT_WARN_WITHIN) -> list[Check]:
    """Every check, in a fixed order; a store that does not exist is one failure."""
    store = manager.store
    if isinstance(store, JsonStore) and not store.exists():
        return [Check("store exists", "fail", str(manager.missing_store()))]
    if isinstance(store, JsonStore):
        checks = _file_checks(store)
    else:
        from .stores.postgres import PostgresStore

        assert isinstance(store, PostgresStore)
        checks = [Check(name, outcome, message) for name, outcome, message in store.health()]
        if any(check.outcome == "fail" for check in checks):
            return checks
    checks.append(_chain_check(manager))
    for extra in (_services_check(manager), _proxy_ca_check(manager)):
        if extra is not None:
            checks.append(extra)
    if env_file is not None and Path(env_file).exists():
        checks.append(_mode_check(".env file", Path(env_file), 0o600))
        checks.append(_git_check(".env in git", Path(env_file)))
    try:
        keys = manager.list(status=Status.ACTIVE)
    except McpKeysError as exc:
        checks.append(Check("store readable", "fail", str(exc)))
        return checks
    checks.append(Check("store readable", "pass", f"{len(keys)} active keys"))
    forever = [k.id for k in keys if k.expires_at is None]
    checks.append(Check("expiry set", "warn", "active keys that never expire: "
                        + ", ".join(forever)) if forever
                  else Check("expiry set", "pass", "every active key expires"))
    now = utcnow()
    soon = [k.id for k in keys if k.expires_soon(now, warn_within)]
    checks.append(Check("expiring soon", "warn", "keys expiring within "
                        f"{warn_within.days}d: " + ", ".join(soon)) if soon
                  else Check("expiring soon", "pass", f"none within {warn_within.days}d"))
    return checks
