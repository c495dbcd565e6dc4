"""Run a benchmark end to end: embed the gallery (cached), embed the queries, score, rank,
optionally rerank the head of each ranking, and compute the papers' metrics.

Scores are exact cosine similarities (the embedder returns L2-normalised vectors, so a
matrix product), not an approximate index, so numbers reflect the model alone.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mmsearch.embedding import ImageTextEmbedder
from mmsearch.errors import DatasetError, ImageDecodeError, RerankError
from mmsearch.evaluation import metrics
from mmsearch.evaluation.cache import EmbeddingCache, file_key
from mmsearch.evaluation.datasets.base import Benchmark, Query

logger = logging.getLogger(__name__)

RerankFn = Callable[[Query, list[str]], Sequence[str]]
"""``rerank(query, candidate_paths) -> the same paths, best first``.

Candidates are identified by their image file paths (strings), which is what an image
reranker needs to look at; the query carries its text and reference image path."""

ProgressFn = Callable[[str, int, int], None]
"""``progress(stage, done, total)``; stages: ``gallery``, ``queries``, ``rerank``."""

CIRR_KS = (1, 5, 10, 50)
CIRR_SUBSET_KS = (1, 2, 3)
FIQ_KS = (10, 50)
CIRCO_KS = (5, 10, 25, 50)
T2I_KS = (1, 5, 10)
SUBMISSION_TOP = {"cirr": 50, "cirr_subset": 3, "circo": 50}


@dataclass
class RunOptions:
    cache_dir: Path
    batch_size: int = 16
    decode_workers: int = 4
    rerank: RerankFn | None = None
    rerank_top: int = 0
    query_template: str = "{text}"
    """Query text; ``{text}`` is the modification text or caption, CIRCO also offers
    ``{shared_concept}``."""
    exclude_reference: bool | None = None
    """Override the benchmark's rule for removing the reference image from the candidates."""
    submission_dir: Path | None = None
    cache_every: int = 256
    """Images embedded between two cache writes (what an interrupted run can lose)."""
    limit: int | None = None
    """Evaluate only the first N queries (a smoke test; numbers are then not comparable)."""
    progress: ProgressFn | None = None


@dataclass
class _Ranked:
    top: list[list[str]]
    subset: list[list[str]] | None = None
    stats: dict[str, Any] = field(default_factory=dict)


def _load_image(path: Path) -> Image.Image:
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, ValueError) as exc:
        raise ImageDecodeError(f"cannot read image {path}: {exc}") from exc


def _tick(options: RunOptions, stage: str, done: int, total: int) -> None:
    if options.progress is not None:
        options.progress(stage, done, total)


def embed_gallery(
    embedder: ImageTextEmbedder, paths: Sequence[Path], options: RunOptions
) -> tuple[np.ndarray, int]:
    """Embeddings of ``paths`` (in order), reusing and extending the on-disk cache.

    Returns the matrix and how many images had to be embedded by this call."""
    cache = EmbeddingCache(options.cache_dir, embedder.model_id, embedder.dim)
    keys = [file_key(p) for p in paths]
    todo = [i for i, k in enumerate(keys) if cache.get(k) is None]
    total = len(paths)
    _tick(options, "gallery", total - len(todo), total)
    chunk = max(options.cache_every, 1)

    def prepare(i: int) -> Any:
        return embedder.preprocess(_load_image(paths[i]))

    with ThreadPoolExecutor(max_workers=options.decode_workers) as pool:
        for start in range(0, len(todo), chunk):
            idx = todo[start : start + chunk]
            pixels = list(pool.map(prepare, idx))
            vectors = embedder.encode(images=pixels, batch_size=options.batch_size)
            cache.add([keys[i] for i in idx], vectors)
            _tick(options, "gallery", total - len(todo) + start + len(idx), total)
    matrix = (
        np.stack([cache.get(k) for k in keys]) if keys else np.zeros((0, embedder.dim), np.float32)
    )
    return matrix.astype(np.float32, copy=False), len(todo)


