"""Rankings of K responses -> C(K,2) preference pairs (InstructGPT), with ties and fails."""

import pytest

from rlhaif.data.rankings import ranking_to_pairs


def as_tuples(pairs):
    return {(p.chosen, p.rejected, p.p) for p in pairs}


def test_full_ranking_gives_all_pairs_weighted_one_over_c_k_2():
    pairs = ranking_to_pairs("q", ["a", "b", "c", "d"], [2, 1, 4, 3])
    assert len(pairs) == 6  # C(4,2)
    assert as_tuples(pairs) == {("b", "a", 1.0), ("a", "c", 1.0), ("a", "d", 1.0), ("b", "c", 1.0),
                                ("b", "d", 1.0), ("d", "c", 1.0)}
    assert all(p.weight == pytest.approx(1 / 6) for p in pairs)


def test_ties_half_or_dropped():
    half = ranking_to_pairs("q", ["a", "b", "c"], [1, 1, 2])
    assert as_tuples(half) == {("a", "b", 0.5), ("a", "c", 1.0), ("b", "c", 1.0)}
    dropped = ranking_to_pairs("q", ["a", "b", "c"], [1, 1, 2], ties="drop")
    assert as_tuples(dropped) == {("a", "c", 1.0), ("b", "c", 1.0)}
    assert all(p.weight == pytest.approx(1 / 2) for p in dropped)


def test_fails_lose_to_every_ranked_response_and_two_fails_make_no_pair():
    pairs = ranking_to_pairs("q", ["a", "b", "c", "d"], [2, "F", 1, None])
    assert as_tuples(pairs) == {("c", "a", 1.0), ("a", "b", 1.0), ("a", "d", 1.0), ("c", "b", 1.0), ("c", "d", 1.0)}
    assert all(p.weight == pytest.approx(1 / 5) for p in pairs)


def test_uniform_weights_and_source():
    pairs = ranking_to_pairs("q", ["a", "b"], [1, 2], source="human:ann1", weighting="uniform")
    assert [(p.chosen, p.rejected, p.weight, p.source) for p in pairs] == [("a", "b", 1.0, "human:ann1")]


def test_identical_responses_make_no_pair():
    assert ranking_to_pairs("q", ["same", "same"], [1, 2]) == []


def test_bad_rankings_are_rejected():
    with pytest.raises(ValueError, match="2 responses but 3 ranks"):
        ranking_to_pairs("q", ["a", "b"], [1, 2, 3])
    with pytest.raises(ValueError, match="rank must be an integer"):
        ranking_to_pairs("q", ["a", "b"], [0, 1])


def test_a_bool_is_not_a_rank():
    with pytest.raises(ValueError, match="bool"):
        ranking_to_pairs("p", ["a", "b"], [True, 2])
