"""Caption-augmented text search: captions written at index time, stored with the image,
and fused with the image ranking for text queries (tiny Visualized BGE, Milvus Lite)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from mmsearch.config import Settings
from mmsearch.errors import CaptionError
from mmsearch.library import ImageSearch
from mmsearch.store import MilvusStore, collection_marker

CAPTIONS = {  # no word in common, so full-text search finds exactly one caption per query
    "astronaut.png": "astronaut spacesuit flag",
    "coffee.jpg": "coffee cup saucer",
    "chelsea.png": "tabby cat whiskers",
    "rocket.jpg": "rocket launch smoke",
    "camera.png": "photographer tripod camera",
}


def _thumb(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB").resize((8, 8)), dtype=np.float32)


class StubCaptioner:
    """Knows the test photos and captions each with its line of ``CAPTIONS`` (recognised
    from an 8x8 thumbnail), so rankings over captions are known in advance."""

    model_id = "test/stub-captioner"

    def __init__(self, folder: Path, fail_for: Sequence[str] = ()) -> None:
        self.names = list(CAPTIONS)
        self.thumbs = np.stack([_thumb(Image.open(folder / n)) for n in self.names])
        self.fail_for = set(fail_for)
        self.captioned: list[str] = []

    def caption(self, images: Sequence[Image.Image]) -> list[str | None]:
        out: list[str | None] = []
        for image in images:
            distance = ((self.thumbs - _thumb(image)) ** 2).reshape(len(self.names), -1).sum(1)
            name = self.names[int(distance.argmin())]
            self.captioned.append(name)
            out.append(None if name in self.fail_for else CAPTIONS[name])
        return out


class SpyEmbedder:
    """Counts the images and texts the wrapped embedder is asked to embed."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.model_id: str = inner.model_id
        self.dim: int = inner.dim
        self.images = 0
        self.texts = 0

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return self.inner.preprocess(image)

    def encode(self, texts=None, images=None, *, batch_size=None) -> np.ndarray:  # noqa: ANN001
        self.images += len(images or [])
        self.texts += len(texts or [])
        return self.inner.encode(texts=texts, images=images, batch_size=batch_size)


@pytest.fixture
def spy(shared_embedder: Any) -> SpyEmbedder:
    return SpyEmbedder(shared_embedder)


@pytest.fixture
def stub(photo_dir: Path) -> StubCaptioner:
    return StubCaptioner(photo_dir)


def _library(settings: Settings, embedder: Any, captioner: Any = None) -> ImageSearch:
    def no_captioner(settings: Settings) -> Any:
        raise AssertionError("the caption model must not be loaded")

    return ImageSearch(
        settings,
        embedder_factory=lambda s: embedder,
        captioner_factory=(lambda s: captioner) if captioner is not None else no_captioner,
    )


@pytest.fixture
def lib(settings: Settings, spy: SpyEmbedder, stub: StubCaptioner) -> Iterator[ImageSearch]:
    with _library(settings, spy, stub) as library:
        yield library


def _rank_of(hits: Sequence[Any], path: Path) -> int:
    return [h.path for h in hits].index(str(path))


# --- storing captions --------------------------------------------------------------------


def test_captions_are_stored_with_each_image_and_read_back(
    lib: ImageSearch, photo_dir: Path
) -> None:
    report = lib.index([photo_dir], captions=True)
    assert report.indexed == 5 and report.captioned == 5 and not report.caption_failed
    records = {Path(r.path).name: r for r in lib.store.iter_records("images")}
    assert {name: r.caption for name, r in records.items()} == CAPTIONS
    assert lib.get([records["chelsea.png"].id])[0].caption == "tabby cat whiskers"


def test_without_captions_requested_nothing_is_captioned(
    lib: ImageSearch, photo_dir: Path, stub: StubCaptioner
) -> None:
    report = lib.index([photo_dir])
    assert report.captioned == 0 and stub.captioned == []
    assert all(r.caption is None for r in lib.store.iter_records("images"))


def test_the_captions_setting_turns_captions_on_by_default(
    tmp_path: Path, spy: SpyEmbedder, stub: StubCaptioner, photo_dir: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "d", captions=True)
    with _library(settings, spy, stub) as lib:
        assert lib.index([photo_dir]).captioned == 5
        assert lib.index([photo_dir / "coffee.jpg"], captions=False).captioned == 0


def test_an_unchanged_image_gains_a_caption_without_being_embedded_again(
    lib: ImageSearch, photo_dir: Path, spy: SpyEmbedder
) -> None:
    lib.index([photo_dir])
    before = lib.store.get_rows(
        "images", [r.id for r in lib.store.iter_records("images")], with_vectors=True
    )
    images_before = spy.images
    report = lib.index([photo_dir], captions=True)
    assert report.unchanged == 5 and report.indexed == 0 and report.captioned == 5
    assert spy.images == images_before  # only the captions were embedded
    after = lib.store.get_rows("images", list(before), with_vectors=True)
    for image_id, row in after.items():
        assert row["vector"] == pytest.approx(before[image_id]["vector"])
        assert row["caption"] == CAPTIONS[Path(row["path"]).name]