def _query_text(query: Query, template: str) -> str:
    try:
        return template.format(
            text=query.text, **{k: v for k, v in query.extra.items() if isinstance(v, str)}
        )
    except (KeyError, IndexError) as exc:
        raise DatasetError(f"query template {template!r} uses an unknown field: {exc}") from exc


def embed_queries(
    embedder: ImageTextEmbedder, bench: Benchmark, queries: Sequence[Query], options: RunOptions
) -> np.ndarray:
    """Composed queries: the fused embedding of (reference image, text); text-to-image: text."""
    texts = [_query_text(q, options.query_template) for q in queries]
    out = []
    step = max(options.batch_size, 1)
    with ThreadPoolExecutor(max_workers=options.decode_workers) as pool:
        for start in range(0, len(queries), step):
            batch = queries[start : start + step]
            batch_texts = texts[start : start + step]
            if bench.task == "composed":
                paths = [q.reference_path for q in batch]
                if any(p is None for p in paths):
                    raise DatasetError(f"{bench.title}: a composed query has no reference image")
                pixels = list(pool.map(lambda p: embedder.preprocess(_load_image(p)), paths))
                out.append(
                    embedder.encode(texts=batch_texts, images=pixels, batch_size=options.batch_size)
                )
            else:
                out.append(embedder.encode(texts=batch_texts, batch_size=options.batch_size))
            _tick(options, "queries", start + len(batch), len(queries))
    if not out:
        return np.zeros((0, embedder.dim), np.float32)
    return np.concatenate(out).astype(np.float32, copy=False)


def _apply_rerank(
    query: Query, ranked: list[str], n: int, rerank: RerankFn, paths: dict[str, Path]
) -> list[str]:
    head = ranked[:n]
    by_path = {str(paths[c]): c for c in head}
    order = list(rerank(query, list(by_path)))
    if sorted(order) != sorted(by_path):
        raise RerankError(
            f"reranker must return a permutation of its {len(head)} candidates for query {query.id}"
        )
    return [by_path[p] for p in order] + ranked[n:]


