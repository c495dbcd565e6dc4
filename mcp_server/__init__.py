"""The mmsearch MCP server: a thin adapter that exposes the library's indexing, search,
reranking and housekeeping as MCP tools over stdio or streamable HTTP.

Importing this package loads neither torch nor any model (the library, and with it the
models, is imported on the first tool call that needs it), nor the MCP SDK until
``create_server`` is asked for: the stdio front (:mod:`mcp_server.front`) needs neither.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_server"]


def __getattr__(name: str) -> Any:
    if name == "create_server":
        from mcp_server.server import create_server

        return create_server
    raise AttributeError(f"module 'mcp_server' has no attribute {name!r}")
