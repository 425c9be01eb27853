"""Votes -> ratings, agreement and pairs. Pure numpy/scipy: no torch, no database.

A *comparison* is ``(a, b, y)`` or ``(a, b, y, weight)``: items ``a`` and ``b`` (any hashable: a response id,
a model name) and the outcome ``y`` = 1 when ``a`` won, 0 when ``b`` won, 0.5 for a tie or "both bad".

- ``elo``/``elo_averaged``: online Elo as Chatbot Arena computes it (K=4, base 10, scale 400, start 1000),
  averaged over shuffled orders because online Elo depends on the order of the votes.
- ``bradley_terry``: maximum likelihood (Newton) of P(a beats b) = 1 / (1 + 10^((R_b - R_a)/400)) over the weighted
  unique outcomes, with a small L2 prior so an undefeated item or a disconnected graph stays finite;
  ``bootstrap_bt`` resamples the outcome counts multinomially (Chatbot Arena) for 95 % intervals.
- ``krippendorff_alpha``: nominal or interval alpha from the coincidence matrix (missing values allowed).
- ``decisions``/``consensus``/``pairwise_agreement``/``annotator_reliability``: every judgment reduced to
  pairwise decisions on units (task, response i, response j), compared across annotators.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from itertools import combinations
from typing import Any, Hashable, Iterable, Sequence

import numpy as np

Comparison = tuple  # (a, b, y) or (a, b, y, weight)

ELO_K, ELO_BASE, ELO_SCALE, ELO_INIT = 4.0, 10.0, 400.0, 1000.0


def _unpack(c: Comparison) -> tuple[Hashable, Hashable, float, float]:
    a, b, y = c[0], c[1], float(c[2])
    w = float(c[3]) if len(c) > 3 else 1.0
    if y not in (0.0, 0.5, 1.0):
        raise ValueError(f"outcome must be 1 (a won), 0 (b won) or 0.5 (tie), got {y}")
    return a, b, y, w


# ---------------------------------------------------------------- Elo


def elo(comparisons: Iterable[Comparison], k: float = ELO_K, base: float = ELO_BASE, scale: float = ELO_SCALE,
        init: float = ELO_INIT) -> dict[Hashable, float]:
    """Online Elo in the given order: E_a = 1/(1 + base^((R_b - R_a)/scale)); R_a += k·(y - E_a), R_b -= k·(y - E_a)."""
    ratings: dict[Hashable, float] = defaultdict(lambda: init)
    for c in comparisons:
        a, b, y, w = _unpack(c)
        ea = 1.0 / (1.0 + base ** ((ratings[b] - ratings[a]) / scale))
        ratings[a] += k * w * (y - ea)
        ratings[b] -= k * w * (y - ea)
    return dict(ratings)


def elo_averaged(comparisons: Sequence[Comparison], rounds: int = 100, seed: int = 0, **kw) -> dict[Hashable, float]:
    """Mean online Elo over ``rounds`` random orders of the same votes (order-independent estimate)."""
    rng = np.random.default_rng(seed)
    comparisons = list(comparisons)
    total: dict[Hashable, float] = defaultdict(float)
    for _ in range(rounds):
        order = rng.permutation(len(comparisons))
        for item, r in elo([comparisons[i] for i in order], **kw).items():
            total[item] += r / rounds
    return dict(total)


# ---------------------------------------------------------------- Bradley–Terry


def _unique_outcomes(comparisons: Iterable[Comparison]) -> tuple[list[Hashable], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Items, and the unique (a, b, y) rows with their summed weights (FastChat's weighted unique outcomes)."""
    counts: Counter = Counter()
    items: dict[Hashable, int] = {}
    for c in comparisons:
        a, b, y, w = _unpack(c)
        for x in (a, b):
            items.setdefault(x, len(items))
        counts[(items[a], items[b], y)] += w
    keys = list(counts)
    ia = np.array([k[0] for k in keys], dtype=np.int64)
    ib = np.array([k[1] for k in keys], dtype=np.int64)
    ys = np.array([k[2] for k in keys], dtype=np.float64)
    ws = np.array([counts[k] for k in keys], dtype=np.float64)
    return list(items), ia, ib, ys, ws


