"""Searching a collection by text, image and both, with filters."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from mmsearch.errors import CollectionNotFoundError, InvalidQueryError
from mmsearch.filters import SearchFilter
from mmsearch.images import content_hash
from mmsearch.library import ImageSearch


@pytest.fixture
def indexed(engine: ImageSearch, photo_dir: Path) -> ImageSearch:
    report = engine.index([photo_dir])
    assert report.indexed == 5
    return engine


def test_image_query_returns_that_photo_first(indexed: ImageSearch, photo_dir: Path) -> None:
    for path in sorted(photo_dir.iterdir()):
        hits = indexed.search(image=path, top_k=3)
        assert hits[0].path == str(path)
        assert hits[0].id == content_hash(path.read_bytes())
        assert hits[0].score == pytest.approx(1.0, abs=1e-4)


def test_image_query_accepts_bytes_and_pil(indexed: ImageSearch, photo_dir: Path) -> None:
    path = photo_dir / "chelsea.png"
    assert indexed.search(image=path.read_bytes(), top_k=1)[0].path == str(path)
    assert indexed.search(image=Image.open(path), top_k=1)[0].path == str(path)


def test_text_query_returns_top_k_hits_best_first(indexed: ImageSearch) -> None:
    hits = indexed.search(text="a cat on a sofa", top_k=4)
    assert len(hits) == 4
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert all(-1.0001 <= s <= 1.0001 for s in scores)
    assert len({h.id for h in hits}) == 4


def test_image_and_text_query_is_a_fused_query(indexed: ImageSearch, photo_dir: Path) -> None:
    path = photo_dir / "rocket.jpg"
    fused = indexed.search(image=path, text="at night", top_k=5)
    alone = indexed.search(image=path, top_k=5)
    assert fused[0].path == str(path)
    assert fused[0].score < alone[0].score - 1e-3


def test_top_k_larger_than_collection_returns_everything(indexed: ImageSearch) -> None:
    assert len(indexed.search(text="anything", top_k=100)) == 5


def test_filter_by_folder(indexed: ImageSearch, photo_dir: Path) -> None:
    hits = indexed.search(text="x", top_k=10, filter=SearchFilter(path_prefix=str(photo_dir)))
    assert len(hits) == 5
    none = indexed.search(text="x", top_k=10, filter={"path_prefix": str(photo_dir) + "-other"})
    assert none == []


def test_filter_by_glob_and_substring(indexed: ImageSearch) -> None:
    hits = indexed.search(text="x", top_k=10, filter={"path_glob": "*.jpg"})
    assert {Path(h.path).name for h in hits} == {"coffee.jpg", "rocket.jpg"}
    hits = indexed.search(text="x", top_k=10, filter={"path_contains": "che"})
    assert [Path(h.path).name for h in hits] == ["chelsea.png"]


def test_filter_by_size_and_mtime(indexed: ImageSearch, photo_dir: Path) -> None:
    sizes = {p.name: p.stat().st_size for p in photo_dir.iterdir()}
    smallest = min(sizes, key=sizes.get)
    hits = indexed.search(text="x", top_k=10, filter={"size_max": sizes[smallest]})
    assert [Path(h.path).name for h in hits] == [smallest]
    newest = max(p.stat().st_mtime for p in photo_dir.iterdir())
    assert indexed.search(text="x", top_k=10, filter={"mtime_min": newest + 1}) == []


def test_filter_by_metadata(engine: ImageSearch, photo_dir: Path, tmp_path: Path) -> None:
    engine.index([photo_dir / "coffee.jpg"], metadata={"album": "kitchen", "year": 2023})
    engine.index([photo_dir / "chelsea.png"], metadata={"album": "pets", "year": 2024})
    hits = engine.search(text="x", top_k=10, filter={"metadata": {"album": "pets"}})
    assert [Path(h.path).name for h in hits] == ["chelsea.png"]
    assert hits[0].metadata == {"album": "pets", "year": 2024}
    hits = engine.search(text="x", top_k=10, filter={"metadata_in": {"year": [2023, 2024]}})
    assert len(hits) == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "text, an image, or both"),
        ({"text": "   "}, "empty"),
        ({"text": ""}, "empty"),
        ({"text": "x", "top_k": 0}, "top_k"),
        ({"text": "x", "top_k": 1001}, "top_k"),
        ({"text": "x", "top_k": True}, "top_k"),
        ({"text": 3}, "string"),
        ({"text": "x", "filter": {"size_min": "big"}}, "invalid filter"),
    ],
)
def test_malformed_queries_are_refused(indexed: ImageSearch, kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidQueryError, match=message):
        indexed.search(**kwargs)


def test_unknown_collection_is_reported(indexed: ImageSearch) -> None:
    with pytest.raises(CollectionNotFoundError):
        indexed.search(text="x", collection="nope")


def test_search_of_unknown_collection_does_not_load_the_model(tmp_path: Path) -> None:
    from mmsearch.config import Settings

    def factory(_: Settings):
        raise AssertionError("the model must not be loaded")

    with ImageSearch(Settings(data_dir=tmp_path), embedder_factory=factory) as lib:
        with pytest.raises(CollectionNotFoundError):
            lib.search(text="x")
        with pytest.raises(CollectionNotFoundError):
            lib.stats()


def test_query_image_that_is_not_an_image_is_refused(indexed: ImageSearch, tmp_path: Path) -> None:
    from mmsearch.errors import ImageDecodeError

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    with pytest.raises(ImageDecodeError):
        indexed.search(image=bad)
    with pytest.raises(ImageDecodeError):
        indexed.search(image=os.fspath(tmp_path / "missing.png"))


def test_folder_filter_accepts_relative_and_trailing_slash_forms(
    indexed: ImageSearch, photo_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(photo_dir.parent)
    for folder in (photo_dir.name, f"./{photo_dir.name}/", str(photo_dir) + "/"):
        hits = indexed.search(text="x", top_k=10, filter={"path_prefix": folder})
        assert len(hits) == 5, folder
