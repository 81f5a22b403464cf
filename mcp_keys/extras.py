"""Optional dependencies: which extra brings which module, and the one line that says how
to install it, from a clone (``pip install -e '.[X]'``) or from an index
(``pip install 'mcp-keys[X]'``).

Every hint the package prints is made here, so each names an extra pyproject.toml has
(a test checks) and both ways of installing it. The CLI turns a ``ModuleNotFoundError``
for a module in ``MODULE_EXTRAS`` into ``missing_module``'s line instead of a traceback.
"""

from __future__ import annotations

import sys

from .errors import McpKeysError

# The top-level module an optional feature imports -> the extra that installs it.
MODULE_EXTRAS = {
    "mcp": "gateway",
    "uvicorn": "gateway",
    "httpx": "gateway",
    "httpx2": "gateway",
    "starlette": "gateway",
    "sse_starlette": "gateway",
    "fastmcp": "fastmcp",
    "fastapi": "fastapi",
    "cryptography": "proxy",
    "mitmproxy": "proxy",
    "psycopg": "postgres",
    "keyring": "keyring",
    "hvac": "vault",
    "boto3": "aws",
    "botocore": "aws",
}

# What each extra is for, in the words of the line that asks for it.
_PURPOSE = {
    "gateway": "the gateway",
    "mcp": "the MCP SDK integration",
    "fastmcp": "the FastMCP integration",
    "fastapi": "the FastAPI integration",
    "proxy": "the proxy's CA and run --proxy",
    "postgres": "a PostgreSQL store",
    "keyring": "keyring: references",
    "vault": "vault: references",
    "aws": "aws-sm: references and SigV4 signing",
}


def install_hint(extra: str) -> str:
    """How to install ``extra``: from a clone and from a package index."""
    return f"pip install -e '.[{extra}]' in a clone, or pip install 'mcp-keys[{extra}]'"


def proxy_unsupported() -> McpKeysError | None:
    """``run --proxy`` on a Python mitmproxy 12 does not support (no extra helps there)."""
    if sys.version_info >= (3, 12):
        return None
    found = ".".join(map(str, sys.version_info[:2]))
    return McpKeysError(f"run --proxy needs Python 3.12 or later (mitmproxy 12); this is "
                        f"Python {found}: install mcp-keys in a Python 3.12+ environment")


def missing_module(error: ImportError) -> McpKeysError | None:
    """The one-line error for an optional module that is not installed (or an integration's
    own ImportError, which already says what to install), or ``None`` for anything else:
    a real bug, which keeps its traceback."""
    if not isinstance(error, ModuleNotFoundError):
        said = str(error)
        return McpKeysError(said) if "pip install 'mcp-keys[" in said else None
    top = (error.name or "").partition(".")[0]
    extra = MODULE_EXTRAS.get(top)
    if extra is None:
        return None
    if top == "mitmproxy":
        unsupported = proxy_unsupported()
        if unsupported is not None:
            return unsupported
    return McpKeysError(f"{top} is not installed (needed for {_PURPOSE[extra]}): "
                        f"{install_hint(extra)}")