def _fit_bt(n_items: int, ia: np.ndarray, ib: np.ndarray, ys: np.ndarray, ws: np.ndarray, l2: float) -> np.ndarray:
    """Minimise Σ w·BCE(σ(ln10·(r_a - r_b)), y) / Σw + l2·Σ r²; r in base-10 units (rating = 400·r + 1000).

    Newton's method with backtracking: the objective is strictly convex (the L2 term), so a few exact
    steps converge where L-BFGS crawls on the flat direction of an undefeated item."""
    alpha = math.log(ELO_BASE)
    total = max(ws.sum(), 1e-12)

    def loss(r: np.ndarray) -> float:
        z = alpha * (r[ia] - r[ib])
        return float((ws * (ys * np.logaddexp(0.0, -z) + (1 - ys) * np.logaddexp(0.0, z))).sum() / total
                     + l2 * (r ** 2).sum())

    r = np.zeros(n_items)
    f = loss(r)
    for _ in range(100):
        z = alpha * (r[ia] - r[ib])
        p = 1.0 / (1.0 + np.exp(-z))
        g_z = ws * (p - ys) / total * alpha
        grad = 2 * l2 * r
        np.add.at(grad, ia, g_z)
        np.add.at(grad, ib, -g_z)
        h_z = ws * p * (1 - p) / total * alpha ** 2
        hess = 2 * l2 * np.eye(n_items)
        np.add.at(hess, (ia, ia), h_z)
        np.add.at(hess, (ib, ib), h_z)
        np.add.at(hess, (ia, ib), -h_z)
        np.add.at(hess, (ib, ia), -h_z)
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while t > 1e-8:
            f_new = loss(r - t * step)
            if f_new <= f - 1e-4 * t * float(grad @ step):
                break
            t *= 0.5
        r, f = r - t * step, f_new
        if float(np.abs(grad).max()) < 1e-12 or t * float(np.abs(step).max()) < 1e-10:
            break
    return r


def bradley_terry(comparisons: Iterable[Comparison], l2: float = 1e-4) -> dict[Hashable, float]:
    """Bradley–Terry ratings on the Elo scale (400·r + 1000): the maximum-likelihood fit (Newton) with an L2 prior ``l2``."""
    items, ia, ib, ys, ws = _unique_outcomes(comparisons)
    if not items:
        return {}
    r = _fit_bt(len(items), ia, ib, ys, ws, l2)
    return {it: float(ELO_SCALE * r[i] + ELO_INIT) for i, it in enumerate(items)}


def bootstrap_bt(comparisons: Iterable[Comparison], rounds: int = 100, seed: int = 0,
                 l2: float = 1e-4) -> dict[Hashable, dict[str, float]]:
    """BT rating with a 95 % bootstrap interval and a rank per item.

    Resampling: the unique outcome counts are redrawn multinomially (n = total votes), refitted each round;
    the interval is the 2.5 / 97.5 % quantiles. Rank = 1 + number of items whose lower bound exceeds this
    item's upper bound (Chatbot Arena)."""
    items, ia, ib, ys, ws = _unique_outcomes(comparisons)
    if not items:
        return {}
    rating = ELO_SCALE * _fit_bt(len(items), ia, ib, ys, ws, l2) + ELO_INIT
    rng = np.random.default_rng(seed)
    n = int(round(ws.sum()))
    samples = np.empty((rounds, len(items)))
    for t in range(rounds):
        w_t = rng.multinomial(max(n, 1), ws / ws.sum()).astype(np.float64)
        samples[t] = ELO_SCALE * _fit_bt(len(items), ia, ib, ys, w_t, l2) + ELO_INIT
    lo, hi = np.quantile(samples, 0.025, axis=0), np.quantile(samples, 0.975, axis=0)
    out = {}
    for i, it in enumerate(items):
        out[it] = {"rating": float(rating[i]), "lower": float(lo[i]), "upper": float(hi[i]),
                   "rank": 1 + int((lo > hi[i]).sum())}
    return out


# ---------------------------------------------------------------- judgments -> pairwise decisions

# A judgment is a dict: {"annotator", "task", "kind", "value", "responses": [ids]} where ``value`` is the
# canonical stored value (see feedback/human/schemas.py):
#   pairwise: {"choice": "win"|"tie"|"both_bad", "winner": id, "strength": int|None}
#   ranking:  {"ranks": {id: int | "F"}}
#   rating:   {"rating": 1..10};  thumbs: {"thumb": "up"|"down"}
#   aspects:  {"helpful": id|"tie", "honest": ..., "harmless": ...}  (pairwise per aspect)