def test_images_that_have_a_caption_are_not_captioned_again(
    lib: ImageSearch, photo_dir: Path, stub: StubCaptioner
) -> None:
    lib.index([photo_dir], captions=True)
    stub.captioned.clear()
    report = lib.index([photo_dir], captions=True)
    assert report.unchanged == 5 and report.captioned == 0 and stub.captioned == []


def test_a_moved_file_keeps_its_caption(
    lib: ImageSearch, photo_dir: Path, stub: StubCaptioner
) -> None:
    lib.index([photo_dir], captions=True)
    stub.captioned.clear()
    (photo_dir / "rocket.jpg").rename(photo_dir / "launch.jpg")
    lib.index([photo_dir], prune=True)
    [record] = [r for r in lib.store.iter_records("images") if r.path.endswith("launch.jpg")]
    assert record.caption == "rocket launch smoke" and stub.captioned == []


def test_new_metadata_keeps_the_caption(lib: ImageSearch, photo_dir: Path) -> None:
    lib.index([photo_dir], captions=True)
    lib.index([photo_dir], metadata={"album": "x"})
    records = list(lib.store.iter_records("images"))
    assert all(r.metadata == {"album": "x"} for r in records)
    assert {Path(r.path).name: r.caption for r in records} == CAPTIONS


def test_an_image_the_model_cannot_caption_is_indexed_and_captioned_later(
    settings: Settings, spy: SpyEmbedder, photo_dir: Path
) -> None:
    failing = StubCaptioner(photo_dir, fail_for=["coffee.jpg"])
    with _library(settings, spy, failing) as lib:
        report = lib.index([photo_dir], captions=True)
        assert report.indexed == 5 and report.captioned == 4
        assert [Path(f.path).name for f in report.caption_failed] == ["coffee.jpg"]
        failing.fail_for.clear()
        again = lib.index([photo_dir], captions=True)
        assert again.captioned == 1 and not again.caption_failed
        [coffee] = [r for r in lib.store.iter_records("images") if r.path.endswith("coffee.jpg")]
        assert coffee.caption == "coffee cup saucer"


def test_progress_counts_the_captioning_of_unchanged_files(
    lib: ImageSearch, photo_dir: Path
) -> None:
    lib.index([photo_dir])
    seen: list[tuple[int, int]] = []
    lib.index([photo_dir], captions=True, progress=lambda p: seen.append((p.done, p.total)))
    assert seen[0] == (0, 5) and seen[-1] == (5, 5)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


# --- text queries ------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CAPTIONS))
def test_a_text_query_matching_a_caption_finds_its_image_first(
    lib: ImageSearch, photo_dir: Path, name: str
) -> None:
    lib.index([photo_dir], captions=True)
    hits = lib.search(text=CAPTIONS[name], top_k=5)
    assert hits[0].path == str(photo_dir / name)
    assert hits[0].caption == CAPTIONS[name]
    assert all(h.score_kind == "rrf" for h in hits)


def test_fused_scores_are_rrf_scores_and_the_cosine_stays_available(
    lib: ImageSearch, photo_dir: Path, shared_embedder: Any
) -> None:
    lib.index([photo_dir], captions=True)
    plain = {h.id: h for h in lib.search(image=photo_dir / "coffee.jpg", top_k=5)}
    hits = lib.search(text="tabby cat whiskers", top_k=5)
    query = shared_embedder.encode(texts=["tabby cat whiskers"])[0]
    image_rank = _rank_of(_plain_text_ranking(lib, query), photo_dir / "chelsea.png") + 1
    # first in both caption rankings (embedding and full text) and image_rank in the image one
    assert hits[0].score == pytest.approx(2 / 61 + 1 / (60 + image_rank))
    rows = lib.store.get_rows("images", list(plain), with_vectors=True)
    for hit in hits:
        assert hit.cosine == pytest.approx(float(np.dot(rows[hit.id]["vector"], query)), abs=1e-5)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def _plain_text_ranking(lib: ImageSearch, query: np.ndarray) -> list[Any]:
    return lib.store.search("images", query, model_id=lib.embedder.model_id, top_k=5)[0]


def test_a_hit_found_only_through_its_caption_gets_its_image_cosine(
    tmp_path: Path, spy: SpyEmbedder, stub: StubCaptioner, photo_dir: Path, shared_embedder: Any
) -> None:
    settings = Settings(data_dir=tmp_path / "d", rrf_depth=1)
    with _library(settings, spy, stub) as lib:
        lib.index([photo_dir], captions=True)
        # a caption whose image the text-to-image ranking does not put first
        for name, caption in CAPTIONS.items():
            query = shared_embedder.encode(texts=[caption])[0]
            if _plain_text_ranking(lib, query)[0].path != str(photo_dir / name):
                break
        [hit] = lib.search(text=caption, top_k=1)  # each ranking contributes one hit
        assert hit.path == str(photo_dir / name)
        row = lib.store.get_rows("images", [hit.id], with_vectors=True)[hit.id]
        assert hit.cosine == pytest.approx(float(np.dot(row["vector"], query)), abs=1e-5)


