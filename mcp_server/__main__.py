"""``mmsearch-mcp`` / ``python -m mcp_server``: run the server over stdio (default) or
streamable HTTP.

Over stdio, by default, this process is a front: it pipes its client's session to the
data directory's service (:mod:`mcp_server.front`). ``--no-service`` or
``MMSEARCH_SERVICE=off`` serve in this process instead, as does ``--transport http``
(itself a long-lived server for many clients)."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING

from mmsearch.config import Settings
from mmsearch.errors import ConfigurationError, MMSearchError

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

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
        "--no-service",
        action="store_true",
        help="Serve stdio in this process instead of through the data directory's service "
        "(same as MMSEARCH_SERVICE=off).",
    )
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

    from mcp_server.http import http_app

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
    if args.transport == "stdio" and not args.no_service and settings.uses_service:
        from mmsearch_service.client import service_enabled

        if service_enabled(settings):
            from mcp_server.front import run_front

            try:
                run_front(settings)
            except MMSearchError as exc:
                log.error("%s", exc)
                raise SystemExit(1) from None
            return
    from mcp_server.server import create_server
    from mcp_server.watch_tools import start_server_watching

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