def decisions(judgment: dict[str, Any]) -> dict[tuple, float]:
    """Pairwise decisions of one judgment: {(task, i, j[, aspect]): y} with i < j, y = 1 if i preferred.

    Ratings and thumbs of a single response give no within-task decision (they are compared across
    responses of one prompt in ``judgments_to_pairs``)."""
    kind, v, task = judgment["kind"], judgment["value"], judgment["task"]
    out: dict[tuple, float] = {}
    if kind == "pairwise":
        i, j = sorted(judgment["responses"])
        if v["choice"] in ("tie", "both_bad"):
            out[(task, i, j)] = 0.5
        else:
            out[(task, i, j)] = 1.0 if v["winner"] == i else 0.0
    elif kind == "ranking":
        ranks = {str(k): r for k, r in v["ranks"].items()}
        for i, j in combinations(sorted(judgment["responses"]), 2):
            ri, rj = ranks[str(i)], ranks[str(j)]
            fi, fj = ri == "F", rj == "F"
            if fi and fj:
                continue
            if fi or fj:
                out[(task, i, j)] = 0.0 if fi else 1.0
            else:
                out[(task, i, j)] = 0.5 if ri == rj else (1.0 if ri < rj else 0.0)
    elif kind == "aspects":
        i, j = sorted(judgment["responses"])
        for aspect, w in v.items():
            out[(task, i, j, aspect)] = 0.5 if w == "tie" else (1.0 if w == i else 0.0)
    return out


def votes_by_unit(judgments: Iterable[dict[str, Any]]) -> dict[tuple, dict[str, float]]:
    """{unit: {annotator: y}} over every judgment's pairwise decisions."""
    units: dict[tuple, dict[str, float]] = defaultdict(dict)
    for jd in judgments:
        for unit, y in decisions(jd).items():
            units[unit][jd["annotator"]] = y
    return units


def consensus(votes: dict[str, float], weights: dict[str, float] | None = None) -> float:
    """Consensus of one unit: the (weighted) mean vote rounded to 1, 0 or 0.5 (a split vote is a tie)."""
    w = weights or {}
    tot = sum(w.get(a, 1.0) for a in votes)
    if tot <= 0:
        return 0.5
    m = sum(w.get(a, 1.0) * y for a, y in votes.items()) / tot
    return 1.0 if m > 0.5 + 1e-9 else (0.0 if m < 0.5 - 1e-9 else 0.5)


def pairwise_agreement(judgments: Iterable[dict[str, Any]]) -> float:
    """Share of annotator pairs that gave the same decision on the same unit (units with ≥ 2 votes)."""
    agree = total = 0
    for votes in votes_by_unit(judgments).values():
        for a, b in combinations(sorted(votes), 2):
            total += 1
            agree += votes[a] == votes[b]
    return agree / total if total else float("nan")


def krippendorff_alpha(data: Sequence[Sequence[Any]], level: str = "nominal") -> float:
    """Krippendorff's alpha for a coders × units table (``None`` = missing), nominal or interval.

    α = 1 - D_o / D_e from the coincidence matrix: each unit with m_u ≥ 2 values adds 1/(m_u - 1) for every
    ordered pair of its values; D_o = Σ o_ck δ²_ck / n, D_e = Σ n_c n_k δ²_ck / (n (n - 1))."""
    if level not in ("nominal", "interval"):
        raise ValueError("level must be 'nominal' or 'interval'")
    n_units = max(len(row) for row in data)
    o: dict[tuple, float] = defaultdict(float)
    for u in range(n_units):
        vals = [row[u] for row in data if u < len(row) and row[u] is not None]
        m = len(vals)
        if m < 2:
            continue
        for x, y in ((vals[p], vals[q]) for p in range(m) for q in range(m) if p != q):
            o[(x, y)] += 1.0 / (m - 1)
    n_c: dict[Any, float] = defaultdict(float)
    for (x, _), c in o.items():
        n_c[x] += c
    n = sum(n_c.values())
    if n <= 1:
        return float("nan")

    def d2(x: Any, y: Any) -> float:
        return float(x != y) if level == "nominal" else (float(x) - float(y)) ** 2

    d_o = sum(c * d2(x, y) for (x, y), c in o.items()) / n
    d_e = sum(n_c[x] * n_c[y] * d2(x, y) for x in n_c for y in n_c) / (n * (n - 1))
    return 1.0 - d_o / d_e if d_e > 0 else 1.0


def alpha_of_judgments(judgments: Iterable[dict[str, Any]]) -> float:
    """Nominal Krippendorff's α over the pairwise decisions (categories 0, 0.5, 1)."""
    units = votes_by_unit(judgments)
    annotators = sorted({a for v in units.values() for a in v})
    keys = list(units)
    table = [[units[u].get(a) for u in keys] for a in annotators]
    return krippendorff_alpha(table, "nominal") if table else float("nan")


