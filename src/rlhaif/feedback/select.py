"""Choose which comparisons people label (active selection), within a budget.

The pool is every pair of a prompt's distinct responses. A selector sees only the prompt and the two texts —
never a label: for a pool with known labels (the hh-rlhf experiment, benchmarks/active_labels.py) the label is
revealed only once the pair is bought. With the margin m = s(first) − s(second) of a scorer s (a reward
model, rlhaif.scorers syntax) and, for an ensemble, the members' margins m_1..m_M:

    random        a seeded shuffle of the pool
    uncertainty   smallest |m̄| first, m̄ the mean margin over the scorers given (Settles 2009, margin sampling)
    disagreement  largest std_k(m_k) first, the population standard deviation of the members' margins
                  (query by committee; the committee is a reward-model ensemble, ≥ 2 members)

Ties in the score are broken by a seeded random key, so a selection is reproducible from its seed.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from itertools import combinations
from typing import Any, Sequence

from rlhaif.errors import RlhaifError
from rlhaif.scorers import Scorer

RULES = ("random", "uncertainty", "disagreement")


@dataclass(frozen=True)
class Candidate:
    """One comparison that could be bought: a prompt and two of its responses (indices into its K)."""

    prompt_id: str
    prompt: Any
    first: int
    second: int
    first_text: str
    second_text: str


@dataclass(frozen=True)
class Selected:
    candidate: Candidate
    rule: str
    score: float | None
    rank: int

    def record(self) -> dict[str, Any]:
        """What the campaign stores about why the pair was asked."""
        return {"rule": self.rule, "score": None if self.score is None else round(self.score, 6), "rank": self.rank}


def candidate_pairs(records: Sequence[Any], exclude: set[tuple[str, str, str]] = frozenset()) -> list[Candidate]:
    """Every pair of each prompt's distinct, non-empty responses (CompletionRecord-like: prompt_id, prompt,
    index, response), in file order; ``exclude`` holds (prompt_id, text, text) pairs already asked (either
    order)."""
    by_prompt: dict[str, list[Any]] = {}
    for r in records:
        by_prompt.setdefault(r.prompt_id, []).append(r)
    out = []
    for pid, recs in by_prompt.items():
        for a, b in combinations(sorted(recs, key=lambda r: r.index), 2):
            if not a.response.strip() or not b.response.strip() or a.response == b.response:
                continue
            if (pid, a.response, b.response) in exclude or (pid, b.response, a.response) in exclude:
                continue
            out.append(Candidate(pid, a.prompt, a.index, b.index, a.response, b.response))
    return out


def margins(candidates: Sequence[Candidate], scorers: dict[str, Scorer], batch_size: int = 64) -> list[list[float]]:
    """Per candidate, each scorer's margin s(first) − s(second). A scorer that fails or returns a wrong or
    non-finite score stops with a message naming it and the pair."""
    out: list[list[float]] = [[] for _ in candidates]
    for name, score in scorers.items():
        for start in range(0, len(candidates), batch_size):
            chunk = candidates[start:start + batch_size]
            prompts = [c.prompt for c in chunk] * 2
            texts = [c.first_text for c in chunk] + [c.second_text for c in chunk]
            try:
                s = list(score(prompts, texts))
            except Exception as e:  # a user's scorer: report which one and where, whatever it raised
                raise RlhaifError(f"scorer {name!r} failed on the pairs of prompt {chunk[0].prompt_id!r} and after: "
                                  f"{type(e).__name__}: {e}") from None
            if len(s) != len(texts):
                raise RlhaifError(f"scorer {name!r} returned {len(s)} scores for {len(texts)} responses")
            for k, c in enumerate(chunk):
                m = float(s[k]) - float(s[k + len(chunk)])
                if not math.isfinite(m):
                    raise RlhaifError(f"scorer {name!r} gave a non-finite score on prompt {c.prompt_id!r} "
                                      f"(responses {c.first} and {c.second})")
                out[start + k].append(m)
    return out


def rule_scores(rule: str, member_margins: Sequence[Sequence[float]]) -> list[float | None]:
    """The score each rule ranks by: |mean margin| (uncertainty), std of the margins (disagreement), none
    (random)."""
    if rule == "random":
        return [None] * len(member_margins)
    if rule == "uncertainty":
        return [abs(sum(m) / len(m)) for m in member_margins]
    if rule == "disagreement":
        return [math.sqrt(sum((x - sum(m) / len(m)) ** 2 for x in m) / len(m)) for m in member_margins]
    raise RlhaifError(f"unknown selection rule {rule!r}: choose one of {', '.join(RULES)}")


def check_selection(rule: str, budget: int | None, n_scorers: int) -> None:
    if rule not in RULES:
        raise RlhaifError(f"unknown selection rule {rule!r}: choose one of {', '.join(RULES)}")
    if budget is None or budget < 1:
        raise RlhaifError(f"--select {rule} needs --budget N (the number of comparisons to buy, ≥ 1)")
    if rule == "uncertainty" and n_scorers < 1:
        raise RlhaifError("--select uncertainty needs --scorer (a reward model: its margin ranks the pairs)")
    if rule == "disagreement" and n_scorers < 2:
        raise RlhaifError("--select disagreement needs an ensemble: give --scorer at least twice (reward models "
                          "of different seeds, e.g. from `rlhaif reward train --ensemble`)")
    if rule == "random" and n_scorers:
        raise RlhaifError("--select random uses no scorer; drop --scorer or choose uncertainty / disagreement")


def committee(rule: str, specs: Sequence[str]) -> list[str]:
    """The scorer specs a rule scores with: for ``disagreement`` a reward-model ensemble folder (``rlhaif reward
    train --ensemble N``, or ``ensemble:PATH``) counts as its members, whose margins spread; otherwise each spec
    is one scorer (an ensemble scores as its rule combines it). Nothing is loaded."""
    from rlhaif.scorers import ensemble_members, parse_scorer

    if rule != "disagreement":
        return list(specs)
    out = []
    for spec in specs:
        parsed = parse_scorer(spec)
        out += ensemble_members(parsed) if parsed.kind == "ensemble" else [spec]
    return out


def select(rule: str, candidates: Sequence[Candidate], budget: int, scorers: dict[str, Scorer] | None = None,
           seed: int = 0) -> list[Selected]:
    """The ``budget`` candidates a rule asks first, in order. Nothing is written here: a failing scorer or a
    budget larger than the pool stops before any campaign changes."""
    scorers = scorers or {}
    check_selection(rule, budget, len(scorers))
    if budget > len(candidates):
        raise RlhaifError(f"budget {budget} is larger than the pool: {len(candidates)} comparisons not yet asked")
    scores = rule_scores(rule, margins(candidates, scorers) if scorers else [[]] * len(candidates))
    tiebreak = list(range(len(candidates)))
    random.Random(seed).shuffle(tiebreak)
    sign = -1.0 if rule == "disagreement" else 1.0  # disagreement: largest spread first

    def key(i: int) -> tuple[float, int]:
        return (0.0 if scores[i] is None else sign * scores[i], tiebreak[i])

    order = sorted(range(len(candidates)), key=key)[:budget]
    return [Selected(candidates[i], rule, scores[i], rank) for rank, i in enumerate(order, start=1)]


class LabeledPool:
    """Comparisons people have already labelled (hh-rlhf pairs), offered to a selector as unlabelled candidates:
    each pair's two responses in a seeded random order (so 'first' says nothing about 'chosen'), its label kept
    here and revealed only by ``buy``. Simulates buying labels without people (benchmarks/active_labels.py)."""

    def __init__(self, pairs: Sequence[Any], seed: int = 0):
        rng = random.Random(seed)
        self.candidates: list[Candidate] = []
        self._p_first: dict[str, float] = {}  # P(first preferred), by the candidate's id
        for i, p in enumerate(pairs):
            flip = rng.random() < 0.5
            first, second = (p.rejected, p.chosen) if flip else (p.chosen, p.rejected)
            cand = Candidate(f"{i}:{p.id or ''}", p.prompt, 0, 1, first, second)
            self.candidates.append(cand)
            self._p_first[cand.prompt_id] = 1.0 - p.p if flip else p.p
        self.bought: list[str] = []

    def restore(self, ids: Sequence[str]) -> None:
        """Mark comparisons bought before (their candidate ids: an earlier round's), so they are not offered
        again."""
        known = {c.prompt_id for c in self.candidates}
        for i in ids:
            if i not in known:
                raise RlhaifError(f"comparison {i!r} was bought before but is not in this pool (a different pool "
                                  "file or range of lines?)")
            if i in self.bought:
                raise RlhaifError(f"comparison {i} was bought already")
            self.bought.append(i)

    def unasked(self) -> list[Candidate]:
        done = set(self.bought)
        return [c for c in self.candidates if c.prompt_id not in done]

    def buy(self, chosen: Sequence[Selected]) -> list[Any]:
        """Reveal the labels of the chosen comparisons as PairRecords (chosen = the people's pick)."""
        from rlhaif.data.records import PairRecord

        out = []
        for s in chosen:
            c = s.candidate
            if c.prompt_id in self.bought:
                raise RlhaifError(f"comparison {c.prompt_id} was bought already")
            self.bought.append(c.prompt_id)
            p = self._p_first[c.prompt_id]
            better, worse = (c.first_text, c.second_text) if p >= 0.5 else (c.second_text, c.first_text)
            out.append(PairRecord(prompt=c.prompt, chosen=better, rejected=worse, p=max(p, 1.0 - p),
                                  source="pool", selection=s.record(), pool_id=c.prompt_id))
        return out
