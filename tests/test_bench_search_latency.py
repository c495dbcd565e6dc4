"""The search-latency benchmark's own arithmetic: exact ground truth, vector
distributions, timing order, size parsing. (Milvus itself is exercised by running it.)"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "search_latency.py"


@pytest.fixture(scope="module")
def sl() -> ModuleType:
    spec = importlib.util.spec_from_file_location("search_latency", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["search_latency"] = module
    spec.loader.exec_module(module)
    return module


def test_exact_top_k_matches_a_full_sort(sl: ModuleType) -> None:
    rng = np.random.default_rng(1)
    vectors = sl.normalise(rng.standard_normal((500, 16)))
    queries = sl.normalise(rng.standard_normal((70, 16)))
    expected = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    np.testing.assert_array_equal(sl.exact_top_k(vectors, queries, 10), expected)


def test_numpy_floor_returns_the_exact_top_k_in_order(sl: ModuleType) -> None:
    rng = np.random.default_rng(2)
    vectors = sl.normalise(rng.standard_normal((300, 8)))
    q = vectors[7]
    np.testing.assert_array_equal(sl.numpy_top_k(vectors, q, 9), np.argsort(-(vectors @ q))[:9])


def test_generated_vectors_are_unit_length(sl: ModuleType) -> None:
    for make in (sl.random_unit, sl.clustered):
        vectors, queries = make(2000, 20, 32, 0)
        assert vectors.dtype == np.float32 and vectors.shape == (2000, 32)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(queries, axis=1), 1.0, atol=1e-5)


def test_clustered_queries_have_much_closer_neighbours_than_random_ones(sl: ModuleType) -> None:
    def nearest(make) -> float:
        vectors, queries = make(5000, 50, 256, 0)
        return float(np.mean((queries @ vectors.T).max(axis=1)))

    assert nearest(sl.clustered) > 0.6 > 0.4 > nearest(sl.random_unit)


def test_timing_alternates_blocks_and_times_every_query_on_both(sl: ModuleType) -> None:
    calls: list[str] = []
    queries = np.zeros((20, 4), dtype=np.float32)
    lat, floor = sl.timed_pairs(
        lambda q: calls.append("m"), lambda q: calls.append("n"), queries, 1, 1e9, block=10
    )
    assert len(lat) == len(floor) == 20
    timed = "".join(calls[6:])
    assert timed == "m" * 10 + "n" * 10 + "n" * 10 + "m" * 10


@pytest.mark.parametrize(
    ("text", "n"),
    [("10k", 10_000), ("100K", 100_000), ("1m", 1_000_000), ("2500", 2500), ("1.5k", 1500)],
)
def test_sizes_accept_k_and_m_suffixes(sl: ModuleType, text: str, n: int) -> None:
    assert sl.parse_size(text) == n


def test_markdown_lists_every_row_of_a_result_file(sl: ModuleType, tmp_path: Path) -> None:
    row = {
        "engine": "e",
        "dist": "random",
        "n": 100000,
        "index": "FLAT",
        "search_params": {},
        "flushed": True,
        "p50_ms": 27.0,
        "p95_ms": 28.2,
        "numpy_p50_ms": 12.4,
        "ratio_p50": 2.17,
        "ratio_min": 2.26,
        "recall_at_10": 1.0,
    }
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"rows": [row, {**row, "index": "HNSW"}]}))
    lines = sl.markdown([str(path)]).splitlines()
    assert len(lines) == 4
    assert "| 100,000 | FLAT |" in lines[2] and "| 2.17 |" in lines[2]
