"""Reaching the service: find it, start it when none runs, and speak MCP to it.

Standard library only (plus :mod:`mmsearch.config`), so a front that imports this
answers in a fraction of a second: no torch, no MCP SDK. :class:`ServiceClient` is a
small synchronous MCP client (the initialize handshake, ``tools/call``, progress,
``roots/list``) for the CLI; the stdio front pipes its client's bytes straight through
the connection :func:`connect` returns.

A connection opens with one JSON line, the *hello* (see :mod:`mmsearch_service.service`):
the front's configured allowed roots and the settings the service must share with it. The
service answers one line, ``{"ok": true}`` or ``{"error": ...}``; MCP follows.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mmsearch.config import Settings
from mmsearch.errors import ConfigurationError, MMSearchError
from mmsearch_service.runtime import Runtime, flocked, read_pidfile, runtime_for

PROTOCOL_VERSION = "2025-11-25"
HELLO_TIMEOUT_S = 10.0


class ServiceError(MMSearchError):
    """The service could not be reached, started, or refused the connection."""


def identity(settings: Settings) -> dict[str, str]:
    """The settings a front and the service must agree on: one service serves one store
    with one embedding model."""
    return {
        "milvus_uri": settings.milvus_uri,
        "embed_model": settings.embed_model,
    }


def hello(settings: Settings, *, kind: str, bounded: bool = True) -> dict[str, Any]:
    """The first line of a connection. ``allowed_roots`` is the front's own upper bound
    (``MMSEARCH_ALLOWED_ROOTS`` as the front sees it, when ``bounded``); ``None`` leaves
    only the roots its MCP client shares."""
    configured = settings.allowed_roots if bounded else None
    return {
        "mmsearch": 1,
        "kind": kind,
        "pid": os.getpid(),
        "allowed_roots": None if configured is None else [str(p) for p in configured],
        "identity": identity(settings),
    }


def _open(runtime: Runtime, timeout_s: float) -> socket.socket | None:
    """A connected socket, or None when nothing answers at the socket path."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        sock.connect(os.fspath(runtime.socket))
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        return None
    except OSError:
        sock.close()
        raise
    return sock


def _greet(sock: socket.socket, greeting: dict[str, Any]) -> None:
    sock.settimeout(HELLO_TIMEOUT_S)
    sock.sendall(json.dumps(greeting).encode() + b"\n")
    line = _read_line(sock)
    if line is None:
        raise ServiceError("the service closed the connection before answering")
    answer = json.loads(line)
    if "error" in answer:
        raise ServiceError(f"the service refused the connection: {answer['error']}")
    sock.settimeout(None)


def _read_line(sock: socket.socket) -> bytes | None:
    chunks = []
    while True:
        byte = sock.recv(1)  # the hello answer only; MCP traffic is read in blocks
        if not byte:
            return None
        if byte == b"\n":
            return b"".join(chunks)
        chunks.append(byte)


def start_service(settings: Settings, runtime: Runtime) -> None:
    """Start the service detached: its own session, no terminal, stdio on /dev/null (it
    logs to its file), so it outlives the front that started it."""
    env = dict(os.environ)
    env["MMSEARCH_DATA_DIR"] = str(runtime.data_dir)
    env["MMSEARCH_MILVUS_URI"] = settings.milvus_uri
    env["MMSEARCH_EMBED_MODEL"] = settings.embed_model
    with open(os.devnull, "rb") as null_in, open(os.devnull, "wb") as null_out:
        subprocess.Popen(
            [sys.executable, "-m", "mmsearch_service", "--detached"],
            stdin=null_in,
            stdout=null_out,
            stderr=null_out,
            env=env,
            cwd="/",
            start_new_session=True,
            close_fds=True,
        )


def connect(
    settings: Settings,
    *,
    kind: str,
    bounded: bool = True,
    start: bool = True,
) -> socket.socket:
    """A greeted connection to the data directory's service, started if none answers.

    Two fronts racing here start one service: whoever holds ``start.lock`` starts it;
    the other waits on the lock, then finds it answering. A socket file nobody answers
    is stale; the new service replaces it.
    """
    runtime = runtime_for(settings.data_dir)
    greeting = hello(settings, kind=kind, bounded=bounded)
    sock = _open(runtime, HELLO_TIMEOUT_S)
    if sock is None:
        if not start:
            raise ServiceError(f"no service is running for {runtime.data_dir}")
        timeout = settings.service_start_timeout_s
        with flocked(runtime.start_lock, timeout_s=timeout) as locked:
            if not locked:
                raise ServiceError(f"another front kept {runtime.start_lock} for {timeout:g} s")
            sock = _open(runtime, HELLO_TIMEOUT_S)
            if sock is None:
                sock = _start_and_wait(settings, runtime, timeout)
    try:
        _greet(sock, greeting)
    except BaseException:
        sock.close()
        raise
    return sock


def _start_and_wait(settings: Settings, runtime: Runtime, timeout_s: float) -> socket.socket:
    if read_pidfile(runtime) is None:
        start_service(settings, runtime)
    # else: a service holds its lock but is not listening yet (starting up): wait for it
    deadline = time.monotonic() + timeout_s
    delay = 0.02
    while time.monotonic() < deadline:
        sock = _open(runtime, HELLO_TIMEOUT_S)
        if sock is not None:
            return sock
        time.sleep(delay)  # polling the socket: nothing else signals across processes
        delay = min(delay * 1.5, 0.25)
    log_hint = f"; see {runtime.log_file}"
    raise ServiceError(f"the service did not answer within {timeout_s:g} s{log_hint}")


