"""``python -m mcp_keys`` runs the CLI."""

from .entry import main

main()
