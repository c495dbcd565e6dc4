"""The library's contract is the exception types in ``mmsearch.errors``: text and paths
that Python or the operating system cannot take (a lone surrogate, a NUL byte) are
refused with one of them, before any tokenizer or ``os`` call raises its own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mmsearch.errors import MMSearchError
from mmsearch.library import ImageSearch
from mmsearch.rerank import Reranker

LONE_SURROGATE = "a cat \ud800 on a mat"


@pytest.fixture
def indexed(engine: ImageSearch, photo_dir: Path) -> ImageSearch:
    engine.index([photo_dir])
    return engine


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda e, d: e.search(text=LONE_SURROGATE), id="surrogate-in-query-text"),
        pytest.param(lambda e, d: e.search(image=str(d) + "/a\x00b.jpg"), id="nul-in-query-path"),
        pytest.param(lambda e, d: e.search(image=str(d) + "/\ud800.jpg"), id="surrogate-path"),
        pytest.param(lambda e, d: e.index([str(d) + "/a\x00b"]), id="nul-in-index-path"),
        pytest.param(lambda e, d: e.index([str(d) + "/\ud800"]), id="surrogate-in-index-path"),
        pytest.param(lambda e, d: e.remove(paths=[str(d) + "/a\x00b"]), id="nul-in-remove-path"),
        pytest.param(lambda e, d: e.remove(paths=[str(d) + "/\ud800"]), id="surrogate-remove"),
        pytest.param(
            lambda e, d: e.search(text="x", filter={"metadata": {"k": "\ud800"}}),
            id="surrogate-in-filter-value",
        ),
        pytest.param(
            lambda e, d: e.search(text="x", filter={"path_contains": "a\x00"}),
            id="nul-in-filter-value",
        ),
        pytest.param(
            lambda e, d: e.search(text="x", filter={"path_prefix": "/\ud800"}),
            id="surrogate-in-folder-filter",
        ),
        pytest.param(
            lambda e, d: e.search(text="x", filter={"path_prefix": "~a\x00b"}),
            id="nul-in-home-folder-filter",
        ),
        pytest.param(lambda e, d: e.index(["~a\x00b"]), id="nul-in-home-index-path"),
        pytest.param(lambda e, d: e.index([d], metadata={"k": "\ud800"}), id="surrogate-metadata"),
        pytest.param(lambda e, d: e.get(["a\x00"]), id="nul-in-id"),
    ],
)
def test_bad_text_and_paths_raise_the_library_errors(
    indexed: ImageSearch, photo_dir: Path, call: Any
) -> None:
    with pytest.raises(MMSearchError) as info:
        call(indexed, photo_dir)
    str(info.value).encode("utf-8")


@pytest.mark.parametrize(
    "request_",
    [
        pytest.param({"text": LONE_SURROGATE}, id="surrogate-in-text"),
        pytest.param({"text": "x", "image": "/tmp/a\x00b.png"}, id="nul-in-query-image"),
        pytest.param({"text": "x", "image": "/tmp/\ud800.png"}, id="surrogate-in-query-image"),
    ],
)
def test_rerank_refuses_bad_text_and_paths_with_library_errors(
    tiny_vlm: Any, candidate_images: list[Path], request_: dict[str, Any]
) -> None:
    reranker = Reranker(tiny_vlm, reason_max_chars=8, cell_size=32)
    candidates = [(f"id{i}", p) for i, p in enumerate(candidate_images[:2])]
    with pytest.raises(MMSearchError):
        reranker.rerank(candidates, **request_)


def test_a_candidate_path_with_a_nul_byte_is_noted_as_unreadable(
    tiny_vlm: Any, candidate_images: list[Path]
) -> None:
    reranker = Reranker(tiny_vlm, reason_max_chars=8, cell_size=32)
    candidates = [("good", candidate_images[0]), ("nul", "/tmp/a\x00b.png")]
    result = reranker.rerank(candidates, text="a photo")
    assert sorted(result.ids) == ["good", "nul"]
    assert "unreadable candidate files: nul" in result.note