def annotator_reliability(judgments: Sequence[dict[str, Any]], gold: dict[tuple, float] | None = None,
                          min_agreement: float = 0.5, min_gold: float = 0.6) -> dict[str, dict[str, Any]]:
    """Per annotator: agreement with the leave-one-out consensus of the others, accuracy on gold units,
    a weight in [0, 1] for export and a ``flagged`` bit when either falls below its threshold."""
    units = votes_by_unit(judgments)
    stats: dict[str, dict[str, float]] = defaultdict(lambda: {"agree": 0, "n": 0, "gold_ok": 0, "gold_n": 0})
    for unit, votes in units.items():
        for a, y in votes.items():
            others = {b: v for b, v in votes.items() if b != a}
            if others:
                c = consensus(others)
                if c != 0.5:  # a split among the others says nothing about a
                    stats[a]["n"] += 1
                    stats[a]["agree"] += (y == c)
            if gold and unit in gold:
                stats[a]["gold_n"] += 1
                stats[a]["gold_ok"] += (y == gold[unit])
    out = {}
    for a in sorted({a for v in units.values() for a in v}):
        s = stats[a]
        agree = s["agree"] / s["n"] if s["n"] else float("nan")
        gold_acc = s["gold_ok"] / s["gold_n"] if s["gold_n"] else float("nan")
        flagged = (s["n"] > 0 and agree < min_agreement) or (s["gold_n"] > 0 and gold_acc < min_gold)
        weight = 0.0 if flagged else (agree if s["n"] else 1.0)
        out[a] = {"agreement": agree, "units": s["n"], "gold_accuracy": gold_acc, "gold_units": s["gold_n"],
                  "flagged": bool(flagged), "weight": float(weight)}
    return out


def comparisons_of(judgments: Iterable[dict[str, Any]], key: dict[Any, Hashable] | None = None,
                   exclude: Iterable[str] = ()) -> list[Comparison]:
    """Every pairwise decision as a comparison between responses (or, with ``key`` mapping response id ->
    model name, between models; same-model pairs are skipped). Aspect decisions are left out."""
    skip = set(exclude)
    out: list[Comparison] = []
    for jd in judgments:
        if jd["annotator"] in skip:
            continue
        for unit, y in decisions(jd).items():
            if len(unit) != 3:
                continue
            a, b = unit[1], unit[2]
            if key is not None:
                a, b = key[a], key[b]
                if a == b:
                    continue
            out.append((a, b, y))
    return out


def rating_decisions(judgments: Iterable[dict[str, Any]], prompt_of: dict[Any, Any]) -> list[tuple]:
    """Ratings and thumbs -> (annotator, prompt, better id, worse id, p): two responses of one prompt judged
    by the same annotator; equal scores give p = 0.5."""
    scores: dict[tuple, dict[Any, float]] = defaultdict(dict)
    for jd in judgments:
        if jd["kind"] not in ("rating", "thumbs"):
            continue
        rid = jd["responses"][0]
        v = jd["value"]
        s = float(v["rating"]) if jd["kind"] == "rating" else (1.0 if v["thumb"] == "up" else 0.0)
        scores[(jd["annotator"], prompt_of[rid])][rid] = s
    out = []
    for (ann, prompt), by_resp in scores.items():
        for i, j in combinations(sorted(by_resp), 2):
            si, sj = by_resp[i], by_resp[j]
            out.append((ann, prompt, i, j, 0.5) if si == sj else
                       ((ann, prompt, i, j, 1.0) if si > sj else (ann, prompt, j, i, 1.0)))
    return out


# ---------------------------------------------------------------- judgments -> unpaired labels (KTO)

RATING_THRESHOLD = 6
"""Default rating threshold for unpaired labels: 6..10 desirable, 1..5 undesirable (the upper half of 1..10)."""


def unpaired_labels(judgment: dict[str, Any], rating_threshold: int = RATING_THRESHOLD) -> list[tuple[Any, bool]]:
    """The absolute verdicts of one judgment, [(response id, desirable)]: a thumb up / down; a rating at or
    above ``rating_threshold`` / below it; both responses of a "both bad" pairwise judgment, and every
    response ranked "F" (fail), as undesirable. A win, a tie or a rank says only which response is better,
    not whether it is good, and gives none."""
    kind, v = judgment["kind"], judgment["value"]
    if kind == "thumbs":
        return [(judgment["responses"][0], v["thumb"] == "up")]
    if kind == "rating":
        return [(judgment["responses"][0], v["rating"] >= rating_threshold)]
    if kind == "pairwise" and v["choice"] == "both_bad":
        return [(rid, False) for rid in judgment["responses"]]
    if kind == "ranking":
        return [(rid, False) for rid in judgment["responses"] if v["ranks"][str(rid)] == "F"]
    return []
