"""What labels cost and what they bought: per campaign and per annotator, the judgments, the median seconds
per judgment, the share that became usable pairs, and — at a rate the user gives — the cost per usable pair.

A judgment is usable when its annotator is not flagged as unreliable, it does not fail a gold check (on a
gold item it disagrees with the known answer), and it states a preference: a pairwise win (not a tie or
"both bad"), a ranking or an aspect answer with at least one strict order; ratings and thumbs are usable
when the other two conditions hold (they become pairs across a prompt's responses at export).

    cost          with cost_per_hour: rate × Σ seconds / 3600 (a judgment without a recorded duration counts
                  the median); with cost_per_judgment: rate × judgments
    cost/usable   cost / usable judgments
"""

from __future__ import annotations

import statistics
from typing import Any, Collection, Iterable, Sequence

from rlhaif.feedback import aggregate as agg

STRICT = ("pairwise", "ranking", "aspects")


def is_usable(judgment: dict[str, Any], flagged: Collection[str], gold: dict[tuple, float]) -> bool:
    if judgment["annotator"] in flagged:
        return False
    decided = agg.decisions(judgment)
    if any(unit in gold and gold[unit] != y for unit, y in decided.items()):
        return False  # a failed gold check
    return judgment["kind"] not in STRICT or any(y != 0.5 for y in decided.values())


def cost_row(judgments: Sequence[dict[str, Any]], usable: int, cost_per_hour: float | None = None,
             cost_per_judgment: float | None = None) -> dict[str, Any]:
    seconds = [j["duration_ms"] / 1000.0 for j in judgments if j.get("duration_ms") is not None]
    median = statistics.median(seconds) if seconds else None
    n = len(judgments)
    row: dict[str, Any] = {"judgments": n, "median_seconds": None if median is None else round(median, 2),
                           "usable": usable, "usable_share": round(usable / n, 4) if n else None}
    cost = None
    if cost_per_judgment is not None:
        cost = cost_per_judgment * n
    elif cost_per_hour is not None and median is not None:
        cost = cost_per_hour * (sum(seconds) + median * (n - len(seconds))) / 3600.0
    if cost is not None:
        row["cost"] = round(cost, 4)
        row["cost_per_usable_pair"] = round(cost / usable, 4) if usable else None
    return row


def label_costs(judgments: Sequence[dict[str, Any]], flagged: Iterable[str], gold: dict[tuple, float],
                cost_per_hour: float | None = None, cost_per_judgment: float | None = None) -> dict[str, Any]:
    """{"all": row, "annotators": {name: row}} over one campaign's latest judgments."""
    flagged = set(flagged)
    ok = [is_usable(j, flagged, gold) for j in judgments]
    by_ann: dict[str, list[int]] = {}
    for i, j in enumerate(judgments):
        by_ann.setdefault(j["annotator"], []).append(i)
    return {"all": cost_row(judgments, sum(ok), cost_per_hour, cost_per_judgment),
            "annotators": {a: cost_row([judgments[i] for i in idx], sum(ok[i] for i in idx), cost_per_hour,
                                       cost_per_judgment) for a, idx in sorted(by_ann.items())}}
