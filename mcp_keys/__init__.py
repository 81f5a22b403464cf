"""mcp-keys: API key lifecycle for MCP servers (create, rotate, revoke, expire, validate).

The public API, re-exported. Names resolve on first use so that ``mcp-keys --help`` does
not pay for modules it never touches.
"""

from __future__ import annotations

from importlib import import_module

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: `mcp-keys run` must not import typing
if TYPE_CHECKING:
    from typing import Any

    from .errors import (
        AmbiguousKey,
        EnvFileError,
        InvalidState,
        KeyNotFound,
        McpKeysError,
        StoreCorrupt,
        StoreError,
        StoreLocked,
        UsageError,
    )
    from .manager import KeyManager
    from .models import (
        ApiKey,
        InitReport,
        IssuedKey,
        Reason,
        Status,
        SweepReport,
        ValidationResult,
    )
    from .validator import Validator, validate_api_key

_WHERE = {
    **dict.fromkeys(["AmbiguousKey", "EnvFileError", "InvalidState", "KeyNotFound",
                     "McpKeysError", "StoreCorrupt", "StoreError", "StoreLocked",
                     "UsageError"], "errors"),
    "KeyManager": "manager",
    **dict.fromkeys(["ApiKey", "InitReport", "IssuedKey", "Reason", "Status", "SweepReport",
                     "ValidationResult"], "models"),
    "Validator": "validator",
    "validate_api_key": "validator",
}
__all__ = [
    "AmbiguousKey",
    "ApiKey",
    "EnvFileError",
    "InitReport",
    "InvalidState",
    "IssuedKey",
    "KeyManager",
    "KeyNotFound",
    "McpKeysError",
    "Reason",
    "Status",
    "StoreCorrupt",
    "StoreError",
    "StoreLocked",
    "SweepReport",
    "UsageError",
    "ValidationResult",
    "Validator",
    "validate_api_key",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'mcp_keys' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
