"""Where the gateway's policy may live: not where the agent it serves edits files.

A coding agent edits its working directory and the git work tree around it. A store or
``services.toml`` there lets the agent point ``base_url`` at its own host, or add a key
record, and have the gateway hand it the real credential. So the gateway side (``service``,
``gateway serve``, ``run --proxy``) defaults to a per-user directory, and serving refuses a
policy file that resolves (symlinks followed) into the current directory or any git work
tree, or that has a second hard link, unless the operator says ``--allow-workspace-policy``;
an exec service's working directory there, whose files the tool reads as its own
configuration (a git repository's remote and hooks), or its program or a script an
argument rule names, which the agent could rewrite; and a ``file:`` or ``dotenv:``
credential there, which the agent could simply read.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..errors import McpKeysError

ALLOW_FLAG = "--allow-workspace-policy"  # or MCP_KEYS_ALLOW_WORKSPACE_POLICY=1 (Click's)


class WorkspacePolicy(McpKeysError):
    """The store or services file sits where the agent could rewrite it."""


def user_dir() -> Path:
    """``$XDG_CONFIG_HOME/mcp-keys`` (``~/.config/mcp-keys`` when unset or relative, as
    the XDG spec says a relative value is to be ignored)."""
    base = os.environ.get("XDG_CONFIG_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".config"
    return root / "mcp-keys"


def gateway_store(store: str | os.PathLike[str] | None) -> str:
    """The store of a gateway-side command: the one named (argument, ``MCP_KEYS_STORE``),
    else the per-user one, never ``./.mcp-keys`` in the agent's workspace."""
    if store is not None and os.fspath(store) != "":
        return os.fspath(store)
    return os.environ.get("MCP_KEYS_STORE") or str(user_dir() / "keys.json")


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def workspace_of(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` is in an agent's reach, or ``None``. The file system root and the home
    directory do not count as a working directory, nor a ``.git`` in them as a work tree
    (a dotfiles repository): both would make every path "inside"."""
    real = os.path.realpath(path)
    home = os.path.realpath(os.path.expanduser("~"))
    try:
        cwd = os.path.realpath(os.getcwd())
    except OSError:  # a deleted working directory holds nothing
        cwd = os.sep
    if cwd not in (os.sep, home) and _within(real, cwd):
        return f"is inside the current directory {cwd}"
    for parent in Path(real).parents:
        if str(parent) in (os.sep, home):
            continue
        if os.path.lexists(parent / ".git"):
            return f"is inside the git work tree {parent}"
    try:
        info = os.stat(real)
        links = info.st_nlink if stat.S_ISREG(info.st_mode) else 1  # a directory has many
    except OSError:
        links = 1  # not there yet: nothing can be linked to it
    if links > 1:
        return f"has {links} hard links (one could be inside a workspace)"
    return None


def check_policy_location(store: str, services: Path, *, allow: bool) -> None:
    """Refuse to serve from a store or services file an agent could rewrite; the message
    names the per-user directory to move them to and the flag that overrides."""
    from ..stores import is_url

    if allow:
        return
    candidates = [("services file", services)]
    if not is_url(store):
        candidates.append(("store", Path(store)))
    for what, path in candidates:
        why = workspace_of(path)
        if why is not None:
            raise WorkspacePolicy(
                f"the {what} {path} {why}, where an agent could rewrite where credentials "
                f"go: move the store and services.toml to {user_dir()}/ (mode 0700) and "
                f"leave --store and MCP_KEYS_STORE unset, or pass {ALLOW_FLAG}")
    for name, kind, place in _places(services):
        if kind == "program":  # tools installed as git clones (Homebrew, pyenv) are common
            why = _in_project(place)
        else:
            why = workspace_of(os.path.join(place, ".probe") if kind == "cwd" else place)
        if why is None:
            continue
        if kind == "program":
            raise WorkspacePolicy(
                f"exec service {name} runs {place}, which {why.removeprefix('is ')}: an "
                "agent could rewrite what runs with the credential; install the tool "
                f"outside the workspace, or pass {ALLOW_FLAG}")
        if kind == "cwd":
            raise WorkspacePolicy(
                f"exec service {name} runs in {place}, which {why.removeprefix('is ')}: "
                "the tool reads its configuration there (git: the remote its credential "
                "goes to, hooks run with it), so an agent could redirect it; remove its cwd "
                f"(it then runs in a fresh directory) or pass {ALLOW_FLAG}")
        raise WorkspacePolicy(
            f"service {name} reads its credential from {place}, which {why.removeprefix('is ')}"
            ": the agent can read it there (and swap it); keep it in a keyring, or in a "
            f"file under {user_dir()}/, or pass {ALLOW_FLAG}")


def _in_project(path: str) -> str | None:
    """Whether ``path`` is inside the current directory or the git work tree around it
    (the agent's project), or ``None``."""
    real = os.path.realpath(path)
    home = os.path.realpath(os.path.expanduser("~"))
    try:
        cwd = os.path.realpath(os.getcwd())
    except OSError:
        return None
    if cwd in (os.sep, home):
        return None
    roots = [cwd, *(str(parent) for parent in Path(cwd).parents
                    if str(parent) not in (os.sep, home) and os.path.lexists(parent / ".git"))]
    for root in roots:
        if _within(real, root):
            where = "the current directory" if root == cwd else "the git work tree"
            return f"is inside {where} {root}"
    return None


def _named_path(pattern: str) -> str | None:
    """The absolute path an argument pattern names (``/x``, ``@/x``, ``--file=/x``,
    ``-d@/x``), or for a wildcard one (``/srv/*.py``) a file in its fixed directory."""
    head, slash, tail = pattern.partition("/")
    if not slash or head.rpartition("=")[2].rpartition("@")[2].lstrip("-") != "":
        return None
    path = "/" + tail
    if "*" in path:
        path = os.path.join(os.path.dirname(path.split("*", 1)[0]), ".probe")
    return path


def _places(services: Path) -> list[tuple[str, str, str]]:
    """(service, what, path) for each exec working directory ("cwd"), program and
    absolute file an argument rule names (``/x``, ``@/x``, ``--f=/x``: "program"), and
    ``file:``/``dotenv:`` credential ("secret"); none when the file cannot be read
    (serving reports that itself)."""
    from ..secrets.reference import parse_reference
    from .services import ConfigError, read

    try:
        found = read(services)
    except ConfigError:
        return []
    places = []
    for name, service in sorted(found.items()):
        if service.kind == "exec" and service.cwd is not None:
            places.append((name, "cwd", service.cwd))
        if service.kind == "exec" and service.command:
            places.append((name, "program", service.command))
        for rule in service.allow_args:  # a script or file the command is told to read
            places += [(name, "program", path) for path in map(_named_path, rule.split())
                       if path is not None]
        for text in (service.secret, *(ref for _, ref in service.secret_env)):
            if text:
                ref = parse_reference(text)
                if ref.scheme in ("file", "dotenv"):
                    places.append((name, "secret", ref.target))
    return places
