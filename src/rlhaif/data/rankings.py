"""Rankings of K responses -> preference pairs (InstructGPT): C(K,2) pairs, preferred first.

A ranking is a list of ranks, one per response (1 = best; equal ranks are ties; ``None`` or "F" = fail:
nonsensical or off-topic). Fails lose to every ranked response; two fails make no pair, nor do two identical
responses or an empty one.
Weights: ``"per_ranking"`` gives each pair 1/(pairs the ranking yields), which is 1/C(K,2) for a ranking
without fails or dropped ties (InstructGPT: one ranking counts once),
``"uniform"`` gives 1.
"""

from __future__ import annotations

from itertools import combinations
from typing import Literal, Sequence

from rlhaif.data.records import PairRecord, Prompt

Rank = int | None | str


def _is_fail(r: Rank) -> bool:
    return r is None or (isinstance(r, str) and r.upper() == "F")


def ranking_to_pairs(prompt: Prompt, responses: Sequence[str], ranks: Sequence[Rank], source: str = "",
                     ties: Literal["half", "drop"] = "half",
                     weighting: Literal["per_ranking", "uniform"] = "per_ranking") -> list[PairRecord]:
    """All pairs of one ranking. A tie gives p=0.5 (``ties="half"``) or no pair (``"drop"``)."""
    if len(responses) != len(ranks):
        raise ValueError(f"{len(responses)} responses but {len(ranks)} ranks")
    for r in ranks:
        if isinstance(r, bool):  # bool is an int subclass: True would silently be rank 1
            raise ValueError(f"a rank must be an integer >= 1 or 'F' (fail), got the bool {r!r}")
        if not _is_fail(r) and (not isinstance(r, int) or r < 1):
            raise ValueError(f"a rank must be an integer >= 1 or 'F' (fail), got {r!r}")
    pairs: list[tuple[int, int, float]] = []  # (chosen index, rejected index, p)
    for i, j in combinations(range(len(responses)), 2):
        ri, rj = ranks[i], ranks[j]
        fi, fj = _is_fail(ri), _is_fail(rj)
        if fi and fj:
            continue
        if fi or fj:
            pairs.append((j, i, 1.0) if fi else (i, j, 1.0))
        elif ri == rj:
            if ties == "half":
                pairs.append((i, j, 0.5))
        else:
            pairs.append((i, j, 1.0) if ri < rj else (j, i, 1.0))
    # identical responses teach nothing; an empty one (EOS first) cannot be a pair's side (PairRecord)
    pairs = [(c, r, p) for c, r, p in pairs if responses[c] != responses[r] and responses[c].strip()
             and responses[r].strip()]
    w = 1.0 / len(pairs) if (weighting == "per_ranking" and pairs) else 1.0
    return [PairRecord(prompt=prompt, chosen=responses[c], rejected=responses[r], p=p, weight=w, source=source)
            for c, r, p in pairs]
