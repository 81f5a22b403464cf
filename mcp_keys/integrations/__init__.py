"""Adapters that put mcp-keys in front of MCP servers."""
