"""The service: the MCP server of :mod:`mcp_server`, one per data directory, on a Unix
socket.

Every connection is one MCP session, framed as on stdio (one JSON-RPC message per line),
so a stdio front is a byte pipe and everything MCP carries (progress, cancellation,
``roots/list``, new tools) crosses it unchanged. Before MCP, the front sends one JSON
line, the hello (:func:`mmsearch_service.client.hello`): its configured allowed roots,
which bound that session's calls exactly as ``MMSEARCH_ALLOWED_ROOTS`` bounds an
in-process server's, and the store and model it expects. The service answers one line.

Only the same OS user gets in: the socket lives in a 0700 directory, and on Linux each
peer's uid (``SO_PEERCRED``) is checked as well.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import struct
import sys
import time
from typing import Any

import anyio
import anyio.abc
import mcp_types as types
from anyio.streams.buffered import BufferedByteReceiveStream
from mcp.server.mcpserver import MCPServer
from mcp.shared._context_streams import create_context_streams
from mcp.shared.message import SessionMessage

from mcp_server.server import create_server, front_allowed_roots
from mcp_server.watch_tools import start_server_watching
from mmsearch.access import resolve_roots
from mmsearch.config import Settings
from mmsearch_service.client import identity
from mmsearch_service.runtime import Runtime, flocked, runtime_for

log = logging.getLogger("mmsearch_service")

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""Longest JSON-RPC line accepted (a base64 query image fits well inside)."""


