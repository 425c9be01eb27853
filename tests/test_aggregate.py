"""Aggregation: Elo, Bradley–Terry, Krippendorff's alpha, agreement, reliability — pinned by hand."""

import math

import pytest

from rlhaif.feedback import aggregate as agg


def test_elo_two_votes_by_hand():
    # vote 1: A beats B, both at 1000 -> E_A = 0.5, A = 1000 + 4·0.5 = 1002, B = 998
    # vote 2: B beats A: E_B = 1/(1 + 10^((1002-998)/400)), B += 4·(1 - E_B), A -= the same
    e_b = 1.0 / (1.0 + 10 ** (4.0 / 400.0))
    r = agg.elo([("A", "B", 1.0), ("B", "A", 1.0)])
    assert r["B"] == pytest.approx(998 + 4 * (1 - e_b), abs=1e-9)
    assert r["A"] == pytest.approx(1002 - 4 * (1 - e_b), abs=1e-9)
    assert r["A"] + r["B"] == pytest.approx(2000.0)


def test_elo_tie_moves_nothing_at_equal_ratings_and_k_scales():
    assert agg.elo([("A", "B", 0.5)]) == {"A": 1000.0, "B": 1000.0}
    assert agg.elo([("A", "B", 1.0)], k=32)["A"] == pytest.approx(1016.0)


def test_elo_averaged_is_order_free_on_symmetric_votes():
    votes = [("A", "B", 1.0), ("B", "A", 1.0)] * 5
    r = agg.elo_averaged(votes, rounds=50, seed=1)
    assert r["A"] == pytest.approx(1000.0, abs=1.0) and r["B"] == pytest.approx(1000.0, abs=1.0)


def test_bradley_terry_three_to_one_by_hand():
    # MLE: P(A beats B) = 3/4 = 1/(1 + 10^(-(R_A - R_B)/400)) -> R_A - R_B = 400·log10(3) ≈ 190.85; centred at 1000
    r = agg.bradley_terry([("A", "B", 1)] * 3 + [("B", "A", 1)], l2=1e-8)
    d = 400 * math.log10(3)
    assert r["A"] == pytest.approx(1000 + d / 2, abs=0.05)
    assert r["B"] == pytest.approx(1000 - d / 2, abs=0.05)


def test_bradley_terry_cycle_and_ties_and_weights():
    r = agg.bradley_terry([("A", "B", 1), ("B", "C", 1), ("C", "A", 1)], l2=1e-8)
    assert all(v == pytest.approx(1000.0, abs=1e-3) for v in r.values())
    # a tie counts as half a win each way: one win + one tie -> P = 3/4 again
    r = agg.bradley_terry([("A", "B", 1), ("A", "B", 0.5)], l2=1e-8)
    assert r["A"] - r["B"] == pytest.approx(400 * math.log10(3), abs=0.1)
    # weight 3 on one vote = three votes
    r = agg.bradley_terry([("A", "B", 1, 3.0), ("B", "A", 1)], l2=1e-8)
    assert r["A"] - r["B"] == pytest.approx(400 * math.log10(3), abs=0.1)


def test_bradley_terry_undefeated_stays_finite_and_bootstrap_ranks():
    votes = [("A", "B", 1)] * 20 + [("B", "C", 1)] * 15 + [("C", "B", 1)] * 5
    r = agg.bradley_terry(votes)
    assert all(math.isfinite(v) for v in r.values()) and r["A"] > r["B"] > r["C"]
    ci = agg.bootstrap_bt(votes, rounds=30, seed=0)
    for k, v in ci.items():
        assert v["lower"] <= v["rating"] <= v["upper"]
    assert ci["A"]["rank"] == 1 and ci["C"]["rank"] >= 2
    assert agg.bootstrap_bt(votes, rounds=30, seed=0) == ci  # fixed seed, same intervals


def test_krippendorff_published_example():
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability": 4 observers, 12 units, missing values.
    # Coincidence matrix by hand (units 1-11 pairable, n = 40): diagonal o_11=7, o_22=10, o_33=8, o_44=4, o_55=3
    # n_1=9, n_2=13, n_3=10, n_4=5, n_5=3; nominal α = 1 - (n-1)·(n - Σo_cc) / (n² - Σn_c²)
    #   = 1 - 39·(40-32) / (1600 - (81+169+100+25+9)) = 1 - 312/1216 = 0.7434; published 0.743 (interval 0.849).
    N = None
    data = [[1, 2, 3, 3, 2, 1, 4, 1, 2, N, N, N],
            [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, N, 3],
            [N, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, N],
            [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, N]]
    assert agg.krippendorff_alpha(data, "nominal") == pytest.approx(1 - 312 / 1216, abs=1e-9)
    assert round(agg.krippendorff_alpha(data, "nominal"), 3) == 0.743
    assert round(agg.krippendorff_alpha(data, "interval"), 3) == 0.849


def test_krippendorff_perfect_and_chance():
    assert agg.krippendorff_alpha([[1, 2, 1, 2], [1, 2, 1, 2]]) == pytest.approx(1.0)
    # two coders who always disagree on 2 categories: o_12 = o_21 = 4, n = 8, D_o = 1, D_e = 2·4·4/(8·7) = 4/7
    assert agg.krippendorff_alpha([[1, 2, 1, 2], [2, 1, 2, 1]]) == pytest.approx(1 - 7 / 4)


def _pw(ann, task, winner, ids=(1, 2)):
    return {"annotator": ann, "task": task, "kind": "pairwise", "responses": list(ids),
            "value": {"choice": "win", "winner": winner, "strength": None}}


def test_agreement_and_reliability_flag_the_contrarian():
    js = []
    for t in range(6):
        js += [_pw("w", t, 1), _pw("x", t, 1), _pw("y", t, 1), _pw("z", t, 2)]
    # per task: 6 annotator pairs, the 3 among w, x, y agree -> 1/2
    assert agg.pairwise_agreement(js) == pytest.approx(1 / 2)
    rel = agg.annotator_reliability(js)
    assert rel["x"]["agreement"] == 1.0 and rel["y"]["agreement"] == 1.0
    assert rel["z"]["agreement"] == 0.0 and rel["z"]["flagged"] and rel["z"]["weight"] == 0.0
    gold = {(t, 1, 2): 1.0 for t in range(6)}
    rel = agg.annotator_reliability(js, gold)
    assert rel["x"]["gold_accuracy"] == 1.0 and rel["z"]["gold_accuracy"] == 0.0


def test_decisions_of_ranking_with_ties_and_fail():
    jd = {"annotator": "x", "task": 7, "kind": "ranking", "responses": [10, 11, 12, 13],
          "value": {"ranks": {"10": 2, "11": 1, "12": 2, "13": "F"}}}
    d = agg.decisions(jd)
    assert d == {(7, 10, 11): 0.0, (7, 10, 12): 0.5, (7, 10, 13): 1.0, (7, 11, 12): 1.0, (7, 11, 13): 1.0,
                 (7, 12, 13): 1.0}
    assert agg.consensus({"a": 1.0, "b": 0.0}) == 0.5 and agg.consensus({"a": 1.0, "b": 1.0, "c": 0.0}) == 1.0
