"""``mmsearch-mcp`` / ``python -m mcp_server``: run the server over stdio (default) or
streamable HTTP."""

from __future__ import annotations

import argparse
import logging
import sys

from mcp.server.mcpserver import MCPServer

from mcp_server.http import http_app
from mcp_server.server import create_server
from mcp_server.watch_tools import start_server_watching
from mmsearch.config import Settings
from mmsearch.errors import ConfigurationError

log = logging.getLogger("mcp_server")


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


def _serve_http(
    server: MCPServer, settings: Settings, host: str, port: int, log_level: str
) -> None:
    """Serve ``/mcp`` with uvicorn; ``--port 0`` picks a free port (logged on start-up).
    See :mod:`mcp_server.http` for the checks every request goes through."""
    import uvicorn

    app = http_app(server, settings, host)
    uvicorn.run(app, host=host, port=port, log_level=log_level.lower())


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level,
        force=True,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    settings = Settings()
    server = create_server(settings)
    watcher = start_server_watching(server, settings)
    try:
        if args.transport == "stdio":
            server.run("stdio")
        else:
            try:
                _serve_http(server, settings, args.host, args.port, args.log_level)
            except ConfigurationError as exc:
                log.error("%s", exc)
                raise SystemExit(2) from None
    finally:
        watcher.stop()
        server.shared_search.close()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
