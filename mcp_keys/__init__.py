"""mcp-keys: API key lifecycle for MCP servers (create, rotate, revoke, expire, validate)."""

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
from .models import ApiKey, IssuedKey, Reason, Status, SweepReport, ValidationResult
from .validator import Validator, validate_api_key

__all__ = [
    "AmbiguousKey",
    "ApiKey",
    "EnvFileError",
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
