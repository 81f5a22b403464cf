"""``mcp-keys scan``: find hard-coded secrets in MCP client configs and ``.env`` files,
report them without showing them, and (``--fix``) move them into a secret source."""

from __future__ import annotations

from .scanner import Finding, scan

__all__ = ["Finding", "scan"]
