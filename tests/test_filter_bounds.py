"""The filter bounds the API advertises hold on a real Milvus Lite collection (100
``metadata_in`` values, 64 keys in ``metadata`` and in ``metadata_in``), and a query
Milvus cannot evaluate surfaces as a StoreError without the backend's internals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmsearch.errors import InvalidQueryError, StoreError
from mmsearch.filters import (
    MAX_IN_VALUES,
    MAX_METADATA_KEYS,
    SearchFilter,
    parse_filter,
    to_milvus_expr,
)
from mmsearch.store import MilvusStore, StoredRow

DIM = 4
KEYS = {f"k{j}": j for j in range(MAX_METADATA_KEYS)}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    store = MilvusStore(str(tmp_path_factory.mktemp("bounds") / "b.db"))
    store.ensure_collection("t", "m", DIM)
    rows = [
        StoredRow(
            id=f"{i:064x}",
            path=f"/p/{i}.jpg",
            size=i,
            mtime=float(i),
            metadata=KEYS | {"s": f"v{i}", "n": i},
            vector=np.eye(DIM, dtype=np.float32)[i % DIM],
        )
        for i in range(6)
    ]
    store.upsert("t", rows, model_id="m")
    yield store
    store.close()


def paths(store: MilvusStore, flt: SearchFilter) -> set[str]:
    return {r.path for r in store.iter_records("t", to_milvus_expr(flt))}


def test_metadata_in_takes_its_advertised_maximum_of_values(store: MilvusStore) -> None:
    values = [f"v{i}" for i in range(2, MAX_IN_VALUES + 2)]
    assert paths(store, SearchFilter(metadata_in={"s": values})) == {
        f"/p/{i}.jpg" for i in range(2, 6)
    }


def test_metadata_in_may_mix_value_types(store: MilvusStore) -> None:
    values: list = ["v1", 2, 2.5, True] + [f"x{i}" for i in range(MAX_IN_VALUES - 4)]
    assert paths(store, SearchFilter(metadata_in={"s": values})) == {"/p/1.jpg"}
    assert paths(store, SearchFilter(metadata_in={"n": values})) == {"/p/2.jpg"}


def test_every_bound_at_once_on_milvus_lite(store: MilvusStore) -> None:
    metadata_in = {
        key: [*[f"x{i}" for i in range(MAX_IN_VALUES - 1)], value] for key, value in KEYS.items()
    }
    flt = SearchFilter(metadata=KEYS, metadata_in=metadata_in, size_min=3)
    assert paths(store, flt) == {"/p/3.jpg", "/p/4.jpg", "/p/5.jpg"}


def test_sixty_four_metadata_conditions_match(store: MilvusStore) -> None:
    assert len(paths(store, SearchFilter(metadata=KEYS))) == 6
    assert paths(store, SearchFilter(metadata=KEYS | {"k63": -1})) == set()


@pytest.mark.parametrize("field", ["metadata", "metadata_in"])
def test_more_keys_than_the_bound_is_an_invalid_query(field: str) -> None:
    value = [1] if field == "metadata_in" else 1
    raw = {field: {f"k{j}": value for j in range(MAX_METADATA_KEYS + 1)}}
    with pytest.raises(InvalidQueryError, match=field):
        parse_filter(raw)


def test_a_backend_failure_is_a_store_error_without_internals(store: MilvusStore) -> None:
    flat = " or ".join(f'metadata["s"] == "v{i}"' for i in range(MAX_IN_VALUES))
    with pytest.raises(StoreError) as info:
        list(store.iter_records("t", flat))
    message = str(info.value)
    for internal in ("PlanProto", ".cpp", "segcore", "/workspace/"):
        assert internal not in message


def test_the_library_search_takes_the_maximum_filter(engine, photo_dir: Path) -> None:
    engine.index([photo_dir], metadata=KEYS)
    metadata_in = {key: [*range(100, 100 + MAX_IN_VALUES - 1), v] for key, v in KEYS.items()}
    hits = engine.search(
        text="a photo", top_k=9, filter={"metadata": KEYS, "metadata_in": metadata_in}
    )
    assert len(hits) == 5