class Service:
    """The running service: its server, its clients, its idle clock."""

    def __init__(self, settings: Settings, runtime: Runtime, server: MCPServer) -> None:
        self.settings = settings
        self.runtime = runtime
        self.server = server
        self.started = time.time()
        self.clients: dict[int, dict[str, Any]] = {}
        self._next_client = 0
        self._idle_since = time.monotonic()
        self.stop = anyio.Event()

    def status(self) -> dict[str, Any]:
        shared = getattr(self.server, "shared_search", None)
        search = getattr(shared, "_search", None)
        models = {
            "embedder": getattr(search, "_embedder", None) is not None,
            "captioner": getattr(search, "_captioner", None) is not None,
            "store": getattr(search, "_store", None) is not None,
        }
        status: dict[str, Any] = {
            "pid": os.getpid(),
            "started": self.started,
            "uptime_s": round(time.time() - self.started, 1),
            "data_dir": str(self.runtime.data_dir),
            "socket": str(self.runtime.socket),
            "log": str(self.runtime.log_file),
            "models_loaded": models,
            "clients": list(self.clients.values()),
            "idle_exit_s": self.settings.service_idle_s,
        }
        for name in ("jobs_status", "watches_status"):  # hooks of the jobs and watch layers
            hook = getattr(self.server, name, None)
            if callable(hook):
                status[name.removesuffix("_status")] = hook()
        return status

    def busy(self) -> bool:
        """Whether work is running that idle exit must not cut (index jobs)."""
        hook = getattr(self.server, "service_busy", None)
        return bool(hook()) if callable(hook) else False

    async def idle_watch(self) -> None:
        """Exit after ``service_idle_s`` with no client and nothing running."""
        while not self.stop.is_set():
            if self.clients or self.busy():
                self._idle_since = time.monotonic()
            elif time.monotonic() - self._idle_since >= self.settings.service_idle_s:
                log.info("idle for %g s: exiting", self.settings.service_idle_s)
                self.stop.set()
                return
            await anyio.sleep(min(1.0, self.settings.service_idle_s / 4))

    async def handle(self, stream: anyio.abc.SocketStream) -> None:
        async with stream:
            peer = _peer(stream)
            if peer is not None and peer[1] != os.getuid():
                log.warning("refused a connection from uid %s (pid %s)", peer[1], peer[0])
                return
            reader = BufferedByteReceiveStream(stream)
            try:
                with anyio.fail_after(10):
                    line = await reader.receive_until(b"\n", 64 * 1024)
                greeting = json.loads(line)
                if not isinstance(greeting, dict) or greeting.get("mmsearch") != 1:
                    raise ValueError("not an mmsearch hello")
            except Exception as exc:
                log.warning("dropped a connection without a valid hello: %s", exc)
                await _answer(stream, {"error": "expected an mmsearch hello line first"})
                return
            control = greeting.get("control")
            if control is not None:
                await self._control(stream, control)
                return
            wanted = greeting.get("identity") or {}
            ours = identity(self.settings)
            if wanted != ours:
                await _answer(
                    stream,
                    {
                        "error": f"this data directory's service serves {ours}, the front "
                        f"wants {wanted}; stop it (mmsearch service stop) or use another "
                        "MMSEARCH_DATA_DIR"
                    },
                )
                return
            roots = greeting.get("allowed_roots")
            configured = None if roots is None else resolve_roots(roots)
            await _answer(stream, {"ok": True, "pid": os.getpid()})
            client_id = self._next_client
            self._next_client += 1
            self.clients[client_id] = {
                "kind": str(greeting.get("kind", "?")),
                "pid": peer[0] if peer else greeting.get("pid"),
                "connected": time.time(),
                "allowed_roots": roots,
            }
            log.info("client %d connected: %s", client_id, self.clients[client_id])
            try:
                front_allowed_roots.set((configured,))
                await self._serve_mcp(stream, reader)
            finally:
                del self.clients[client_id]
                self._idle_since = time.monotonic()
                log.info("client %d disconnected", client_id)

    async def _control(self, stream: anyio.abc.SocketStream, request: str) -> None:
        if request == "status":
            await _answer(stream, self.status())
        elif request == "stop":
            await _answer(stream, {"ok": True, "pid": os.getpid()})
            self.stop.set()
        else:
            await _answer(stream, {"error": f"unknown control request {request!r}"})

    async def _serve_mcp(
        self, stream: anyio.abc.SocketStream, reader: BufferedByteReceiveStream
    ) -> None:
        """One MCP session over the connection, framed as :func:`mcp.server.stdio.stdio_server`
        frames stdio."""
        incoming_writer, incoming = create_context_streams[SessionMessage | Exception](0)
        outgoing, outgoing_reader = create_context_streams[SessionMessage](0)

        async def read_lines() -> None:
            async with incoming_writer:
                while True:
                    try:
                        line = await reader.receive_until(b"\n", MAX_MESSAGE_BYTES)
                    except (anyio.EndOfStream, anyio.IncompleteRead, OSError):
                        return
                    except anyio.DelimiterNotFound:
                        log.warning("a message over %d bytes: closing", MAX_MESSAGE_BYTES)
                        return
                    if not line.strip():
                        continue
                    try:
                        message = types.jsonrpc_message_adapter.validate_json(line, by_name=False)
                    except Exception as exc:
                        await incoming_writer.send(exc)
                        continue
                    await incoming_writer.send(SessionMessage(message))

        async def write_lines() -> None:
            async with outgoing_reader:
                async for session_message in outgoing_reader:
                    data = session_message.message.model_dump_json(
                        by_alias=True, exclude_unset=True
                    )
                    try:
                        await stream.send(data.encode() + b"\n")
                    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                        return

        lowlevel = self.server._lowlevel_server
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(read_lines)
            tasks.start_soon(write_lines)
            await lowlevel.run(incoming, outgoing, lowlevel.create_initialization_options())
            tasks.cancel_scope.cancel()


