"""Reciprocal rank fusion (Cormack, Clarke and Büttcher, SIGIR 2009).

Rankings from different scorers (cosine against image vectors, cosine against caption
vectors, BM25 over caption words) have incomparable scores; RRF uses only each item's
rank, so no score needs calibrating: an item at rank ``r`` (1-based) of a ranking adds
``1 / (k + r)`` to its fused score, and items a ranking does not return add nothing there.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import TypeVar

K = TypeVar("K", bound=Hashable)

DEFAULT_K = 60


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[K]], k: int = DEFAULT_K
) -> list[tuple[K, float]]:
    """Fuse rankings (each best first, items unique within a ranking) into one.

    Returns ``(item, score)`` best first. Equal scores are ordered by the earliest
    ranking holding the item, then by its rank there: the first ranking is the
    tie-breaker, so two disjoint rankings interleave, first ranking first. Sums are
    exact up to one rounding (``math.fsum``), so equal sets of ranks give equal scores
    whatever the order of the rankings.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    terms: dict[K, list[float]] = {}
    first_seen: dict[K, tuple[int, int]] = {}
    for which, ranking in enumerate(rankings):
        seen: set[K] = set()
        for rank, item in enumerate(ranking, start=1):
            if item in seen:
                raise ValueError(f"item {item!r} appears twice in ranking {which}")
            seen.add(item)
            terms.setdefault(item, []).append(1.0 / (k + rank))
            first_seen.setdefault(item, (which, rank))
    scored = [(item, math.fsum(values)) for item, values in terms.items()]
    scored.sort(key=lambda pair: (-pair[1], first_seen[pair[0]]))
    return scored
