"""The mmsearch MCP server: a thin adapter that exposes the library's indexing, search,
reranking and housekeeping as MCP tools over stdio or streamable HTTP.

Importing this package loads neither torch nor any model; the library (and with it the
models) is imported on the first tool call that needs it.
"""

from mcp_server.server import create_server

__all__ = ["create_server"]
