"""Every configurable limit is enforced, with a message naming the setting or the limit.
(The HTTP body limit is tested in test_http_security.py.)"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp_support import RecordingSearch

from mcp_server import create_server
from mmsearch.config import Settings
from mmsearch.errors import ImageDecodeError, InvalidQueryError
from mmsearch.library import ImageSearch


def library(settings: Settings, embedder: Any, **limits: Any) -> ImageSearch:
    return ImageSearch(settings.model_copy(update=limits), embedder_factory=lambda s: embedder)


def test_max_index_files_refuses_the_call_before_reading(
    settings: Settings, embedder: Any, photo_dir: Path
) -> None:
    with library(settings, embedder, max_index_files=3) as lib:
        with pytest.raises(InvalidQueryError, match="more than 3 image files.*max_index_files"):
            lib.index([photo_dir])
        assert embedder.encode_calls == 0
        assert lib.stats().count == 0
        assert lib.index([photo_dir / "coffee.jpg"]).indexed == 1


def test_max_image_bytes_refuses_large_files_and_query_images(
    settings: Settings, embedder: Any, photo_dir: Path
) -> None:
    sizes = {p.name: p.stat().st_size for p in photo_dir.iterdir()}
    limit = sorted(sizes.values())[2]
    with library(settings, embedder, max_image_bytes=limit) as lib:
        report = lib.index([photo_dir])
        refused = {Path(f.path).name for f in report.failed}
        assert refused == {n for n, s in sizes.items() if s > limit}
        assert all("byte limit" in f.reason for f in report.failed)
        assert report.indexed == 5 - len(refused)
        big = next(iter(refused))
        with pytest.raises(ImageDecodeError, match="byte limit"):
            lib.search(image=(photo_dir / big).read_bytes())


def test_max_image_pixels_refuses_before_decoding(
    settings: Settings, embedder: Any, photo_dir: Path
) -> None:
    with library(settings, embedder, max_image_pixels=1000) as lib:
        report = lib.index([photo_dir])
        assert report.indexed == 0 and len(report.failed) == 5
        assert all("pixel limit" in f.reason for f in report.failed)


def test_max_query_chars(settings: Settings, embedder: Any, photo_dir: Path) -> None:
    with library(settings, embedder, max_query_chars=10) as lib:
        lib.index([photo_dir / "coffee.jpg"])
        assert len(lib.search(text="a" * 10)) == 1
        with pytest.raises(InvalidQueryError, match="10-character limit"):
            lib.search(text="a" * 11)


def test_max_top_k(settings: Settings, embedder: Any, photo_dir: Path) -> None:
    with library(settings, embedder, max_top_k=3) as lib:
        lib.index([photo_dir])
        assert len(lib.search(text="x", top_k=3)) == 3
        with pytest.raises(InvalidQueryError, match="between 1 and 3"):
            lib.search(text="x", top_k=4)


def test_max_rerank_candidates(settings: Settings, photo_dir: Path) -> None:
    from mmsearch.rerank import rerank

    candidates = [(f"id{i}", str(p)) for i, p in enumerate(sorted(photo_dir.iterdir()))]
    limited = settings.model_copy(update={"max_rerank_candidates": 2})
    with pytest.raises(InvalidQueryError, match="at most 2.*max_rerank_candidates"):
        rerank(candidates[:3], text="a cat", settings=limited)


def test_index_timeout_stops_between_batches_and_a_rerun_continues(
    settings: Settings, embedder: Any, photo_dir: Path
) -> None:
    with library(settings, embedder, index_timeout_s=1e-9) as lib:
        stopped = lib.index([photo_dir])
        assert stopped.timed_out and stopped.cancelled and stopped.indexed == 0
    with library(settings, embedder) as lib:
        resumed = lib.index([photo_dir])
        assert not resumed.timed_out and resumed.indexed == 5


class BlockingSearch(RecordingSearch):
    """Searches wait until released: a search that takes too long."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.release = threading.Event()

    def search(self, **kwargs: Any):
        self.release.wait(30)
        return super().search(**kwargs)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_search_timeout_answers_with_an_error_and_the_server_goes_on(
    tmp_path: Path, anyio_backend: str
) -> None:
    backend = BlockingSearch(Settings(data_dir=tmp_path))
    settings = Settings(data_dir=tmp_path, search_timeout_s=0.2, allowed_roots=[tmp_path])
    server = create_server(settings, lambda s: backend)
    try:
        async with Client(server) as client:
            with anyio.fail_after(20):
                slow = await client.call_tool("multimodal_search", {"text": "a cat"})
            backend.release.set()
            stats = await client.call_tool("collection_stats", {})
    finally:
        backend.release.set()
    assert slow.is_error and "search_timeout_s" in slow.content[0].text
    assert not stats.is_error
