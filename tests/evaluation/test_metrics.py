"""The metric definitions, checked against values computed by hand from known rankings."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mmsearch.evaluation.metrics import (
    average_precision_at_k,
    map_at_k,
    rank_indices,
    recall_at_k,
    recall_subset_at_k,
)


def test_ranking_orders_by_score_descending() -> None:
    scores = np.array([[0.1, 0.9, 0.5]])
    assert rank_indices(scores).tolist() == [[1, 2, 0]]


def test_equal_scores_keep_gallery_order() -> None:
    scores = np.array([[0.5, 0.7, 0.5, 0.7, 0.5]])
    assert rank_indices(scores).tolist() == [[1, 3, 0, 2, 4]]


@given(st.lists(st.sampled_from([0.0, 0.25, 0.5]), min_size=1, max_size=30))
def test_ties_are_broken_by_the_smaller_gallery_index(values: list[float]) -> None:
    order = rank_indices(np.array([values]))[0].tolist()
    expected = sorted(range(len(values)), key=lambda i: (-values[i], i))
    assert order == expected


def test_excluded_candidates_are_removed_and_the_row_padded() -> None:
    scores = np.array([[0.9, 0.8, 0.7], [0.1, 0.2, 0.3]])
    assert rank_indices(scores, [{0}, set()]).tolist() == [[1, 2, -1], [2, 1, 0]]


def test_nan_scores_are_rejected() -> None:
    with pytest.raises(ValueError, match="NaN"):
        rank_indices(np.array([[0.1, np.nan]]))


def test_recall_counts_queries_with_the_target_in_the_top_k() -> None:
    rankings = [["a", "b", "c"], ["c", "a", "b"], ["b", "c", "a"]]
    targets = ["a", "a", "a"]
    assert recall_at_k(rankings, targets, [1, 2, 3]) == {1: 1 / 3, 2: 2 / 3, 3: 1.0}


def test_a_target_missing_from_the_gallery_counts_as_a_miss() -> None:
    rankings = [["a", "b"], ["a", "b"]]
    assert recall_at_k(rankings, ["a", "not-in-gallery"], [1, 2]) == {1: 0.5, 2: 0.5}


def test_recall_accepts_several_correct_answers() -> None:
    assert recall_at_k([["x", "b", "a"]], [{"a", "b"}], [1, 2]) == {1: 0.0, 2: 1.0}


def test_subset_recall_ranks_only_the_set_members() -> None:
    # the target is 3rd over the gallery, but first among the members (g1, g2 are not members)
    ranking = [["g1", "g2", "t", "m1", "m2"]]
    subset = [("m1", "t", "m2")]
    assert recall_at_k(ranking, ["t"], [1]) == {1: 0.0}
    assert recall_subset_at_k(ranking, ["t"], subset, [1, 2, 3]) == {1: 1.0, 2: 1.0, 3: 1.0}


def test_subset_recall_ignores_the_reference_even_if_ranked() -> None:
    # CIRR's subset is img_set.members minus the reference: ranked first, it does not count
    ranking = [["ref", "m1", "t"]]
    members_minus_reference = [("m1", "t")]
    assert recall_subset_at_k(ranking, ["t"], members_minus_reference, [1, 2]) == {1: 0.0, 2: 1.0}


def test_average_precision_uses_min_of_k_and_ground_truth_count() -> None:
    ranking = ["g1", "x", "g2", "y", "z"]
    gts = {"g1", "g2", "g3"}
    # P@1 = 1 at a hit, P@3 = 2/3 at a hit; divide by min(K, |G|)
    assert average_precision_at_k(ranking, gts, 5) == pytest.approx((1 + 2 / 3) / 3)
    assert average_precision_at_k(ranking, gts, 2) == pytest.approx(1 / 2)
    assert average_precision_at_k(ranking, gts, 1) == pytest.approx(1.0)


def test_average_precision_is_one_when_the_top_k_are_all_ground_truths() -> None:
    gts = [f"g{i}" for i in range(8)]
    assert average_precision_at_k(gts, set(gts), 5) == 1.0


def test_average_precision_is_zero_without_hits() -> None:
    assert average_precision_at_k(["x", "y"], {"g"}, 2) == 0.0


def test_average_precision_needs_ground_truth() -> None:
    with pytest.raises(ValueError, match="without ground truth"):
        average_precision_at_k(["x"], set(), 5)


def test_map_averages_queries() -> None:
    rankings = [["g1", "x", "g2"], ["x", "h"]]
    gts = [{"g1", "g2", "g3"}, {"h"}]
    expected = ((1 + 2 / 3) / 3 + 1 / 2) / 2
    assert map_at_k(rankings, gts, [3]) == {3: pytest.approx(expected)}


@given(
    st.lists(st.integers(0, 20), min_size=1, max_size=30, unique=True),
    st.sets(st.integers(0, 20), min_size=1, max_size=10),
    st.integers(1, 50),
)
def test_average_precision_is_a_fraction(ranking: list[int], gts: set[int], k: int) -> None:
    assert 0.0 <= average_precision_at_k(ranking, gts, k) <= 1.0


def test_mismatched_lengths_are_rejected() -> None:
    with pytest.raises(ValueError, match="2 rankings for 1"):
        recall_at_k([["a"], ["b"]], ["a"], [1])


def test_cut_offs_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        recall_at_k([["a"]], ["a"], [0])
