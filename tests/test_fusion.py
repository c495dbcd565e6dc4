"""Reciprocal rank fusion, checked against scores computed by hand (k = 60 unless said)."""

from __future__ import annotations

import pytest

from mmsearch.fusion import reciprocal_rank_fusion


def test_an_item_both_rankings_put_first_is_first() -> None:
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["a", "c", "b"]])
    assert fused[0] == ("a", pytest.approx(2 / 61))


def test_scores_are_sums_of_reciprocal_ranks() -> None:
    fused = dict(reciprocal_rank_fusion([["a", "b", "c"], ["c", "a"]]))
    assert fused == {
        "a": pytest.approx(1 / 61 + 1 / 62),
        "b": pytest.approx(1 / 62),
        "c": pytest.approx(1 / 63 + 1 / 61),
    }


def test_higher_fused_score_ranks_first() -> None:
    # a: 1/61 + 1/62 > c: 1/63 + 1/61 > b: 1/62
    order = [item for item, _ in reciprocal_rank_fusion([["a", "b", "c"], ["c", "a"]])]
    assert order == ["a", "c", "b"]


def test_equal_scores_follow_the_first_ranking() -> None:
    fused = reciprocal_rank_fusion([["a", "b"], ["b", "a"]])
    assert [item for item, _ in fused] == ["a", "b"]
    assert fused[0][1] == fused[1][1] == pytest.approx(1 / 61 + 1 / 62)


def test_tied_scores_are_exactly_equal_whatever_the_order_of_the_terms() -> None:
    fused = dict(reciprocal_rank_fusion([["a", "b", "c"], ["c", "b", "a"], ["b", "c", "a"]]))
    # a: 1/61 + 1/63 + 1/63; b: 1/62 + 1/62 + 1/61; c: 1/63 + 1/61 + 1/62
    assert fused["b"] > fused["c"] > fused["a"]
    fused_again = dict(reciprocal_rank_fusion([["b", "c", "a"], ["a", "b", "c"], ["c", "b", "a"]]))
    assert fused_again == fused


def test_disjoint_rankings_interleave_first_ranking_first() -> None:
    fused = reciprocal_rank_fusion([["a", "b"], ["c", "d"]])
    assert [item for item, _ in fused] == ["a", "c", "b", "d"]
    assert [score for _, score in fused] == pytest.approx([1 / 61, 1 / 61, 1 / 62, 1 / 62])


def test_an_empty_ranking_leaves_the_other_order_unchanged() -> None:
    fused = reciprocal_rank_fusion([["x", "y", "z"], []])
    assert fused == [
        ("x", pytest.approx(1 / 61)),
        ("y", pytest.approx(1 / 62)),
        ("z", pytest.approx(1 / 63)),
    ]


def test_an_empty_first_ranking_takes_the_second_order() -> None:
    assert [item for item, _ in reciprocal_rank_fusion([[], ["y", "x"]])] == ["y", "x"]


def test_no_rankings_fuse_to_nothing() -> None:
    assert reciprocal_rank_fusion([]) == []
    assert reciprocal_rank_fusion([[], []]) == []


def test_k_sets_the_rank_offset() -> None:
    assert reciprocal_rank_fusion([["a", "b"]], k=1) == [
        ("a", pytest.approx(1 / 2)),
        ("b", pytest.approx(1 / 3)),
    ]


def test_a_larger_k_favours_items_several_rankings_agree_on() -> None:
    rankings = [["a", "x", "b"], ["c", "y", "z", "b"]]
    # k = 1: a = 1/2 beats b = 1/4 + 1/5; k = 60: b = 1/63 + 1/64 beats a = 1/61
    assert reciprocal_rank_fusion(rankings, k=1)[0][0] == "a"
    assert reciprocal_rank_fusion(rankings, k=60)[0][0] == "b"


def test_an_item_repeated_within_a_ranking_is_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        reciprocal_rank_fusion([["a", "a"]])


def test_k_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="k must be"):
        reciprocal_rank_fusion([["a"]], k=0)
