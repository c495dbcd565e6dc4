"""The streamable HTTP transport's guards: who may connect, from which page, how much.

A server on 127.0.0.1 is still reachable by every web page the user opens (a page can
POST to localhost, and DNS rebinding can make a hostile name resolve to 127.0.0.1), and
by every other user of the machine. So:

- ``Host`` and ``Origin`` headers are checked against loopback names (plus what the
  operator adds): a rebound name or a foreign page gets 421 / 403;
- with ``MMSEARCH_HTTP_TOKEN`` set, every request needs ``Authorization: Bearer
  <token>`` (compared in constant time), else 401; binding to a non-loopback address
  requires a token;
- request bodies above ``http_max_body_bytes`` get 413; a declared ``Content-Length``
  over the limit is refused before any of the body is read.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings

from mmsearch.config import Settings
from mmsearch.errors import ConfigurationError

log = logging.getLogger("mcp_server")

LOOPBACK_HOSTS = ["127.0.0.1:*", "localhost:*", "[::1]:*"]
LOOPBACK_ORIGINS = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]

Scope = dict[str, Any]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def transport_security(settings: Settings, host: str) -> TransportSecuritySettings:
    """Host/Origin checks, always on: loopback names, the bound address, and the
    operator's additions."""
    hosts = list(LOOPBACK_HOSTS)
    if not is_loopback(host) and host not in ("0.0.0.0", "::"):
        hosts.append(f"[{host}]:*" if ":" in host else f"{host}:*")
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=hosts + list(settings.http_allowed_hosts),
        allowed_origins=LOOPBACK_ORIGINS + list(settings.http_allowed_origins),
    )


class BearerTokenMiddleware:
    """Refuse HTTP requests that lack ``Authorization: Bearer <token>`` (401), before the
    body is read or the MCP layer sees them."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self._expected = token.encode()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = b""
        for name, value in scope.get("headers", []):
            if name.lower() == b"authorization":
                given = value
                break
        # RFC 9110 11.1: the scheme is case-insensitive, and one or more spaces follow it.
        scheme, _, credentials = given.partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(
            credentials.lstrip(b" "), self._expected
        ):
            await _plain(
                send, 401, "missing or wrong bearer token", [(b"www-authenticate", b"Bearer")]
            )
            return
        await self.app(scope, receive, send)


async def _plain(send: Any, status: int, text: str, headers: list[tuple[bytes, bytes]]) -> None:
    body = json.dumps({"error": text}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def http_app(server: MCPServer, settings: Settings, host: str) -> Any:
    """The ASGI app for ``/mcp`` with every guard in place."""
    if not is_loopback(host) and not settings.http_token:
        raise ConfigurationError(
            f"refusing to serve HTTP on {host} without authentication: set "
            "MMSEARCH_HTTP_TOKEN (clients send 'Authorization: Bearer <token>'), or bind "
            "to 127.0.0.1"
        )
    app: Any = server.streamable_http_app(
        host=host,
        transport_security=transport_security(settings, host),
        max_request_body_size=settings.http_max_body_bytes,
    )
    if settings.http_token:
        app = BearerTokenMiddleware(app, settings.http_token)
    return app
