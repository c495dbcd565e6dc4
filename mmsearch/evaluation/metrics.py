"""Retrieval metrics exactly as the benchmark papers and their official scripts define them.

Every function here is pure: it takes rankings (ordered candidate ids, best first) and the
ground truth, and returns a fraction in [0, 1] averaged over queries. Reports multiply by
100, the unit the papers print.

Ranking rule (:func:`rank_indices`): candidates are ordered by score, highest first; equal
scores keep gallery order (the candidate with the smaller gallery index comes first). The
order is therefore a pure function of the scores, never of the sort algorithm.

Missing targets: a target that is not in the gallery can never be retrieved, so its query
counts as a miss (0) and stays in the denominator. Queries are never dropped.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Iterable, Sequence

import numpy as np


def rank_indices(
    scores: np.ndarray, exclude: Sequence[Collection[int]] | None = None
) -> np.ndarray:
    """Order gallery indices by score, highest first, ties broken by the smaller index.

    ``scores`` is ``(n_queries, n_gallery)``. ``exclude[q]`` lists gallery indices that are
    not candidates for query ``q`` (the reference image in CIRR/CIRCO); they are removed
    from that query's ranking, so every row of the result has ``n_gallery - len(exclude[q])``
    meaningful entries followed by ``-1`` padding.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D (queries, gallery), got shape {scores.shape}")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN; the embedder produced invalid vectors")
    n_queries, n_gallery = scores.shape
    if exclude is not None and len(exclude) != n_queries:
        raise ValueError(f"exclude has {len(exclude)} entries for {n_queries} queries")
    order = np.argsort(-scores, axis=1, kind="stable")
    if not exclude or not any(exclude):
        return order
    out = np.full((n_queries, n_gallery), -1, dtype=np.int64)
    for q in range(n_queries):
        drop = np.fromiter((i for i in exclude[q] if 0 <= i < n_gallery), dtype=np.int64)
        row = order[q]
        if drop.size:
            row = row[~np.isin(row, drop)]
        out[q, : row.size] = row
    return out


def _as_set(target: Hashable | Collection[Hashable]) -> set[Hashable]:
    if isinstance(target, (str, bytes, int, np.integer)):
        return {target}
    if isinstance(target, Collection):
        return set(target)
    return {target}


def _check_ks(ks: Iterable[int]) -> list[int]:
    ks = list(ks)
    if not ks or any(int(k) != k or k < 1 for k in ks):
        raise ValueError(f"cut-offs must be positive integers, got {ks}")
    return [int(k) for k in ks]


def _check_lengths(name: str, a: Sequence[object], b: Sequence[object]) -> None:
    if len(a) != len(b):
        raise ValueError(f"{name}: {len(a)} rankings for {len(b)} ground truths")
    if not a:
        raise ValueError(f"{name}: no queries to evaluate")


def recall_at_k(
    rankings: Sequence[Sequence[Hashable]],
    targets: Sequence[Hashable | Collection[Hashable]],
    ks: Iterable[int],
) -> dict[int, float]:
    """Recall@K: the fraction of queries with a target among the first K candidates.

    This is the definition of CIRR (Liu et al., ICCV 2021), FashionIQ (Wu et al., CVPR 2021)
    and of text-to-image retrieval on Flickr30k/COCO (Karpathy & Fei-Fei, CVPR 2015): each
    query has one correct image (or a set, any of which counts), and a query scores 1 when
    one of them is ranked within the top K, else 0.
    """
    ks = _check_ks(ks)
    _check_lengths("recall@K", rankings, targets)
    hits = {k: 0 for k in ks}
    for ranking, target in zip(rankings, targets, strict=True):
        wanted = _as_set(target)
        first = next((i for i, c in enumerate(ranking) if c in wanted), None)
        if first is None:
            continue
        for k in ks:
            if first < k:
                hits[k] += 1
    return {k: hits[k] / len(rankings) for k in ks}


def recall_subset_at_k(
    rankings: Sequence[Sequence[Hashable]],
    targets: Sequence[Hashable],
    subsets: Sequence[Collection[Hashable]],
    ks: Iterable[int],
) -> dict[int, float]:
    """Recall_subset@K of CIRR: Recall@K where the candidates are only the query's image set.

    Each CIRR query comes with ``img_set.members``: six visually similar images, one of them
    the reference. The candidates are those members minus the reference (five images); the
    query's ranking over the whole gallery is filtered to them, keeping its order, and
    Recall@K is taken on that filtered list (K = 1, 2, 3 in the paper). ``subsets[q]`` must
    already exclude the reference; the reference is also never in ``rankings[q]`` because
    CIRR removes it from the candidates.
    """
    ks = _check_ks(ks)
    _check_lengths("recall_subset@K", rankings, targets)
    if len(subsets) != len(rankings):
        raise ValueError(f"recall_subset@K: {len(subsets)} subsets for {len(rankings)} queries")
    filtered = [
        [c for c in ranking if c in members]
        for ranking, members in zip(rankings, (set(s) for s in subsets), strict=True)
    ]
    return recall_at_k(filtered, targets, ks)


def average_precision_at_k(
    ranking: Sequence[Hashable], ground_truth: Collection[Hashable], k: int
) -> float:
    """AP@K with several ground truths, CIRCO's definition (Baldrati et al., ICCV 2023):

    ``AP@K = (1 / min(K, |G|)) * sum_{i=1..K} P@i * rel(i)``

    where ``P@i`` is the precision of the first ``i`` candidates, ``rel(i)`` is 1 when the
    ``i``-th candidate is a ground truth, and ``G`` the ground-truth set. A ranking with every
    ground truth at the top scores 1 even when ``|G| > K``.
    """
    gt = set(ground_truth)
    if not gt:
        raise ValueError("AP@K is undefined for a query without ground truth")
    if k < 1:
        raise ValueError(f"cut-off must be a positive integer, got {k}")
    found = 0
    total = 0.0
    for i, candidate in enumerate(ranking[:k], start=1):
        if candidate in gt:
            found += 1
            total += found / i
    return total / min(k, len(gt))


def map_at_k(
    rankings: Sequence[Sequence[Hashable]],
    ground_truths: Sequence[Collection[Hashable]],
    ks: Iterable[int],
) -> dict[int, float]:
    """mAP@K: the mean over queries of :func:`average_precision_at_k` (CIRCO's headline metric)."""
    ks = _check_ks(ks)
    _check_lengths("mAP@K", rankings, ground_truths)
    return {
        k: float(
            np.mean(
                [
                    average_precision_at_k(r, g, k)
                    for r, g in zip(rankings, ground_truths, strict=True)
                ]
            )
        )
        for k in ks
    }
