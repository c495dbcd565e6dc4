"""The stdio front: ``mmsearch-mcp`` as Claude Desktop or VS Code start it, piping its
client's MCP session to the data directory's service (started on demand).

A byte pipe, not an MCP proxy: the service speaks MCP framed exactly as stdio is, so the
client's own session (its handshake, its roots, progress, cancellation, every tool the
service offers now or later) reaches the service unchanged, and this process imports
neither torch nor the MCP SDK. The front adds one thing, the hello line that carries its
own ``MMSEARCH_ALLOWED_ROOTS``: the service bounds this session, and only this one, by
them.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading

from mmsearch.config import Settings

log = logging.getLogger("mcp_server")

BLOCK = 1 << 16


def _pump_in(sock: socket.socket, stdin_fd: int) -> None:
    """Client -> service; at the client's EOF, half-close so the service ends the session."""
    try:
        while True:
            data = os.read(stdin_fd, BLOCK)
            if not data:
                break
            sock.sendall(data)
    except OSError as exc:
        log.debug("stdin pump stopped: %s", exc)
    finally:
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def pipe(sock: socket.socket, stdin_fd: int = 0, stdout_fd: int = 1) -> None:
    """Copy bytes both ways until the service closes the connection."""
    threading.Thread(target=_pump_in, args=(sock, stdin_fd), daemon=True).start()
    while True:
        data = sock.recv(BLOCK)
        if not data:
            return
        view = memoryview(data)
        while view:
            written = os.write(stdout_fd, view)
            view = view[written:]


def run_front(settings: Settings) -> None:
    """Connect (starting the service if needed) and pipe stdio through until either side
    closes."""
    from mmsearch_service.client import connect

    sock = connect(settings, kind="stdio")
    log.info("connected to the mmsearch service for %s", settings.data_dir)
    with sock:
        pipe(sock, sys.stdin.fileno(), sys.stdout.fileno())
    log.info("the service closed the session")