def test_without_full_text_search_captions_never_push_the_match_down(
    tmp_path: Path,
    spy: SpyEmbedder,
    stub: StubCaptioner,
    photo_dir: Path,
    shared_embedder: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Milvus 2.4 has caption vectors but no BM25: the caption whose embedding equals the
    query's lifts its image to at least where the image ranking alone put it."""
    monkeypatch.setattr(MilvusStore, "full_text_search", property(lambda self: False))
    with _library(Settings(data_dir=tmp_path / "d"), spy, stub) as lib:
        lib.index([photo_dir], captions=True)
        info = lib.store.collection_info("images")
        assert info.caption_vector and not info.caption_text_search
        for name, caption in CAPTIONS.items():
            query = shared_embedder.encode(texts=[caption])[0]
            plain = _plain_text_ranking(lib, query)
            fused = lib.search(text=caption, top_k=5)
            assert _rank_of(fused, photo_dir / name) <= _rank_of(plain, photo_dir / name)
            assert fused[0].score_kind == "rrf"


def test_a_collection_without_captions_answers_text_queries_by_images_alone(
    lib: ImageSearch, photo_dir: Path, shared_embedder: Any
) -> None:
    lib.index([photo_dir])
    hits = lib.search(text="tabby cat whiskers", top_k=5)
    plain = _plain_text_ranking(lib, shared_embedder.encode(texts=["tabby cat whiskers"])[0])
    assert [(h.id, h.score) for h in hits] == [(h.id, h.score) for h in plain]
    assert all(h.score_kind == "cosine" and h.cosine == h.score for h in hits)


def test_image_queries_are_unaffected_by_captions(
    settings: Settings, spy: SpyEmbedder, stub: StubCaptioner, photo_dir: Path
) -> None:
    with _library(settings, spy, stub) as lib:
        lib.index([photo_dir], collection="plain")
        lib.index([photo_dir], collection="captioned", captions=True)
        for kwargs in (
            {"image": photo_dir / "rocket.jpg"},
            {"image": photo_dir / "rocket.jpg", "text": "tabby cat whiskers"},
        ):
            plain = lib.search(**kwargs, top_k=5, collection="plain")
            captioned = lib.search(**kwargs, top_k=5, collection="captioned")
            assert [h.id for h in captioned] == [h.id for h in plain]
            assert [h.score for h in captioned] == pytest.approx([h.score for h in plain])
            assert all(h.score_kind == "cosine" for h in captioned)


def test_filters_apply_to_the_caption_rankings(lib: ImageSearch, photo_dir: Path) -> None:
    lib.index([photo_dir], captions=True)
    hits = lib.search(
        text="tabby cat whiskers", top_k=5, filter={"path_glob": str(photo_dir / "*.jpg")}
    )
    assert hits and all(h.path.endswith(".jpg") for h in hits)


# --- collections from before captions ------------------------------------------------------


def _legacy_collection(store: MilvusStore, name: str, model_id: str, dim: int) -> None:
    """A collection as mmsearch created them before captions: no caption fields."""
    from pymilvus import DataType, MilvusClient

    description, properties = collection_marker(model_id, dim)
    schema = MilvusClient.create_schema(
        auto_id=False, enable_dynamic_field=False, description=description
    )
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
    schema.add_field("path", DataType.VARCHAR, max_length=16384)
    schema.add_field("size", DataType.INT64)
    schema.add_field("mtime", DataType.DOUBLE)
    schema.add_field("metadata", DataType.JSON)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    index = store._client.prepare_index_params()
    index.add_index(field_name="vector", index_type="FLAT", metric_type="IP")
    store._client.create_collection(
        name,
        schema=schema,
        index_params=index,
        consistency_level="Strong",
        properties=properties,
    )


@pytest.fixture
def legacy(settings: Settings, spy: SpyEmbedder) -> Iterator[ImageSearch]:
    with _library(settings, spy) as library:
        _legacy_collection(library.store, "images", spy.model_id, spy.dim)
        yield library


def test_a_collection_from_before_captions_still_indexes_and_searches(
    legacy: ImageSearch, photo_dir: Path
) -> None:
    assert legacy.index([photo_dir]).indexed == 5
    hits = legacy.search(text="tabby cat whiskers", top_k=3)
    assert len(hits) == 3 and all(h.score_kind == "cosine" and h.caption is None for h in hits)
    assert legacy.search(image=photo_dir / "coffee.jpg", top_k=1)[0].path.endswith("coffee.jpg")
    assert all(r.caption is None for r in legacy.get([h.id for h in hits]))


def test_captioning_into_a_collection_from_before_captions_is_refused_clearly(
    legacy: ImageSearch, photo_dir: Path
) -> None:
    with pytest.raises(
        CaptionError, match="created before mmsearch stored captions.*new collection"
    ):
        legacy.index([photo_dir], captions=True)  # before loading the caption model
    assert legacy.stats().count == 0