def rank_queries(
    bench: Benchmark,
    query_vectors: np.ndarray,
    gallery_vectors: np.ndarray,
    queries: Sequence[Query],
    keep: int,
    options: RunOptions,
) -> _Ranked:
    """Top-``keep`` gallery ids per query (after reference removal and reranking), and for
    CIRR the order of each query's subset members within that final ranking."""
    ids = list(bench.gallery)
    index = {gid: i for i, gid in enumerate(ids)}
    exclude_ref = (
        bench.exclude_reference if options.exclude_reference is None else options.exclude_reference
    )
    n_gallery = len(ids)
    rows_per_batch = max(1, min(256, 2**24 // max(n_gallery, 1)))
    rerank_top = options.rerank_top if options.rerank is not None else 0
    top: list[list[str]] = []
    subset: list[list[str]] | None = [] if any(q.subset is not None for q in queries) else None
    for start in range(0, len(queries), rows_per_batch):
        batch = queries[start : start + rows_per_batch]
        scores = query_vectors[start : start + len(batch)] @ gallery_vectors.T
        exclude = [
            {index[q.reference]} if exclude_ref and q.reference in index else set() for q in batch
        ]
        order = metrics.rank_indices(scores, exclude)
        for row, (q, ranking) in enumerate(zip(batch, order, strict=True)):
            head = [ids[i] for i in ranking[: max(keep, rerank_top)] if i >= 0]
            if rerank_top:
                head = _apply_rerank(q, head, rerank_top, options.rerank, bench.gallery)  # type: ignore[arg-type]
                _tick(options, "rerank", start + row + 1, len(queries))
            top.append(head[:keep])
            if subset is not None:
                members = {m for m in (q.subset or ()) if m in index and m != q.reference}
                in_head = [c for c in head if c in members]
                rest = sorted(members.difference(in_head), key=index.__getitem__)
                rest_idx = np.array([index[m] for m in rest], dtype=np.int64)
                rest_order = (
                    metrics.rank_indices(scores[row : row + 1, rest_idx])[0] if rest else []
                )
                subset.append(in_head + [rest[i] for i in rest_order])
    return _Ranked(top=top, subset=subset)


def _pct(values: dict[int, float], prefix: str) -> dict[str, float]:
    return {f"{prefix}@{k}": round(100.0 * v, 2) for k, v in values.items()}


def _metrics(bench: Benchmark, queries: Sequence[Query], ranked: _Ranked) -> dict[str, float]:
    targets = [q.targets[0] for q in queries]
    if bench.name == "cirr":
        recall = metrics.recall_at_k(ranked.top, targets, CIRR_KS)
        assert ranked.subset is not None
        subsets = [q.subset or () for q in queries]
        subset = metrics.recall_subset_at_k(ranked.subset, targets, subsets, CIRR_SUBSET_KS)
        out = _pct(recall, "R") | _pct(subset, "Rs")
        out["Avg"] = round(100.0 * (recall[5] + subset[1]) / 2, 2)
        return out
    if bench.name == "fashioniq":
        return _pct(metrics.recall_at_k(ranked.top, targets, FIQ_KS), "R")
    if bench.name == "circo":
        out = _pct(metrics.map_at_k(ranked.top, [q.targets for q in queries], CIRCO_KS), "mAP")
        out |= _pct(metrics.recall_at_k(ranked.top, targets, CIRCO_KS), "R")
        return out
    return _pct(metrics.recall_at_k(ranked.top, targets, T2I_KS), "R")


def _write_submission(
    bench: Benchmark, queries: Sequence[Query], ranked: _Ranked, options: RunOptions
) -> list[str]:
    if bench.name not in ("cirr", "circo"):
        raise DatasetError(
            f"{bench.title} has no ground truth in {bench.split} and no evaluation server format; "
            "use the val split"
        )
    if options.submission_dir is None:
        raise DatasetError(
            f"{bench.title}: the ground truth is held by the evaluation server; "
            "give a submission directory to write the prediction file"
        )
    options.submission_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if bench.name == "cirr":
        assert ranked.subset is not None
        for metric, lists, top in (
            ("recall", ranked.top, SUBMISSION_TOP["cirr"]),
            ("recall_subset", ranked.subset, SUBMISSION_TOP["cirr_subset"]),
        ):
            body: dict[str, Any] = {"version": "rc2", "metric": metric}
            body |= {q.id: r[:top] for q, r in zip(queries, lists, strict=True)}
            path = options.submission_dir / f"cirr_{bench.split}_{metric}.json"
            path.write_text(json.dumps(body))
            written.append(str(path))
    else:
        body = {
            q.id: [int(c) for c in r[: SUBMISSION_TOP["circo"]]]
            for q, r in zip(queries, ranked.top, strict=True)
        }
        path = options.submission_dir / f"circo_{bench.split}.json"
        path.write_text(json.dumps(body))
        written.append(str(path))
    return written


def evaluate_benchmark(
    embedder: ImageTextEmbedder, bench: Benchmark, options: RunOptions
) -> dict[str, Any]:
    """Evaluate one loaded benchmark (one FashionIQ category); returns its report section."""
    queries = bench.queries[: options.limit] if options.limit else bench.queries
    if not queries:
        raise DatasetError(f"{bench.title} has no queries")
    t0 = time.perf_counter()
    gallery_vectors, embedded = embed_gallery(embedder, list(bench.gallery.values()), options)
    t1 = time.perf_counter()
    query_vectors = embed_queries(embedder, bench, queries, options)
    t2 = time.perf_counter()
    keep = max(CIRR_KS + FIQ_KS + CIRCO_KS + T2I_KS)
    ranked = rank_queries(bench, query_vectors, gallery_vectors, queries, keep, options)
    t3 = time.perf_counter()
    section: dict[str, Any] = {
        "queries": len(queries),
        "gallery": len(bench.gallery),
        "embedded_images": embedded,
        "cached_images": len(bench.gallery) - embedded,
        "seconds": {
            "gallery": round(t1 - t0, 3),
            "queries": round(t2 - t1, 3),
            "ranking": round(t3 - t2, 3),
        },
    }
    if bench.has_ground_truth:
        section["metrics"] = _metrics(bench, queries, ranked)
    else:
        section["submission_files"] = _write_submission(bench, queries, ranked, options)
    return section


def run(
    embedder: ImageTextEmbedder, benchmarks: Sequence[Benchmark], options: RunOptions
) -> dict[str, Any]:
    """Evaluate a benchmark (several parts for FashionIQ) and return the JSON report."""
    if not benchmarks:
        raise DatasetError("nothing to evaluate")
    if options.rerank_top and options.rerank is None:
        raise RerankError(
            "reranking the top candidates was asked for, but no reranker is configured"
        )
    first = benchmarks[0]
    exclude_ref = (
        first.exclude_reference if options.exclude_reference is None else options.exclude_reference
    )
    report: dict[str, Any] = {
        "benchmark": first.name,
        "split": first.split,
        "model_id": embedder.model_id,
        "rerank_top": options.rerank_top if options.rerank else 0,
        "query_template": options.query_template,
        "exclude_reference": exclude_ref,
        "limit": options.limit,
    }
    if first.name == "fashioniq":
        parts = {b.category: evaluate_benchmark(embedder, b, options) for b in benchmarks}
        report["categories"] = parts
        scored = [p["metrics"] for p in parts.values() if "metrics" in p]
        if scored:
            mean = {k: round(float(np.mean([m[k] for m in scored])), 2) for k in scored[0]}
            mean["Avg"] = round(float(np.mean(list(mean.values()))), 2)
            report["metrics"] = mean
        return report
    if len(benchmarks) != 1:
        raise DatasetError(f"{first.name} is a single benchmark, got {len(benchmarks)} parts")
    report |= evaluate_benchmark(embedder, first, options)
    return report


def format_table(report: dict[str, Any]) -> str:
    """The report as a plain-text table in the column order the papers print."""
    name = report["benchmark"]
    title = f"{name} {report['split']}  model={report['model_id']}"
    if report.get("rerank_top"):
        title += f"  rerank_top={report['rerank_top']}"
    if report.get("limit"):
        title += f"  (first {report['limit']} queries only)"
    if "metrics" not in report:
        files = report.get("submission_files", [])
        return (
            title
            + "\nno public ground truth; submission files:\n"
            + "\n".join(f"  {f}" for f in files)
        )
    m = report["metrics"]
    if name == "cirr":
        head = ["R@1", "R@5", "R@10", "R@50", "|", "Rs@1", "Rs@2", "Rs@3", "|", "Avg"]
        rows = [[m.get(h, "|") if h != "|" else "|" for h in head]]
    elif name == "fashioniq":
        cats = report["categories"]
        head = []
        row: list[Any] = []
        for cat, part in cats.items():
            for k in ("R@10", "R@50"):
                head.append(f"{cat} {k}")
                row.append(part.get("metrics", {}).get(k, "-"))
        head += ["mean R@10", "mean R@50", "Avg"]
        row += [m["R@10"], m["R@50"], m["Avg"]]
        rows = [row]
    elif name == "circo":
        head = ["mAP@5", "mAP@10", "mAP@25", "mAP@50"]
        rows = [[m[h] for h in head]]
    else:
        head = ["R@1", "R@5", "R@10"]
        rows = [[m[h] for h in head]]
    cells = [[str(h) for h in head]] + [
        [c if isinstance(c, str) else f"{c:.2f}" for c in r] for r in rows
    ]
    widths = [max(len(r[i]) for r in cells) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join([title, *lines])
