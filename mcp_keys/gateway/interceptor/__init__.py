"""``mcp-keys run --proxy``: protect unmodified MCP servers. The child gets placeholders
instead of keys, and its traffic goes through a loopback intercepting proxy (mitmproxy)
that swaps in the real credential on the services' own hosts only: the local CA (``ca``),
the mitmproxy addon (``addon``), the launcher (``run``) and Node's proxy shim
(``node_preload.js``)."""
