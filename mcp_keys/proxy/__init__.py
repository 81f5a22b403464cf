"""``mcp-keys run --proxy`` (in progress): protect unmodified MCP servers by swapping a
placeholder for the real credential at a loopback intercepting proxy. This release ships
its certificate authority (``ca``); the proxy itself is the next step."""
