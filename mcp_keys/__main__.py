"""``python -m mcp_keys`` runs the CLI."""

from .cli import main

main()