def _peer(stream: anyio.abc.SocketStream) -> tuple[int, int, int] | None:
    """(pid, uid, gid) of the connecting process, where the OS tells (Linux)."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)
    data = raw.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    return struct.unpack("3i", data)


async def _answer(stream: anyio.abc.SocketStream, answer: dict[str, Any]) -> None:
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        await stream.send(json.dumps(answer).encode() + b"\n")


def _setup_logging(runtime: Runtime, detached: bool) -> None:
    handlers: list[logging.Handler] = [logging.FileHandler(runtime.log_file)]
    if not detached:
        handlers.append(logging.StreamHandler(sys.stderr))
    logging.basicConfig(
        level=logging.INFO,
        handlers=handlers,
        force=True,
        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)


def _add_status_hooks(server: Any) -> None:
    """What ``service status`` shows of the job and watch layers, and what holds off idle
    exit: a job queued or running, or a watched folder (watching stops with the service)."""
    shared = server.shared_search

    def jobs_status() -> list[dict[str, Any]]:
        return [
            {k: job.get(k) for k in ("id", "state", "done", "total", "paths", "eta_s")}
            for job in (j.model_dump(mode="json") for j in shared.jobs.recent(10))
        ]

    def watches_status() -> list[dict[str, Any]]:
        watcher = getattr(server, "folder_watcher", None)
        if watcher is None:
            return []
        return [
            {"path": str(f.path), "source": f.source, "last_error": f.last_error}
            for f in watcher.state()
        ]

    def service_busy() -> bool:
        watcher = getattr(server, "folder_watcher", None)
        if watcher is not None and watcher.folders:
            return True
        return any(job.active and job.pid == os.getpid() for job in shared.jobs.recent(20))

    server.jobs_status = jobs_status
    server.watches_status = watches_status
    server.service_busy = service_busy


def run(settings: Settings | None = None, *, detached: bool = False) -> int:
    """Run the service in this process until ``stop``, idle exit or SIGTERM. Returns 0,
    or 3 when another service already holds the data directory."""
    settings = settings or Settings()
    runtime = runtime_for(settings.data_dir)
    _setup_logging(runtime, detached)
    with flocked(runtime.service_lock, timeout_s=0) as locked:
        if not locked:
            log.info("a service already runs for %s", runtime.data_dir)
            return 3
        # The service bounds each session by its front's roots (the hello); its own
        # environment's MMSEARCH_ALLOWED_ROOTS must not widen or narrow another front's.
        server = create_server(settings.model_copy(update={"allowed_roots": None}))
        _add_status_hooks(server)
        # The job manager marks the jobs of a service that died as interrupted: at start,
        # so `service status` and `mmsearch jobs` say so before any client calls.
        _ = server.shared_search.jobs  # type: ignore[attr-defined]
        watcher = start_server_watching(server, settings)
        service = Service(settings, runtime, server)
        try:
            anyio.run(_serve, service)
        finally:
            watcher.stop()
            server.shared_search.close()  # type: ignore[attr-defined]
            for path in (runtime.socket, runtime.pidfile):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            log.info("service stopped")
    return 0


async def _serve(service: Service) -> None:
    runtime = service.runtime
    with contextlib.suppress(FileNotFoundError):
        runtime.socket.unlink()  # stale: we hold the service lock, so nobody serves it
    old_umask = os.umask(0o177)
    try:
        listener = await anyio.create_unix_listener(runtime.socket)
    finally:
        os.umask(old_umask)
    os.chmod(runtime.socket, 0o600)
    _write_pidfile(runtime, service)
    log.info("serving %s on %s (pid %d)", runtime.data_dir, runtime.socket, os.getpid())
    async with listener, anyio.create_task_group() as tasks:
        tasks.start_soon(service.idle_watch)
        tasks.start_soon(_stop_on_signal, service)
        tasks.start_soon(listener.serve, service.handle, tasks)
        await service.stop.wait()
        tasks.cancel_scope.cancel()


async def _stop_on_signal(service: Service) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("signal %d: stopping", signum)
            service.stop.set()
            return


def _write_pidfile(runtime: Runtime, service: Service) -> None:
    info = {
        "pid": os.getpid(),
        "started": service.started,
        "socket": str(runtime.socket),
        "data_dir": str(runtime.data_dir),
    }
    tmp = runtime.pidfile.with_suffix(".tmp")
    tmp.write_text(json.dumps(info))
    os.replace(tmp, runtime.pidfile)


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    detached = "--detached" in args
    raise SystemExit(run(detached=detached))
