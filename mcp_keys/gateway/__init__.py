"""The gateway: agents call upstream APIs through mcp-keys and never hold the upstream keys.

A core with no MCP in it: services and their rules (``model``), the ``services.toml``
file (``config``), request hygiene (``hygiene``), credential injection (``injection``),
scrubbing (``scrub``), rate limits (``ratelimit``) and the decision, forwarding and audit
(``core``). The MCP server (``mcp_server``) is one front-end over ``Gateway``; anything that
can describe a request as a ``GatewayRequest`` can be another.
"""
