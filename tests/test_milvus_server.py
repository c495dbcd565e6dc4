"""The core scenarios against a real Milvus server (standalone, over HTTP on loopback)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from mmsearch.config import Settings
from mmsearch.errors import InvalidQueryError, ModelMismatchError
from mmsearch.images import content_hash
from mmsearch.library import ImageSearch

pytestmark = pytest.mark.slow


@pytest.fixture
def server_settings(
    milvus_server_uri: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Settings:
    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name)[:60]
    return Settings(
        data_dir=tmp_path / "data",
        milvus_uri=milvus_server_uri,
        collection=name,
        batch_size=2,
        decode_workers=2,
    )


@pytest.fixture
def server_engine(server_settings: Settings, embedder) -> Iterator[ImageSearch]:
    lib = ImageSearch(server_settings, embedder_factory=lambda s: embedder)
    yield lib
    lib.close()


def test_server_index_search_and_reindex(server_engine: ImageSearch, photo_dir: Path) -> None:
    report = server_engine.index([photo_dir])
    assert (report.indexed, report.failed) == (5, [])
    hit = server_engine.search(image=photo_dir / "rocket.jpg", top_k=3)[0]
    assert hit.path == str(photo_dir / "rocket.jpg")
    assert hit.score == pytest.approx(1.0, abs=1e-4)
    fused = server_engine.search(image=photo_dir / "rocket.jpg", text="at night", top_k=3)
    assert fused[0].path == str(photo_dir / "rocket.jpg")
    assert len(server_engine.search(text="a cat", top_k=4)) == 4
    again = server_engine.index([photo_dir])
    assert (again.indexed, again.unchanged) == (0, 5)
    assert server_engine.stats().count == 5


def test_server_changed_file_and_prune(server_engine: ImageSearch, photo_dir: Path) -> None:
    server_engine.index([photo_dir])
    target = photo_dir / "chelsea.png"
    old_id = content_hash(target.read_bytes())
    Image.open(target).rotate(90).save(target)
    (photo_dir / "coffee.jpg").unlink()
    report = server_engine.index([photo_dir], prune=True)
    assert (report.indexed, report.unchanged, report.removed) == (1, 3, 1)
    assert server_engine.get([old_id]) == []
    assert server_engine.get([content_hash(target.read_bytes())])[0].path == str(target)
    assert server_engine.stats().count == 4


def test_server_reopen_keeps_everything(
    server_settings: Settings, embedder, photo_dir: Path
) -> None:
    with ImageSearch(server_settings, embedder_factory=lambda s: embedder) as lib:
        lib.index([photo_dir], metadata={"album": "x"})
    with ImageSearch(server_settings, embedder_factory=lambda s: embedder) as lib:
        assert lib.stats().count == 5
        hit = lib.search(image=photo_dir / "camera.png", top_k=1)[0]
        assert (hit.path, hit.metadata) == (str(photo_dir / "camera.png"), {"album": "x"})
        assert lib.index([photo_dir]).unchanged == 5


def test_server_refuses_another_model(
    server_settings: Settings, embedder, make_embedder, photo_dir: Path
) -> None:
    with ImageSearch(server_settings, embedder_factory=lambda s: embedder) as lib:
        lib.index([photo_dir / "coffee.jpg"])
    other = make_embedder(model_id="another-model")
    with ImageSearch(server_settings, embedder_factory=lambda s: other) as lib:
        with pytest.raises(ModelMismatchError, match="another-model"):
            lib.search(text="x")


def test_server_filters(server_engine: ImageSearch, photo_dir: Path) -> None:
    server_engine.index([photo_dir / "coffee.jpg", photo_dir / "rocket.jpg"], metadata={"k": "a_1"})
    server_engine.index([photo_dir / "chelsea.png"], metadata={"k": 'b"2', "n": 3})

    def names(flt: dict) -> set[str]:
        return {Path(h.path).name for h in server_engine.search(text="x", top_k=10, filter=flt)}

    assert names({"path_prefix": str(photo_dir)}) == {"coffee.jpg", "rocket.jpg", "chelsea.png"}
    assert names({"path_glob": str(photo_dir / "c*")}) == {"coffee.jpg", "chelsea.png"}
    assert names({"path_glob": str(photo_dir / "rocket.jpg")}) == {"rocket.jpg"}
    assert names({"metadata": {"k": 'b"2'}}) == {"chelsea.png"}
    assert names({"metadata_in": {"k": ["a_1", "zzz"]}}) == {"coffee.jpg", "rocket.jpg"}
    assert names({"metadata": {"n": 3}, "size_min": 1}) == {"chelsea.png"}
    # Milvus 2.3 matches only prefixes with `like`: refused, never answered wrongly.
    with pytest.raises(InvalidQueryError, match="prefixes"):
        server_engine.search(text="x", filter={"path_glob": "*.jpg"})


class FixedCaptioner:
    model_id = "test/fixed-captioner"

    def caption(self, images: list[Image.Image]) -> list[str | None]:
        return [f"picture number {i}" for i, _ in enumerate(images)]


def test_server_2_3_stores_captions_but_ranks_text_queries_by_images(
    server_settings: Settings, embedder, photo_dir: Path
) -> None:
    """Milvus 2.3 refuses a second vector field and has no BM25: captions are kept and
    read back, and text queries are the plain image ranking."""
    with ImageSearch(
        server_settings,
        embedder_factory=lambda s: embedder,
        captioner_factory=lambda s: FixedCaptioner(),
    ) as lib:
        report = lib.index([photo_dir], captions=True)
        assert report.captioned == 5
        info = lib.store.collection_info(server_settings.collection)
        if lib.store.server_version >= (2, 4):
            pytest.skip("this server has caption vectors; covered by the Milvus Lite tests")
        assert info.caption and not info.caption_vector and not info.caption_text_search
        hits = lib.search(text="picture number 0", top_k=5)
        assert all(h.score_kind == "cosine" and h.caption for h in hits)
        assert all(r.caption for r in lib.get([h.id for h in hits]))
