"""The environment of the command ``run --proxy`` starts: built from an allow-list, never
copied from ours. The command gets what a program needs to run at all (``BASE``, every
``LC_*``), the proxy and trust variables, its placeholders, and the variables the operator
names with ``--pass-env``; never a source credential (``VAULT_*``, ``AWS_*``), mcp-keys'
own (``MCP_KEYS_*``, ``MCP_API_KEY``), a variable a reference names, or any variable whose
value holds a resolved credential."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ...errors import UsageError
from ...secrets.reference import is_variable_name

BASE = ("PATH", "HOME", "LANG", "LANGUAGE", "TERM", "TZ", "USER", "LOGNAME", "SHELL",
        "TMPDIR")
BASE_PREFIXES = ("LC_",)
FORBIDDEN_PREFIXES = ("VAULT_", "AWS_", "MCP_KEYS_")
FORBIDDEN = ("MCP_API_KEY",)


def forbidden(name: str) -> bool:
    """Whether ``name`` is a credential's variable no child is ever given (in any case:
    some tools read ``vault_token`` as well)."""
    upper = name.upper()
    return upper in FORBIDDEN or upper.startswith(FORBIDDEN_PREFIXES)


def check_pass_env(names: Iterable[str], named_by_references: Iterable[str]) -> list[str]:
    """The ``--pass-env`` names, each a variable name the child may have."""
    referenced = set(named_by_references)
    checked = []
    for name in names:
        if not is_variable_name(name):
            raise UsageError(f"--pass-env takes a variable name, not {name!r}")
        if forbidden(name) or name in referenced:
            raise UsageError(f"--pass-env {name}: a credential's variable is never passed to "
                             "the command (run --proxy exists to keep it away)")
        checked.append(name)
    return checked


def child_environment(source: Mapping[str, str], passed: Iterable[str],
                      avoid_values: Iterable[str], named_by_references: Iterable[str]
                      ) -> dict[str, str]:
    """The allowed variables of ``source``, minus any that a reference names or whose value
    holds one of ``avoid_values`` (the resolved credentials)."""
    allowed = set(BASE) | set(passed)
    referenced = set(named_by_references)
    values = [value for value in avoid_values if value]
    return {name: text for name, text in source.items()
            if (name in allowed or name.startswith(BASE_PREFIXES))
            and not forbidden(name) and name not in referenced
            and not any(value in text for value in values)}