def control(settings: Settings, request: str, timeout_s: float = 10.0) -> dict[str, Any] | None:
    """Send a control request (``status``, ``stop``) to a running service; None when
    none runs. Never starts one."""
    runtime = runtime_for(settings.data_dir)
    sock = _open(runtime, timeout_s)
    if sock is None:
        return None
    with sock:
        sock.settimeout(timeout_s)
        greeting = hello(settings, kind="control") | {"control": request}
        sock.sendall(json.dumps(greeting).encode() + b"\n")
        line = _read_line(sock)
    if line is None:
        raise ServiceError("the service closed the connection before answering")
    answer = json.loads(line)
    if "error" in answer:
        raise ServiceError(answer["error"])
    return answer


class ToolCallError(MMSearchError):
    """A tool answered with ``isError``; the message is the tool's own."""


class ServiceClient:
    """A synchronous MCP client over one service connection (the CLI's).

    ``roots`` are the folders this client shares, answered to the service's
    ``roots/list``: the CLI is the user at a terminal, so it shares the paths it was
    handed, no more, and brings no configured bound of its own (in-process, the CLI
    checks no roots either).
    """

    def __init__(self, sock: socket.socket, roots: list[Path] | None = None) -> None:
        self._sock = sock
        self._file = sock.makefile("rwb", buffering=0)
        self._buffer = b""
        self._ids = itertools.count(1)
        self._last_id = 0
        self._roots = [Path(p).resolve() for p in roots or []]
        result = self._request(
            "initialize",
            {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {"roots": {"listChanged": False}},
                "clientInfo": {"name": "mmsearch-cli", "version": "1"},
            },
        )
        self.server_info = result.get("serverInfo", {})
        self._send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    @classmethod
    def open(
        cls, settings: Settings, *, roots: list[Path] | None = None, kind: str = "cli"
    ) -> ServiceClient:
        return cls(connect(settings, kind=kind, bounded=False), roots=roots)

    def close(self) -> None:
        self._file.close()
        self._sock.close()

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def list_tools(self) -> list[dict[str, Any]]:
        return self._request("tools/list", {}).get("tools", [])

    def call_tool(
        self,
        name: str,
        arguments: dict[str, Any],
        progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """The tool's structured result; :class:`ToolCallError` when it reports an error."""
        params: dict[str, Any] = {"name": name, "arguments": arguments}
        if progress is not None:
            params["_meta"] = {"progressToken": f"cli-{os.getpid()}"}
        try:
            result = self._request("tools/call", params, progress)
        except KeyboardInterrupt:
            self._cancel_last("interrupted")
            raise
        if result.get("isError"):
            text = " ".join(b.get("text", "") for b in result.get("content", []))
            raise ToolCallError(text.removeprefix(f"Error executing tool {name}: ") or name)
        return result.get("structuredContent") or {}

    def _cancel_last(self, reason: str) -> None:
        """Tell the service the request in flight is cancelled (MCP cancellation)."""
        try:
            self._send(
                {
                    "jsonrpc": "2.0",
                    "method": "notifications/cancelled",
                    "params": {"requestId": self._last_id, "reason": reason},
                }
            )
        except OSError:
            pass

    def _send(self, message: dict[str, Any]) -> None:
        self._file.write(json.dumps(message).encode() + b"\n")

    def _receive(self) -> dict[str, Any]:
        line = self._file.readline()
        if not line:
            raise ServiceError("the service closed the connection")
        return json.loads(line)

    def _request(
        self,
        method: str,
        params: dict[str, Any],
        progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        request_id = self._last_id = next(self._ids)
        self._send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        while True:
            message = self._receive()
            if message.get("id") == request_id and "method" not in message:
                if "error" in message:
                    raise ServiceError(f"{method}: {message['error'].get('message')}")
                return message.get("result", {})
            if message.get("method") == "roots/list" and "id" in message:
                roots = [{"uri": p.as_uri(), "name": p.name} for p in self._roots]
                self._send({"jsonrpc": "2.0", "id": message["id"], "result": {"roots": roots}})
            elif message.get("method") == "ping" and "id" in message:
                self._send({"jsonrpc": "2.0", "id": message["id"], "result": {}})
            elif message.get("method") == "notifications/progress" and progress is not None:
                progress(message.get("params", {}))
            elif "id" in message and "method" in message:
                self._send(
                    {
                        "jsonrpc": "2.0",
                        "id": message["id"],
                        "error": {"code": -32601, "message": "not supported by this client"},
                    }
                )


def service_enabled(settings: Settings) -> bool:
    """Whether fronts go through the service (``MMSEARCH_SERVICE``)."""
    if not settings.uses_service:
        return False
    if not hasattr(socket, "AF_UNIX") or os.name != "posix":
        raise ConfigurationError(
            "the mmsearch service needs Unix sockets and flock; set MMSEARCH_SERVICE=off here"
        )
    return True
