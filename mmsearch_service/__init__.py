"""One long-lived mmsearch service per data directory, and the client side of reaching it.

The service hosts :mod:`mcp_server`'s MCP server (models and database opened once) on a
Unix socket; ``mmsearch-mcp`` and the ``mmsearch`` CLI are fronts that connect to it and
start it on demand. The library (:mod:`mmsearch`) knows nothing of it.
"""
