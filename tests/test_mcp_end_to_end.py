"""The MCP tools over the real library, with tiny random-weight Visualized BGE
checkpoints: in-process, over a stdio subprocess and over streamable HTTP.

Random weights make scores meaningless, so these tests check the plumbing (every query
form reaches the model and comes back as hits, progress flows, thumbnails decode), not
retrieval quality.
"""

from __future__ import annotations

import base64
import io
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from mcp import Client
from mcp_support import index_until_done, write_photos
from mcp_transports import http_server, server_env, stdio_client
from mcp_types import ImageContent
from PIL import Image

from mcp_server import create_server
from mmsearch.config import Settings
from mmsearch.testing import tiny

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("tiny-visual-bge")
    return Path(tiny.write_tiny_visual_bge(target) or target)


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = (tmp_path / "photos").resolve()
    write_photos(folder)
    return folder


@pytest.fixture
def variables(tmp_path: Path, photos: Path, tiny_model: Path) -> dict[str, str]:
    return {
        "MMSEARCH_EMBED_MODEL": str(tiny_model),
        "MMSEARCH_MILVUS_URI": str(tmp_path / "index.db"),
        "MMSEARCH_DATA_DIR": str(tmp_path / "data"),
        "MMSEARCH_ALLOWED_ROOTS": str(photos),
        "MMSEARCH_DEVICE": "cpu",
    }


def client_factory(transport: str, variables: dict[str, str], tmp_path: Path, monkeypatch):
    @asynccontextmanager
    async def open_client():
        if transport == "in-process":
            for name, value in variables.items():
                monkeypatch.setenv(name, value)
            server = create_server(Settings())
            try:
                async with Client(server) as client:
                    yield client
            finally:
                server.shared_search.close()
        elif transport == "stdio":
            async with stdio_client(server_env(**variables), tmp_path) as client:
                yield client
        else:
            with http_server(server_env(**variables), tmp_path) as url:
                async with Client(url) as client:
                    yield client

    return open_client


@pytest.fixture
def connect(variables, tmp_path, monkeypatch):
    """An in-process client: each subprocess start loads torch again, so only the test
    below runs over every transport."""
    return client_factory("in-process", variables, tmp_path, monkeypatch)


@pytest.mark.parametrize("transport", ["in-process", "stdio", "http"])
async def test_index_then_search_every_query_form(
    transport, variables, tmp_path, monkeypatch, photos
) -> None:
    connect = client_factory(transport, variables, tmp_path, monkeypatch)
    progress: list[float] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append(done)

    cat = photos / "chelsea.jpg"
    cat_b64 = base64.b64encode(cat.read_bytes()).decode()
    async with connect() as client:
        report = await index_until_done(
            client, {"paths": [str(photos)]}, progress_callback=on_progress
        )
        by_text = await client.call_tool("multimodal_search", {"text": "a cat", "top_k": 3})
        by_path = await client.call_tool("multimodal_search", {"image": str(cat)})
        by_b64 = await client.call_tool("multimodal_search", {"image": cat_b64})
        both = await client.call_tool(
            "multimodal_search", {"image": str(cat), "text": "a drawing of this cat"}
        )
        stats = await client.call_tool("collection_stats", {})
    assert report.structured_content["indexed"] == 4, report.content
    assert progress and progress[-1] == 4
    assert len(by_text.structured_content["hits"]) == 3
    assert by_path.structured_content["hits"][0]["path"] == str(cat)
    assert by_b64.structured_content["hits"][0]["path"] == str(cat)
    assert len(both.structured_content["hits"]) == 4
    assert stats.structured_content["count"] == 4


async def test_reindexing_unchanged_files_skips_them(connect, photos) -> None:
    async with connect() as client:
        await index_until_done(client, {"paths": [str(photos)]})
        again = await index_until_done(client, {"paths": [str(photos)]})
    assert again.structured_content["unchanged"] == 4
    assert again.structured_content["indexed"] == 0


async def test_thumbnails_come_back_as_image_blocks(connect, photos) -> None:
    async with connect() as client:
        await index_until_done(client, {"paths": [str(photos)]})
        result = await client.call_tool(
            "multimodal_search", {"text": "a rocket", "top_k": 2, "include_thumbnails": True}
        )
    images = [block for block in result.content if isinstance(block, ImageContent)]
    assert len(images) == 2
    assert max(Image.open(io.BytesIO(base64.b64decode(images[0].data))).size) == 128


async def test_remove_then_stats(connect, photos) -> None:
    async with connect() as client:
        await index_until_done(client, {"paths": [str(photos)]})
        removed = await client.call_tool("remove_images", {"paths": [str(photos / "coffee.jpg")]})
        stats = await client.call_tool("collection_stats", {})
    assert removed.structured_content == {"removed": 1}
    assert stats.structured_content["count"] == 3


async def test_rerank_returns_every_candidate_exactly_once(
    connect, photos, monkeypatch, tmp_path_factory
) -> None:
    reranker = tiny.write_tiny_phi3v(tmp_path_factory.mktemp("tiny-phi3v"))
    monkeypatch.setenv("MMSEARCH_RERANK_MODEL", str(reranker))
    async with connect() as client:
        await index_until_done(client, {"paths": [str(photos)]})
        found = await client.call_tool("multimodal_search", {"text": "a cat", "top_k": 4})
        ids = [hit["id"] for hit in found.structured_content["hits"]]
        ranked = await client.call_tool(
            "rerank",
            {"candidate_ids": ids, "text": "a cat", "image": str(photos / "chelsea.jpg")},
        )
    assert not ranked.is_error, ranked.content
    result = ranked.structured_content
    assert result["reranked"] is True, result["note"]
    assert sorted(item["id"] for item in result["ranking"]) == sorted(ids)
    assert [item["rank"] for item in result["ranking"]] == [1, 2, 3, 4]


async def test_rerank_of_unknown_ids_is_an_error(connect, photos) -> None:
    async with connect() as client:
        await index_until_done(client, {"paths": [str(photos)]})
        unknown = "0" * 64
        result = await client.call_tool("rerank", {"candidate_ids": [unknown], "text": "a cat"})
    assert result.is_error and f"unknown candidate ids: {unknown}" in result.content[0].text
