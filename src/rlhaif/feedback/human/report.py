"""From stored judgments to the admin numbers and to ``pairs.jsonl`` (no torch: served by the app too).

Export: each annotator's latest judgment becomes pairs with ``source = "human:<annotator>"``; rankings go
through ``rlhaif.data.rankings.ranking_to_pairs`` (weight 1/C(K,2)); a tie gives p = 0.5; "both bad" gives
no pair. Flagged annotators are excluded (``exclude_flagged``) or every pair is weighted by the annotator's
agreement with the others (``weight_by_reliability``). AI labels stored beside the judgments (``rlhaif
feedback ai-label --db``) are exported too, with their soft p and ``source = "ai:<model>:<principle>"``, so
human and AI labels mix in one file (``include_ai=False`` leaves them out).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

from rlhaif.data.io import write_records
from rlhaif.data.rankings import ranking_to_pairs
from rlhaif.data.records import PairRecord
from rlhaif.errors import RlhaifError
from rlhaif.feedback import aggregate as agg
from rlhaif.feedback.human.store import Store


def _gold_units(store: Store, campaign: str | None) -> dict[tuple, float]:
    units: dict[tuple, float] = {}
    for g in store.gold(campaign):
        units.update(agg.decisions(g))
    return units


def _finite(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else round(float(x), 4)


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


def campaign_costs(store: Store, campaign: str | None = None, cost_per_hour: float | None = None,
                   cost_per_judgment: float | None = None) -> dict[str, Any]:
    """{campaign: rlhaif.feedback.costs.label_costs} for one campaign or every one in the store; reliability
    (who is flagged) is computed within each campaign, as export does."""
    from rlhaif.feedback.costs import label_costs

    names = [campaign] if campaign is not None else [c.name for c in store.campaigns()]
    out = {}
    for name in names:
        judgments, gold = store.latest_judgments(name), _gold_units(store, name)
        rel = agg.annotator_reliability(judgments, gold)
        out[name] = label_costs(judgments, [a for a, r in rel.items() if r["flagged"]], gold, cost_per_hour,
                                cost_per_judgment)
    return out


def build_report(store: Store, campaign: str | None = None, bootstrap_rounds: int = 100, top: int = 20,
                 max_bootstrap_items: int = 40, cost_per_hour: float | None = None,
                 cost_per_judgment: float | None = None) -> dict[str, Any]:
    """Progress, agreement (pairwise rate, Krippendorff's α), reliability per annotator, the BT / Elo
    leaderboards of responses and of models with 95 % bootstrap intervals, and what the labels cost."""
    judgments = store.latest_judgments(campaign)
    responses = store.responses(campaign)
    reliability = agg.annotator_reliability(judgments, _gold_units(store, campaign))
    flagged = [a for a, r in reliability.items() if r["flagged"]]
    comps = agg.comparisons_of(judgments, exclude=flagged)
    model_of = {rid: (r["model"] or "?") for rid, r in responses.items()}
    model_comps = agg.comparisons_of(judgments, key=model_of, exclude=flagged)

    def board(comparisons: list, label, rounds: int) -> list[dict[str, Any]]:
        if not comparisons:
            return []
        if rounds > 0:
            bt = agg.bootstrap_bt(comparisons, rounds=rounds)
        else:  # many items: the point estimate only (a bootstrap refits all of them every round)
            bt = {k: {"rating": v, "lower": None, "upper": None, "rank": None}
                  for k, v in agg.bradley_terry(comparisons).items()}
        el = agg.elo_averaged(comparisons, rounds=20)
        rows = [{"item": label(k), "rating": round(v["rating"], 1), "lower": _round(v["lower"]),
                 "upper": _round(v["upper"]), "rank": v["rank"], "elo": round(el[k], 1)} for k, v in bt.items()]
        return sorted(rows, key=lambda r: -r["rating"])

    n_resp = len({x for c in comps for x in c[:2]})
    per_response = board(comps, lambda rid: {"id": rid, "text": responses[rid]["text"][:120],
                                             "model": responses[rid]["model"]},
                         bootstrap_rounds if n_resp <= max_bootstrap_items else 0)[:top]
    return {"progress": store.progress(),
            "judgments": len(judgments),
            "agreement": _finite(agg.pairwise_agreement(judgments)),
            "alpha": _finite(agg.alpha_of_judgments(judgments)),
            "reliability": {a: {k: (_finite(v) if isinstance(v, float) else v) for k, v in r.items()}
                            for a, r in reliability.items()},
            "flagged": flagged,
            "ai_agreement": ai_agreement(judgments, store.ai_labels(campaign)),
            "models": board(model_comps, lambda k: k, bootstrap_rounds),
            "responses": per_response,
            "costs": campaign_costs(store, campaign, cost_per_hour, cost_per_judgment)}


def ai_agreement(judgments: Sequence[dict[str, Any]], labels: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per judge model: how often its pick matches the human consensus (``aggregate.consensus`` of the latest
    judgments, flagged annotators included) on the pairwise tasks where that consensus is not a tie."""
    units = agg.votes_by_unit(jd for jd in judgments if jd["kind"] == "pairwise")
    out: dict[str, dict[str, Any]] = {}
    for lab in labels:
        i, j = sorted(lab["responses"])
        human = agg.consensus(units.get((lab["task"], i, j), {}))  # 1: i preferred, 0: j, 0.5: tie or no votes
        p_i = lab["p"] if lab["responses"][0] == i else 1.0 - lab["p"]  # the judge's P(i preferred)
        if human == 0.5 or p_i == 0.5:
            continue
        r = out.setdefault(lab["model"], {"tasks": 0, "agree": 0})
        r["tasks"] += 1
        r["agree"] += int((p_i > 0.5) == (human == 1.0))
    for r in out.values():
        r["accuracy"] = round(r["agree"] / r["tasks"], 4)
    return out


def export_pairs(store: Store, out: str | Path, campaign: str | None = None, exclude_flagged: bool = True,
                 weight_by_reliability: bool = False, ties: str = "half", include_ai: bool = True) -> dict[str, Any]:
    """Write ``pairs.jsonl`` (PairRecord) from the latest judgments, and with ``include_ai`` the stored AI
    labels (soft p, source ``ai:<model>:<principle>``) beside them; returns counts."""
    if ties not in ("half", "drop"):
        raise RlhaifError(f"ties={ties!r}: use 'half' (a tie is a pair with p = 0.5) or 'drop'")
    judgments = store.latest_judgments(campaign)
    responses = store.responses(campaign)
    rel = agg.annotator_reliability(judgments, _gold_units(store, campaign))

    def excluded(ann: str) -> bool:
        return exclude_flagged and rel.get(ann, {}).get("flagged", False)

    def weight(ann: str) -> float:
        return rel[ann]["weight"] if (weight_by_reliability and ann in rel) else 1.0

    pairs: list[PairRecord] = []
    skipped = defaultdict(int)

    def add(**pair) -> bool:  # an empty response (EOS first) cannot be a pair's side: left out, counted
        if pair["chosen"].strip() and pair["rejected"].strip():
            pairs.append(PairRecord(**pair))
            return True
        skipped["empty_response"] += 1
        return False

    for jd in judgments:
        ann = jd["annotator"]
        if excluded(ann):
            skipped["flagged_annotator"] += 1
            continue
        w_ann = weight(ann)
        src = f"human:{ann}"
        v, ids = jd["value"], jd["responses"]
        prompt = responses[ids[0]]["prompt"]
        text = {i: responses[i]["text"] for i in ids}
        if jd["kind"] == "pairwise":
            if v["choice"] == "both_bad":
                skipped["both_bad"] += 1
                continue
            if v["choice"] == "tie":
                if ties == "drop":
                    continue
                add(prompt=prompt, chosen=text[ids[0]], rejected=text[ids[1]], p=0.5, weight=w_ann, source=src)
            else:
                loser = ids[1] if v["winner"] == ids[0] else ids[0]
                add(prompt=prompt, chosen=text[v["winner"]], rejected=text[loser], p=1.0, weight=w_ann, source=src,
                    strength=v.get("strength"), **({"selection": jd["selection"]} if jd.get("selection") else {}))
        elif jd["kind"] == "ranking":
            ranks = [v["ranks"][str(i)] for i in ids]
            for p in ranking_to_pairs(prompt, [text[i] for i in ids], ranks, source=src, ties=ties):
                p.weight *= w_ann
                pairs.append(p)
        elif jd["kind"] == "aspects":
            for aspect, win in v.items():
                if win == "tie":
                    continue
                loser = ids[1] if win == ids[0] else ids[0]
                add(prompt=prompt, chosen=text[win], rejected=text[loser], p=1.0, weight=w_ann,
                    source=f"{src}:{aspect}")
    prompt_of = {rid: r["prompt_id"] for rid, r in responses.items()}
    for ann, _pid, better, worse, p in agg.rating_decisions(judgments, prompt_of):
        if excluded(ann) or (p == 0.5 and ties == "drop"):
            continue
        add(prompt=responses[better]["prompt"], chosen=responses[better]["text"], rejected=responses[worse]["text"],
            p=p, weight=weight(ann), source=f"human:{ann}")
    n_ai = 0
    for lab in (store.ai_labels(campaign) if include_ai else []):
        if lab["p"] == 0.5 and ties == "drop":
            continue
        first, second = lab["responses"]
        better, worse = (first, second) if lab["p"] >= 0.5 else (second, first)
        n_ai += add(prompt=responses[first]["prompt"], chosen=responses[better]["text"],
                    rejected=responses[worse]["text"], p=max(lab["p"], 1.0 - lab["p"]),
                    source=f"ai:{lab['model']}:{lab['principle']}", p_orders=lab["p_orders"])
    pairs = [p for p in pairs if p.chosen != p.rejected]
    write_records(out, pairs) if pairs else Path(out).write_text("")
    return {"pairs": len(pairs), "judgments": len(judgments), "ai_labels": n_ai, **skipped,
            "excluded_annotators": [a for a, r in rel.items() if r["flagged"]] if exclude_flagged else []}
