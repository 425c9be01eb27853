"""`rlhaif feedback export --format kto`: the store's absolute verdicts as unpaired rows for KTO.

Each annotator's latest judgment gives rows ``(prompt, completion, label)`` through
``aggregate.unpaired_labels`` (thumbs; ratings with a threshold; "both bad" and "F" as undesirable), with
``source = "human:<annotator>"``. Flagged annotators are left out (``exclude_flagged``) or every row is
weighted by the annotator's agreement (``weight_by_reliability``), as for the pairs export. The rows are
rlhaif ``UnpairedRecord`` lines, or TRL's unpaired format with ``trl=True``; `rlhaif dpo --loss kto` reads both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlhaif.data.formats import write_trl_unpaired
from rlhaif.data.io import write_records
from rlhaif.data.records import UnpairedRecord
from rlhaif.feedback import aggregate as agg
from rlhaif.feedback.human.report import _gold_units
from rlhaif.feedback.human.store import Store


def kto_rows(store: Store, campaign: str | None = None, rating_threshold: int = agg.RATING_THRESHOLD,
             exclude_flagged: bool = True, weight_by_reliability: bool = False) -> tuple[list[UnpairedRecord], dict]:
    """(rows, counts) from the latest judgments of ``campaign`` (all campaigns when None)."""
    judgments = store.latest_judgments(campaign)
    responses = store.responses(campaign)
    rel = agg.annotator_reliability(judgments, _gold_units(store, campaign))
    rows: list[UnpairedRecord] = []
    skipped = 0
    for jd in judgments:
        ann = jd["annotator"]
        r = rel.get(ann, {})
        if exclude_flagged and r.get("flagged", False):
            skipped += 1
            continue
        weight = r["weight"] if (weight_by_reliability and r) else 1.0
        for rid, good in agg.unpaired_labels(jd, rating_threshold):
            rows.append(UnpairedRecord(prompt=responses[rid]["prompt"], completion=responses[rid]["text"],
                                       label=good, weight=weight, source=f"human:{ann}"))
    counts = {"rows": len(rows), "desirable": sum(r.label for r in rows),
              "undesirable": sum(not r.label for r in rows), "judgments": len(judgments),
              "flagged_annotator": skipped}
    return rows, counts


def export_kto(store: Store, out: str | Path, campaign: str | None = None, trl: bool = False, **kw: Any) -> dict:
    """Write the unpaired rows of ``kto_rows`` to ``out`` (TRL's format with ``trl``); returns the counts."""
    rows, counts = kto_rows(store, campaign, **kw)
    if not rows:
        Path(out).write_text("")
    elif trl:
        write_trl_unpaired(out, rows)
    else:
        write_records(out, rows)
    return counts
