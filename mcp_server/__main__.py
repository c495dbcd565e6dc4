"""``mmsearch-mcp`` / ``python -m mcp_server``: run the server over stdio (default) or
streamable HTTP."""

from __future__ import annotations

import argparse
import logging
import sys

from mcp.server.mcpserver import MCPServer

from mcp_server.server import create_server


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmsearch-mcp", description="mmsearch MCP server (multimodal image search)."
    )
    parser.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    parser.add_argument(
        "--host", default="127.0.0.1", help="HTTP bind address (default: %(default)s)"
    )
    parser.add_argument("--port", type=int, default=8000, help="HTTP port (default: %(default)s)")
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    return parser


def _serve_http(server: MCPServer, host: str, port: int, log_level: str) -> None:
    """Serve ``/mcp`` with uvicorn; ``--port 0`` picks a free port (logged on start-up)."""
    import uvicorn

    app = server.streamable_http_app(host=host)
    uvicorn.run(app, host=host, port=port, log_level=log_level.lower())


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level,
        force=True,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    server = create_server()
    try:
        if args.transport == "stdio":
            server.run("stdio")
        else:
            _serve_http(server, args.host, args.port, args.log_level)
    finally:
        server.shared_search.close()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
