"""The HTTP server under load: many concurrent searches from several client sessions
while an index job runs. Every request is answered, and each answer belongs to its own
query. A second process on the same Milvus Lite file gets a fast, clear error."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import numpy as np
import pytest
from mcp import Client
from mcp_transports import http_server, server_env
from PIL import Image

from mcp_server import create_server
from mmsearch.config import Settings
from mmsearch.errors import StoreError
from mmsearch.store import MilvusStore

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SESSIONS = 4
SEARCHES_PER_SESSION = 16
N_QUERY_IMAGES = 8
N_BACKGROUND = 120


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def noise_images(folder: Path, n: int, seed: int) -> list[Path]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"{seed}-{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


async def test_concurrent_searches_during_indexing_each_get_their_own_answer(
    tmp_path: Path, embedder_spec: str
) -> None:
    root = (tmp_path / "photos").resolve()
    queries = noise_images(root / "queries", N_QUERY_IMAGES, seed=1)
    background = noise_images(root / "background", N_BACKGROUND, seed=2)
    db = tmp_path / "index.db"
    env = server_env(
        MMSEARCH_EMBED_MODEL=embedder_spec,
        MMSEARCH_MILVUS_URI=str(db),
        MMSEARCH_DATA_DIR=str(tmp_path / "data"),
        MMSEARCH_ALLOWED_ROOTS=str(root),
        MMSEARCH_DEVICE="cpu",
        MMSEARCH_BATCH_SIZE="8",
    )
    texts = ["a red bicycle", "noise", "a cat on a mat", "sunset over the sea"]
    only_queries = {"path_prefix": str(root / "queries")}
    with http_server(env, tmp_path) as url:
        async with Client(url) as setup:
            first = await setup.call_tool("index_images", {"paths": [str(root / "queries")]})
            assert first.structured_content["indexed"] == N_QUERY_IMAGES
            baseline = {}
            for text in texts:
                result = await setup.call_tool(
                    "multimodal_search", {"text": text, "top_k": 5, "filter": only_queries}
                )
                baseline[text] = [h["path"] for h in result.structured_content["hits"]]

        answers: list[tuple[str, object, object]] = []
        index_result = []

        index_window: list[float] = []
        search_ends: list[float] = []
        connected: list[None] = []
        all_connected = anyio.Event()
        indexing_started = anyio.Event()

        async def index_job() -> None:
            async with Client(url) as client:
                await all_connected.wait()
                indexing_started.set()
                index_window.append(time.perf_counter())
                index_result.append(
                    await client.call_tool(
                        "index_images", {"paths": [str(background[0].parent)], "wait_s": 45}
                    )
                )
                index_window.append(time.perf_counter())

        async def session(k: int) -> None:
            async with Client(url) as client:
                connected.append(None)
                if len(connected) == SESSIONS:
                    all_connected.set()
                await indexing_started.wait()
                async with anyio.create_task_group() as tasks:
                    for j in range(SEARCHES_PER_SESSION):
                        tasks.start_soon(one_search, client, k * SEARCHES_PER_SESSION + j)

        async def one_search(client: Client, n: int) -> None:
            if n % 2:
                target = queries[n % N_QUERY_IMAGES]
                result = await client.call_tool(
                    "multimodal_search", {"image": str(target), "top_k": 3}
                )
                answers.append(("image", target, result))
            else:
                text = texts[n % len(texts)]
                result = await client.call_tool(
                    "multimodal_search", {"text": text, "top_k": 5, "filter": only_queries}
                )
                answers.append(("text", text, result))
            search_ends.append(time.perf_counter())

        with anyio.fail_after(300):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(index_job)
                for k in range(SESSIONS):
                    tasks.start_soon(session, k)

        # While the server holds the database, a second process (this one) is refused.
        started = time.perf_counter()
        with pytest.raises(StoreError, match="one process per database"):
            MilvusStore(str(db))
        library_wait = time.perf_counter() - started
        server = create_server(Settings(milvus_uri=str(db), allowed_roots=[root]))
        try:
            async with Client(server) as client:
                started = time.perf_counter()
                refused = await client.call_tool("collection_stats", {})
                mcp_wait = time.perf_counter() - started
        finally:
            server.shared_search.close()

        async with Client(url) as client:
            stats = await client.call_tool("collection_stats", {})

    assert len(answers) == SESSIONS * SEARCHES_PER_SESSION
    for kind, query, result in answers:
        assert not result.is_error, result.content
        hits = result.structured_content["hits"]
        if kind == "image":
            assert hits[0]["path"] == str(query) and hits[0]["score"] > 0.999
        else:
            assert [h["path"] for h in hits] == baseline[query]
    report = index_result[0].structured_content
    assert report["state"] == "finished", report
    assert report["indexed"] == N_BACKGROUND and report["report"]["failed"] == []
    assert stats.structured_content["count"] == N_QUERY_IMAGES + N_BACKGROUND
    assert refused.is_error and "one process per database" in refused.content[0].text
    assert library_wait < 5 and mcp_wait < 5, (library_wait, mcp_wait)
    assert index_window[0] < min(search_ends) and index_window[1] > min(search_ends)
