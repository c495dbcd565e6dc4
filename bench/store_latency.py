"""Search latency through mmsearch's own store, with the defaults a user gets.

``search_latency.py`` compares Milvus Lite index types through pymilvus directly. This
one measures what the library does on every query: ``MilvusStore.search`` on a
collection created by ``MilvusStore`` from the default ``Settings`` (its schema with the
path, metadata and caption fields, its index, its output fields, its flush policy), with
the numpy brute-force scan on the same vectors as the floor, timed in alternating
blocks in the same run, and recall@10 against exact search.

    python bench/store_latency.py [--sizes 10k,100k] [--dists random,clustered]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, print_table, write_results  # noqa: E402
from search_latency import (  # noqa: E402
    clustered,
    exact_top_k,
    numpy_top_k,
    parse_size,
    random_unit,
    timed_pairs,
)

from mmsearch.config import Settings  # noqa: E402
from mmsearch.store import MilvusStore, StoredRow  # noqa: E402

TOP_K = 9
RECALL_K = 10
DIM = 768
MODEL_ID = "bench/random-vectors"
DISTRIBUTIONS = {"random": random_unit, "clustered": clustered}


def fill(store: MilvusStore, vectors: np.ndarray) -> tuple[dict[str, int], float]:
    """Store ``vectors`` the way indexing does (upserts of 1,000 rows, then the default
    flush policy's flush); returns id -> row index and the seconds it took."""
    ids = [hashlib.sha256(i.to_bytes(8, "little")).hexdigest() for i in range(len(vectors))]
    started = time.perf_counter()
    store.ensure_collection("images", MODEL_ID, vectors.shape[1])
    for start in range(0, len(vectors), 1000):
        rows = [
            StoredRow(
                id=ids[i],
                path=f"/photos/{i // 1000:04d}/{i:07d}.jpg",
                size=100_000 + i,
                mtime=1.7e9 + i,
                metadata={"album": f"a{i % 7}"},
                vector=vectors[i],
            )
            for i in range(start, min(start + 1000, len(vectors)))
        ]
        store.upsert("images", rows, model_id=MODEL_ID)
    store.flush("images")  # a no-op where the flush policy says never
    return {h: i for i, h in enumerate(ids)}, time.perf_counter() - started


def run_case(dist: str, n: int, args: argparse.Namespace) -> dict[str, Any]:
    vectors, queries = DISTRIBUTIONS[dist](n, args.queries, DIM, seed=0)
    truth = exact_top_k(vectors, queries[: args.recall_queries], RECALL_K)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp))
        store = MilvusStore.from_settings(settings)
        try:
            index_of, fill_s = fill(store, vectors)

            def search(q: np.ndarray, k: int = TOP_K) -> list[int]:
                hits = store.search("images", q, model_id=MODEL_ID, top_k=k)[0]
                return [index_of[h.id] for h in hits]

            lat, floor = timed_pairs(
                search,
                lambda q: numpy_top_k(vectors, q, TOP_K),
                queries,
                args.reps,
                args.budget,
            )
            found = [search(q, RECALL_K) for q in queries[: args.recall_queries]]
        finally:
            store.close()
    recall = float(
        np.mean(
            [len(set(f) & set(t.tolist())) / RECALL_K for f, t in zip(found, truth, strict=True)]
        )
    )
    return {
        "dist": dist,
        "n": n,
        "index": settings.milvus_index_type,
        "flush": settings.milvus_flush,
        "fill_s": round(fill_s, 1),
        "p50_ms": float(np.percentile(lat, 50) * 1000),
        "p95_ms": float(np.percentile(lat, 95) * 1000),
        "numpy_p50_ms": float(np.percentile(floor, 50) * 1000),
        "ratio_p50": float(np.median(lat) / np.median(floor)),
        "recall_at_10": recall,
        "samples": len(lat),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10k,100k")
    parser.add_argument("--dists", default="random,clustered")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--recall-queries", type=int, default=50)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--budget", type=float, default=30.0, help="seconds of timing per case")
    args = parser.parse_args(argv)
    results = [
        run_case(dist, parse_size(size), args)
        for size in args.sizes.split(",")
        for dist in args.dists.split(",")
    ]
    print_table(
        ["dist", "n", "index", "p50 ms", "p95 ms", "numpy p50 ms", "ratio p50", "recall@10"],
        [
            [
                r["dist"],
                r["n"],
                r["index"],
                r["p50_ms"],
                r["p95_ms"],
                r["numpy_p50_ms"],
                r["ratio_p50"],
                r["recall_at_10"],
            ]
            for r in results
        ],
    )
    path = write_results(
        "store_latency", {"machine": machine(), "top_k": TOP_K, "dim": DIM, "results": results}
    )
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
