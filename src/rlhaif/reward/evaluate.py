"""Reward-model evaluation and scoring: held-out accuracy, mean margin, calibration; scoring files.

Calibration: the model's probability that ``chosen`` wins is σ(r_c − r_r) (raw rewards, the Bradley–Terry
likelihood it was trained on). Its confidence is max(σ, 1 − σ); pairs are bucketed by confidence
(0.5–0.6, ..., 0.9–1.0) and each bucket reports how often the model was right. A calibrated model's accuracy
in a bucket matches the bucket's mean confidence; ``ece`` is the pair-weighted mean gap.
Ties (p = 0.5) have no right answer and are left out of accuracy and calibration; a zero margin counts as
half right (``reward.losses.pair_correct``, the rule DPO's accuracy uses too).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from rlhaif.config import StageConfig
from rlhaif.data.records import PairRecord, Prompt
from rlhaif.errors import DataError

BUCKETS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def pair_metrics(chosen_scores: Sequence[float], rejected_scores: Sequence[float],
                 p: Sequence[float]) -> dict[str, Any]:
    """Accuracy, mean margin and calibration buckets from raw scores (plain floats; no torch needed)."""
    margins = [c - r for c, r in zip(chosen_scores, rejected_scores)]
    rows = []  # (confidence, correct) for decided pairs
    for m, pi in zip(margins, p):
        if pi == 0.5:
            continue
        prob = 1.0 / (1.0 + math.exp(-max(min(m, 50.0), -50.0)))
        rows.append((max(prob, 1.0 - prob), 0.5 if m == 0 else float((m > 0) == (pi > 0.5))))  # pair_correct's rule
    buckets = []
    for lo, hi in zip(BUCKETS[:-1], BUCKETS[1:]):
        inside = [(c, ok) for c, ok in rows if lo <= c < hi or (hi == 1.0 and c == 1.0)]
        buckets.append({"confidence": f"{lo:.1f}-{hi:.1f}", "n": len(inside),
                        "mean_confidence": sum(c for c, _ in inside) / len(inside) if inside else None,
                        "accuracy": sum(ok for _, ok in inside) / len(inside) if inside else None})
    n = len(rows)
    ece = sum(b["n"] * abs(b["accuracy"] - b["mean_confidence"]) for b in buckets if b["n"]) / n if n else None
    return {"n_pairs": len(margins), "n_decided": n,
            "accuracy": sum(ok for _, ok in rows) / n if n else None,
            "mean_margin": sum(margins) / len(margins) if margins else None,
            "ece": ece, "calibration": buckets}


def evaluate_pairs(rm, pairs: Sequence[PairRecord], batch_size: int = 32) -> dict[str, Any]:
    """Score chosen and rejected of every pair with ``rm`` (a RewardModel) and report ``pair_metrics``."""
    prompts = [p.prompt for p in pairs]
    chosen = rm.raw_scores(prompts, [p.chosen for p in pairs], batch_size)
    rejected = rm.raw_scores(prompts, [p.rejected for p in pairs], batch_size)
    report = pair_metrics(chosen, rejected, [p.p for p in pairs])
    report["mean_margin_normalized"] = (report["mean_margin"] / rm.std) if report["mean_margin"] is not None else None
    return report


def compute_normalization(rm, prompts: Sequence[Prompt], responses: Sequence[str],
                          batch_size: int = 32) -> tuple[float, float]:
    """(mean, std) of raw scores over a reference set; std is floored so scores never blow up."""
    raw = rm.raw_scores(list(prompts), list(responses), batch_size)
    mean = sum(raw) / len(raw)
    var = sum((x - mean) ** 2 for x in raw) / max(1, len(raw) - 1)
    return mean, max(math.sqrt(var), 1e-6)


class RewardEvalConfig(StageConfig):
    """Settings of `rlhaif reward eval`."""

    model: str
    """Reward model folder (output of `rlhaif reward train`)."""
    data: str
    """Pairs to evaluate: rlhaif pairs, TRL preference rows or hh-rlhf."""
    data_lines: Optional[str] = None
    """Use only these 1-based lines of `data`, e.g. "1501-1800"."""
    output: Optional[str] = None
    """Where to write the report (JSON); unset: print only."""
    batch_size: int = 32
    """Sequences scored together."""


class RewardScoreConfig(StageConfig):
    """Settings of `rlhaif reward score`."""

    model: str
    """Reward model folder (output of `rlhaif reward train`)."""
    data: str
    """completions.jsonl (prompt, response, ...) to score."""
    output: str = "scored.jsonl"
    """Output: the same records with `score` (normalized) and `raw_score` added."""
    batch_size: int = 32
    """Sequences scored together."""


@dataclass(frozen=True)
class RewardEvalResult:
    """What `rlhaif reward eval` made."""

    report: dict[str, Any]
    """``evaluate_pairs``' report: ``n_pairs``, ``n_decided``, ``accuracy``, ``mean_margin``,
    ``mean_margin_normalized``, ``ece``, ``calibration``."""
    output: Optional[str]
    """The file the report went to (None: printed only)."""


@dataclass(frozen=True)
class RewardScoreResult:
    """What `rlhaif reward score` made."""

    output: str
    """The scored completions file."""
    n: int
    """Completions scored."""
    mean_score: float
    """Their mean normalized score."""


def run_reward_eval(config: RewardEvalConfig) -> RewardEvalResult:
    """Score a pairs file and report accuracy, mean margin and calibration (written to ``output``)."""
    from rlhaif.reward.model import load_reward_model
    from rlhaif.reward.pairs import load_pairs, parse_lines

    rm = load_reward_model(config.model)
    pairs = load_pairs(config.data, parse_lines(config.data_lines, "data_lines"))
    report = evaluate_pairs(rm, pairs, config.batch_size)
    if config.output:
        from rlhaif.data.io import atomic_write

        with atomic_write(config.output) as f:
            f.write(json.dumps(report, indent=2))
    return RewardEvalResult(report=report, output=config.output)


def run_reward_score(config: RewardScoreConfig) -> RewardScoreResult:
    """Add ``score`` (normalized) and ``raw_score`` to every completion; write ``output``."""
    from rlhaif.data.io import parse_record, read_jsonl, write_jsonl
    from rlhaif.data.records import CompletionRecord
    from rlhaif.reward.model import load_reward_model

    rows, recs = [], []
    for lineno, obj in read_jsonl(config.data):
        if "prompt_id" not in obj:
            obj = {**obj, "prompt_id": str(lineno)}
        recs.append(parse_record(CompletionRecord, obj, config.data, lineno))
        rows.append(obj)
    if not recs:
        raise DataError(config.data, None, None, "the file holds no completions")
    rm = load_reward_model(config.model)
    raw = rm.raw_scores([r.prompt for r in recs], [r.response for r in recs], config.batch_size)
    for row, s in zip(rows, raw):
        row["raw_score"] = s
        row["score"] = (s - rm.mean) / rm.std
    write_jsonl(Path(config.output), rows)
    scores = [r["score"] for r in rows]
    return RewardScoreResult(output=config.output, n=len(rows), mean_score=sum(scores) / len(scores))
