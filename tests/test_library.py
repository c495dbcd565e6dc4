"""The ImageSearch facade and the store under it: persistence, models, records."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from mmsearch.config import Settings
from mmsearch.errors import (
    CollectionNotFoundError,
    InvalidQueryError,
    ModelMismatchError,
)
from mmsearch.images import content_hash
from mmsearch.library import ImageSearch
from mmsearch.store import INSERT_BATCH, MilvusStore, StoredRow

ROOT = Path(__file__).resolve().parents[1]


def test_stats_report_model_dim_count_and_uri(
    engine: ImageSearch, embedder, photo_dir: Path
) -> None:
    engine.index([photo_dir])
    st = engine.stats()
    expected = ("images", 5, embedder.model_id, embedder.dim)
    assert (st.collection, st.count, st.model_id, st.dim) == expected
    assert st.uri == str(engine.settings.data_dir / "mmsearch.db")


def test_get_returns_records_in_order_and_skips_unknown(
    engine: ImageSearch, photo_dir: Path
) -> None:
    engine.index([photo_dir])
    a, b = (
        content_hash((photo_dir / "coffee.jpg").read_bytes()),
        content_hash((photo_dir / "rocket.jpg").read_bytes()),
    )
    recs = engine.get([b, "0" * 64, a])
    assert [r.path for r in recs] == [str(photo_dir / "rocket.jpg"), str(photo_dir / "coffee.jpg")]
    assert recs[0].size == (photo_dir / "rocket.jpg").stat().st_size


def test_get_refuses_malformed_ids(engine: ImageSearch, photo_dir: Path) -> None:
    engine.index([photo_dir])
    with pytest.raises(InvalidQueryError, match="64 lowercase hex"):
        engine.get(['" or 1==1 or id == "'])


def test_remove_by_id_and_by_path(engine: ImageSearch, photo_dir: Path) -> None:
    engine.index([photo_dir])
    coffee = content_hash((photo_dir / "coffee.jpg").read_bytes())
    assert engine.remove(ids=[coffee, "f" * 64]) == 1
    assert engine.remove(paths=[photo_dir / "rocket.jpg", photo_dir / "not-indexed.jpg"]) == 1
    assert engine.stats().count == 3
    assert (photo_dir / "rocket.jpg").exists()


def test_remove_needs_something_to_remove(engine: ImageSearch, photo_dir: Path) -> None:
    engine.index([photo_dir])
    with pytest.raises(InvalidQueryError):
        engine.remove()


def test_unknown_collection_for_stats_get_and_remove(engine: ImageSearch) -> None:
    with pytest.raises(CollectionNotFoundError):
        engine.stats(collection="missing")
    with pytest.raises(CollectionNotFoundError):
        engine.remove(ids=["a" * 64], collection="missing")
    with pytest.raises(CollectionNotFoundError):
        engine.get(["a" * 64], collection="missing")


def test_invalid_collection_name_is_refused(engine: ImageSearch) -> None:
    with pytest.raises(InvalidQueryError, match="collection name"):
        engine.stats(collection='x" or 1==1')


def test_collections_are_independent(engine: ImageSearch, photo_dir: Path) -> None:
    engine.index([photo_dir / "coffee.jpg"], collection="kitchen")
    engine.index([photo_dir])
    assert engine.stats("kitchen").count == 1
    assert engine.stats().count == 5
    assert engine.collections() == ["images", "kitchen"]


def test_other_model_is_refused_for_search_and_index(
    settings: Settings, photo_dir: Path, make_embedder
) -> None:
    with ImageSearch(settings, embedder_factory=lambda s: make_embedder()) as lib:
        lib.index([photo_dir])
    other = make_embedder(dim=32, model_id="another-model")
    with ImageSearch(settings, embedder_factory=lambda s: other) as lib:
        with pytest.raises(ModelMismatchError, match="test-pixel-hash-v1.*another-model"):
            lib.search(text="x")
        with pytest.raises(ModelMismatchError):
            lib.index([photo_dir])
        assert lib.stats().count == 5


def test_other_dimension_is_refused(settings: Settings, photo_dir: Path, make_embedder) -> None:
    with ImageSearch(settings, embedder_factory=lambda s: make_embedder()) as lib:
        lib.index([photo_dir])
    wide = make_embedder(dim=64)
    with ImageSearch(settings, embedder_factory=lambda s: wide) as lib:
        with pytest.raises(ModelMismatchError, match="dim 32.*dim 64"):
            lib.search(text="x")


def test_store_refuses_vectors_of_wrong_shape(tmp_path: Path) -> None:
    store = MilvusStore(str(tmp_path / "s.db"))
    store.ensure_collection("c", "m", 4)
    with pytest.raises(ModelMismatchError):
        store.upsert("c", [StoredRow("a" * 64, "/x", 1, 1.0, {}, np.ones(5))], model_id="m")
    with pytest.raises(ModelMismatchError):
        store.upsert("c", [StoredRow("a" * 64, "/x", 1, 1.0, {}, np.ones(4))], model_id="other")
    store.close()


def test_upsert_in_batches_never_duplicates(tmp_path: Path) -> None:
    store = MilvusStore(str(tmp_path / "s.db"))
    store.ensure_collection("c", "m", 4)
    n = INSERT_BATCH + 500
    rows = [StoredRow(f"{i:064x}", f"/p/{i}", i, 0.0, {}, np.ones(4) / 2) for i in range(n)]
    assert store.upsert("c", rows, model_id="m") == n
    assert store.upsert("c", rows[:10], model_id="m") == 10
    assert store.count("c") == n
    assert sum(1 for _ in store.iter_records("c")) == n
    store.close()


def test_lite_database_path_must_end_in_db(tmp_path: Path) -> None:
    from mmsearch.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match=r"\.db"):
        MilvusStore(str(tmp_path / "store.sqlite"))


@pytest.mark.parametrize("name", ["my photos.db", "x" * 37 + ".db", "fotos-ü.db"])
def test_lite_database_file_name_milvus_lite_refuses_is_a_clear_error(
    tmp_path: Path, name: str
) -> None:
    from mmsearch.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="file name"):
        MilvusStore(str(tmp_path / name))
    assert not (tmp_path / name).exists()


def test_data_survives_reopening_in_a_new_process(
    settings: Settings, photo_dir: Path, engine: ImageSearch, embedder_spec: str
) -> None:
    with engine as lib:
        lib.index([photo_dir], metadata={"album": "x"})
    script = textwrap.dedent(
        f"""
        import json, sys
        sys.path.insert(0, {str(ROOT / "tests")!r})
        from conftest import build_test_embedder
        from mmsearch.config import Settings
        from mmsearch.library import ImageSearch
        embedder = build_test_embedder({embedder_spec!r})
        with ImageSearch(Settings(data_dir={str(settings.data_dir)!r}),
                         embedder_factory=lambda s: embedder) as lib:
            hit = lib.search(image={str(photo_dir / "camera.png")!r}, top_k=1)[0]
            report = lib.index([{str(photo_dir)!r}])
            print(json.dumps({{"count": lib.stats().count, "hit": hit.path,
                              "meta": hit.metadata, "unchanged": report.unchanged}}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(settings.data_dir)},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {
        "count": 5,
        "hit": str(photo_dir / "camera.png"),
        "meta": {"album": "x"},
        "unchanged": 5,
    }


def test_lazy_resources_are_created_once_across_threads(settings: Settings, make_embedder) -> None:
    from concurrent.futures import ThreadPoolExecutor

    calls = []

    def factory(s: Settings):
        calls.append(1)
        return make_embedder()

    with ImageSearch(settings, embedder_factory=factory) as lib:
        with ThreadPoolExecutor(8) as pool:
            embedders = list(pool.map(lambda _: lib.embedder, range(16)))
            stores = list(pool.map(lambda _: lib.store, range(16)))
    assert len(calls) == 1
    assert len({id(e) for e in embedders}) == 1
    assert len({id(s) for s in stores}) == 1


def test_database_held_by_another_process_gives_a_clear_error(
    engine: ImageSearch, photo_dir: Path, settings: Settings
) -> None:
    engine.index([photo_dir / "coffee.jpg"])
    script = textwrap.dedent(
        f"""
        from mmsearch.errors import StoreError
        from mmsearch.store import MilvusStore
        try:
            MilvusStore({settings.milvus_uri!r})
        except StoreError as exc:
            print(exc)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(settings.data_dir)},
    )
    assert "one process per database" in out.stdout, out.stderr[-2000:]
    assert engine.stats().count == 1
