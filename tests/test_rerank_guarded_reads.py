"""Rerank reads every file (candidates and the query image) through the same guarded
reader as indexing: a FIFO is refused instead of blocking forever, the image size limits
hold for a query image given as a path, and a decompression bomb is the project's
:class:`ImageDecodeError`, not Pillow's own exception. Every call runs under a bounded
wait so a regression fails instead of hanging the suite."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from PIL import Image
from security_support import png_bomb

from mcp_server import create_server
from mmsearch.config import Settings
from mmsearch.errors import ImageDecodeError
from mmsearch.library import ImageSearch
from mmsearch.rerank import Reranker

WAIT_S = 60


def finishes(fn: Callable[[], Any], timeout: float = WAIT_S) -> Any:
    """Run ``fn`` in a thread; fail the test (instead of hanging it) if it blocks."""
    result: list[Any] = []

    def run() -> None:
        try:
            result.append(fn())
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            result.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        pytest.fail("the call blocked")  # the thread stays blocked on the FIFO
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


def _reranker(model: Any, **kwargs: Any) -> Reranker:
    return Reranker(model, **({"reason_max_chars": 8, "cell_size": 32} | kwargs))


def test_a_candidate_replaced_by_a_fifo_is_noted_not_waited_for(
    tiny_vlm: Any, candidate_images: list[Path], tmp_path: Path
) -> None:
    fifo = tmp_path / "replaced.png"
    os.mkfifo(fifo)
    candidates = [("good", candidate_images[0]), ("fifo", fifo)]
    result = finishes(lambda: _reranker(tiny_vlm).rerank(candidates, text="a photo"))
    assert sorted(result.ids) == ["fifo", "good"]
    assert "unreadable candidate files: fifo" in result.note


def test_a_fifo_as_the_query_image_is_a_decode_error(
    tiny_vlm: Any, candidate_images: list[Path], tmp_path: Path
) -> None:
    fifo = tmp_path / "query.png"
    os.mkfifo(fifo)
    candidates = [("a", candidate_images[0]), ("b", candidate_images[1])]
    with pytest.raises(ImageDecodeError, match="not a regular file"):
        finishes(lambda: _reranker(tiny_vlm).rerank(candidates, image=fifo))


def test_a_query_image_path_obeys_the_pixel_and_byte_limits(
    tiny_vlm: Any, candidate_images: list[Path], tmp_path: Path
) -> None:
    query = tmp_path / "query.png"
    Image.new("RGB", (64, 64), (10, 20, 30)).save(query)
    candidates = [("a", candidate_images[0]), ("b", candidate_images[1])]
    with pytest.raises(ImageDecodeError, match="pixel limit"):
        _reranker(tiny_vlm, max_image_pixels=1000).rerank(candidates, image=query)
    with pytest.raises(ImageDecodeError, match="byte limit"):
        _reranker(tiny_vlm, max_image_bytes=10).rerank(candidates, image=query)


def test_the_settings_limits_reach_the_reranker(tiny_vlm_dir: Path) -> None:
    settings = Settings(rerank_model=str(tiny_vlm_dir), max_image_pixels=123, max_image_bytes=45)
    reranker = Reranker.from_settings(settings)
    assert (reranker.max_image_pixels, reranker.max_image_bytes) == (123, 45)


def test_a_decompression_bomb_as_the_query_image_is_a_decode_error(
    tiny_vlm: Any, candidate_images: list[Path], tmp_path: Path
) -> None:
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bomb(20_000, 20_000))  # over Pillow's own bomb limit too
    candidates = [("a", candidate_images[0]), ("b", candidate_images[1])]
    reranker = _reranker(tiny_vlm, max_image_pixels=10**9)
    with pytest.raises(ImageDecodeError, match="decompression bomb"):
        reranker.rerank(candidates, image=bomb)
    with pytest.raises(ImageDecodeError, match="decompression bomb"):
        reranker.rerank(candidates, image=bomb.read_bytes())


def test_a_bomb_candidate_is_noted_as_unreadable(
    tiny_vlm: Any, candidate_images: list[Path], tmp_path: Path
) -> None:
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bomb(20_000, 20_000))
    candidates = [("good", candidate_images[0]), ("bomb", bomb)]
    result = _reranker(tiny_vlm, max_image_pixels=10**9).rerank(candidates, text="a photo")
    assert "unreadable candidate files: bomb" in result.note


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_mcp_rerank_of_a_candidate_replaced_by_a_fifo_answers(
    tmp_path: Path, photo_dir: Path, shared_embedder: Any, tiny_vlm_dir: Path, anyio_backend: str
) -> None:
    root = photo_dir.resolve()
    settings = Settings(
        data_dir=tmp_path / "data",
        allowed_roots=[root],
        rerank_model=str(tiny_vlm_dir),
        rerank_device="cpu",
        rerank_reason_max_chars=8,
    )
    server = create_server(
        settings, lambda s: ImageSearch(s, embedder_factory=lambda _: shared_embedder)
    )
    try:
        async with Client(server) as client:
            with anyio.fail_after(WAIT_S * 3):
                await client.call_tool("index_images", {"paths": [str(root)]})
                found = await client.call_tool("multimodal_search", {"text": "x", "top_k": 3})
                hits = found.structured_content["hits"]
                victim = Path(hits[0]["path"])
                victim.unlink()
                os.mkfifo(victim)
                ranked = await client.call_tool(
                    "rerank", {"candidate_ids": [h["id"] for h in hits], "text": "a photo"}
                )
    finally:
        server.shared_search.close()
    assert not ranked.is_error, ranked.content
    assert hits[0]["id"] in ranked.structured_content["note"]
