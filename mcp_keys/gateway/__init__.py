"""The gateway: agents call upstream APIs through mcp-keys and never hold the upstream keys.

A core with no MCP in it: services and their rules (``model``), the ``services.toml``
file (``services``), request hygiene and path normalisation (``hygiene``), credential
injection (``injection``, ``sigv4``), scrubbing (``scrub``), rate limits (``ratelimit``),
one upstream request with its decision and audit line (``proxy``) and allow-listed
commands (``execmode``). Two front-ends sit on it: the MCP server (``server``, run by
``serve``) and the network interceptor of ``run --proxy`` (``interceptor``), each
describing a request the same way.
"""
