"""What a refused call tells the agent, in one form wherever the refusal came from:
``reason`` (a machine word), ``rule`` (the rule or check that decided) and ``next_step``
(what would allow the call). Built only from the policy and the agent's own request,
never from a credential."""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .model import Service

# The rule and next step of a refusal that names nothing more specific, by reason.
DEFAULTS: dict[str, tuple[str, str]] = {
    "denied": ("gateway policy", "call list_services to see what this key may call"),
    "bad_request": ("request checks (before any rule)",
                    "fix the request and call again; explain shows what the rules allow"),
    "rate_limited": ("rate limit", "wait and retry"),
    "disabled": ("service disabled", "ask the operator to enable the service"),
    "restart_required": ("services file change that needs a restart",
                         "ask the operator to restart the gateway"),
    "config_error": ("services file invalid",
                     "ask the operator to fix services.toml ('mcp-keys service list' names "
                     "the error)"),
    "upstream_error": ("upstream call", "retry later; if it persists, ask the operator to "
                                        "check the service"),
    "unauthorized": ("mcp-keys key check", "ask the operator for a valid key"),
}


def default(reason: str) -> tuple[str, str]:
    """The rule and next step for ``reason`` when the refusal names none."""
    return DEFAULTS.get(reason, ("gateway policy", "ask the operator"))


def _command(*words: str) -> str:
    return " ".join(shlex.quote(word) for word in words)


def for_rules(service: Service, method: str, path: str, scopes: Iterable[str]
              ) -> tuple[str, str]:
    """``(rule, next_step)`` for a request ``service.decide`` refused: the deny rule that
    matched, the scope an allow rule needs, or the allow rule that would be missing."""
    held = frozenset(scopes)
    name = service.name
    for rule in service.deny:
        if rule.matches(method, path) and (rule.scope is None or rule.scope in held):
            return rule.describe(), (
                "the operator denies this on purpose; ask whether it should be allowed "
                f"(they would run "
                f"{_command('mcp-keys', 'service', 'edit', name, '--remove-deny', rule.text)})")
    for rule in service.allow:
        if rule.matches(method, path) and rule.scope is not None and rule.scope not in held:
            return f"scope {rule.scope} missing", (
                f"'{rule.describe()}' would allow it: ask the operator for a key with scope "
                f"{rule.scope}")
    wanted = f"{method} {path}"
    return ("no allow rule" if not service.allow else "no allow rule matches"), (
        f"ask the operator to add --allow '{wanted}' "
        f"({_command('mcp-keys', 'service', 'edit', name, '--allow', wanted)})")


def for_args(service: Service, args: list[str]) -> tuple[str, str]:
    """``(rule, next_step)`` for exec arguments no ``--allow-args`` rule matches."""
    wanted = " ".join(args)[:200]
    return ("no args rule" if not service.allow_args else "no args rule matches"), (
        f"ask the operator to allow these arguments on service {service.name} (an "
        f"--allow-args rule such as {shlex.quote(wanted)})")


def for_scope(name: str) -> tuple[str, str]:
    """An unknown service and one outside the key's scopes answer alike."""
    return f"scope gateway:{name} missing", (
        f"call list_services for what this key may use, or ask the operator for a key with "
        f"scope gateway:{name}")
