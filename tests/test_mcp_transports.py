"""The server as clients meet it: a stdio subprocess and a streamable-HTTP server on
127.0.0.1, started and stopped by each test."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from mcp import Client
from mcp_transports import REPO_ROOT, http_server, server_env, stdio_client

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

TOOLS = {
    "index_images",
    "multimodal_search",
    "rerank",
    "collection_stats",
    "remove_images",
    "watch_folders",
    "index_status",
    "cancel_index",
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "photos").mkdir()
    return server_env(
        MMSEARCH_DATA_DIR=str(tmp_path / "data"),
        MMSEARCH_ALLOWED_ROOTS=str(tmp_path / "photos"),
    )


@pytest.fixture(params=["stdio", "http"])
def connect(request, env, tmp_path):
    @asynccontextmanager
    async def open_client():
        if request.param == "stdio":
            async with stdio_client(env, tmp_path) as client:
                yield client
        else:
            with http_server(env, tmp_path) as url:
                async with Client(url) as client:
                    yield client

    return open_client


async def test_tools_are_listed(connect) -> None:
    async with connect() as client:
        tools = (await client.list_tools()).tools
    assert {tool.name for tool in tools} == TOOLS
    assert all(tool.output_schema and tool.annotations for tool in tools)


async def test_bad_arguments_are_tool_errors_and_the_server_lives_on(connect) -> None:
    async with connect() as client:
        bad = await client.call_tool("multimodal_search", {"top_k": -1})
        outside = await client.call_tool("index_images", {"paths": ["/etc"]})
        tools = (await client.list_tools()).tools
    assert bad.is_error and "top_k" in bad.content[0].text
    assert outside.is_error and "outside the allowed roots" in outside.content[0].text
    assert len(tools) == len(TOOLS)


async def test_stdio_server_lists_tools_quickly(env, tmp_path) -> None:
    started = time.perf_counter()
    async with stdio_client(env, tmp_path) as client:
        await client.list_tools()
    elapsed = time.perf_counter() - started
    assert elapsed < 20, f"start-up to tools listed took {elapsed:.1f}s"


def test_listing_tools_imports_no_model_code(tmp_path) -> None:
    probe = """
import json, sys, anyio
from mcp import Client
from mcp_server import create_server

async def main():
    async with Client(create_server()) as client:
        await client.list_tools()

anyio.run(main)
heavy = [m for m in ("torch", "transformers", "timm", "pymilvus", "numpy") if m in sys.modules]
print(json.dumps(heavy))
"""
    done = subprocess.run(
        [sys.executable, "-c", probe],
        env=server_env(MMSEARCH_DATA_DIR=str(tmp_path)),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(done.stdout.splitlines()[-1]) == []
