"""Starting the real server as a subprocess, over stdio or streamable HTTP."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

from mcp import Client, StdioServerParameters

REPO_ROOT = Path(__file__).resolve().parents[1]


def server_env(**variables: str) -> dict[str, str]:
    """The environment a spawned server sees: this interpreter's, this checkout first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMSEARCH_")}
    # In-process unless a test asks for the service (tests/test_service.py does).
    env["MMSEARCH_SERVICE"] = "off"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    env.update(variables)
    return env


def stdio_client(env: dict[str, str], cwd: Path) -> Client:
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "mcp_server"], env=env, cwd=str(cwd)
    )
    return Client(params)


@asynccontextmanager
async def service_front(env: dict[str, str], cwd: Path) -> AsyncIterator[Client]:
    """``mmsearch-mcp`` as a front of the data directory's service (started on demand),
    the service stopped afterwards."""
    env = {**env, "MMSEARCH_SERVICE": "on"}
    try:
        async with stdio_client(env, cwd) as client:
            yield client
    finally:
        subprocess.run(
            [sys.executable, "-m", "mmsearch.cli", "service", "stop"],
            env=env,
            cwd=cwd,
            capture_output=True,
            timeout=60,
        )


@contextmanager
def http_server(env: dict[str, str], cwd: Path, timeout: float = 60) -> Iterator[str]:
    """Run ``mmsearch-mcp --transport http --port 0`` and yield its ``/mcp`` URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "mcp_server", "--transport", "http", "--port", "0"],
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    ready = threading.Event()
    found: list[str] = []
    log: list[str] = []

    def watch() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            log.append(line)
            match = re.search(r"Uvicorn running on (http://\S+)", line)
            if match and not found:
                found.append(match.group(1))
                ready.set()
        ready.set()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        if not ready.wait(timeout) or not found:
            raise RuntimeError("the HTTP server did not start:\n" + "".join(log))
        yield found[0] + "/mcp"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        watcher.join(timeout=5)
