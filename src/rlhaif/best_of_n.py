"""Best-of-N: score each prompt's N sampled responses with a scorer and keep the best.

    completions.jsonl (N per prompt) → score every response → keep each prompt's top ``per_prompt`` →
    optionally only the ``top_share`` with the highest scores over all prompts → best.jsonl + demos.jsonl

The selection step of rejection-sampling fine-tuning (Llama 2's rejection sampling; RAFT, Dong et al.
2023): generate K → keep the best → SFT on them → next round, the ``best`` stage of
the packaged ``rejection_sampling`` recipe; at inference, ``apply_best_of_n`` is the hook meant for
`rlhaif generate --best-of N --scorer SPEC`. Every kept record carries its ``score`` and the ``scores`` of all N responses of its prompt (in index order);
``scores.jsonl`` holds every response with its score.

``scored_pairs`` labels pairs the same way for online / iterative DPO (Xiong et al. 2024; Guo et al. 2024):
each prompt's best and worst response by a named labeler become (chosen, rejected), with
``source = "scorer:<spec>"`` and the sampling ``policy`` recorded — the ``label`` stage of
the ``online_dpo`` recipe.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from rlhaif.config import StageConfig
from rlhaif.data.records import CompletionRecord, DemoRecord, PairRecord
from rlhaif.errors import ConfigError, RlhaifError
from rlhaif.scorers import Scorer, load_scorer


def score_completions(completions: Sequence[CompletionRecord], scorer: Scorer,
                      batch_size: int = 64) -> list[float]:
    """One finite score per completion, in order (batches of ``batch_size`` responses)."""
    import math

    out: list[float] = []
    for i in range(0, len(completions), batch_size):
        chunk = completions[i:i + batch_size]
        got = [float(s) for s in scorer([c.prompt for c in chunk], [c.response for c in chunk])]
        if len(got) != len(chunk):
            raise RlhaifError(f"the scorer returned {len(got)} scores for {len(chunk)} responses")
        out += got
    bad = [i for i, s in enumerate(out) if not math.isfinite(s)]
    if bad:
        raise RlhaifError(f"the scorer returned {out[bad[0]]} for response {bad[0]}; scores must be finite")
    return out


def best_of_n(completions: Sequence[CompletionRecord], scorer: Scorer, n: Optional[int] = None,
              per_prompt: int = 1, top_share: float = 1.0) -> tuple[list[CompletionRecord], list[CompletionRecord]]:
    """(kept, scored): ``scored`` is every response considered (the first ``n`` of each prompt by index, all
    when None) with its ``score``; ``kept`` is each prompt's ``per_prompt`` best (ties: the lower index),
    then the ``top_share`` of those with the highest scores, each with ``score`` and ``scores`` (the N
    scores of its prompt). Prompts keep their first-seen order."""
    if n is not None and n < 1:
        raise ConfigError(f"best-of-N: n must be >= 1, got {n}")
    if per_prompt < 1:
        raise ConfigError(f"best-of-N: per_prompt must be >= 1, got {per_prompt}")
    if not 0.0 < top_share <= 1.0:
        raise ConfigError(f"best-of-N: top_share must lie in (0, 1], got {top_share}")
    groups: dict[str, list[CompletionRecord]] = defaultdict(list)
    for c in completions:
        groups[c.prompt_id].append(c)
    considered = [c for g in groups.values() for c in sorted(g, key=lambda c: c.index)[:n]]
    scores = score_completions(considered, scorer)
    scored = [c.model_copy(update={"score": s}) for c, s in zip(considered, scores)]
    by_prompt: dict[str, list[CompletionRecord]] = defaultdict(list)
    for c in scored:
        by_prompt[c.prompt_id].append(c)
    kept: list[CompletionRecord] = []
    for group in by_prompt.values():
        all_scores = [c.score for c in group]
        best = sorted(group, key=lambda c: (-c.score, c.index))[:per_prompt]
        kept += [c.model_copy(update={"scores": all_scores, "n": len(group)}) for c in best]
    if top_share < 1.0:
        n_keep = max(1, round(top_share * len(kept)))
        top = set(sorted(range(len(kept)), key=lambda i: (-kept[i].score, i))[:n_keep])
        kept = [c for i, c in enumerate(kept) if i in top]
    return kept, scored


def apply_best_of_n(completions: Sequence[CompletionRecord], scorer_spec: str, n: int) -> list[CompletionRecord]:
    """The hook of `rlhaif generate --best-of N --scorer SPEC`: each prompt's best of its first N responses."""
    return best_of_n(completions, load_scorer(scorer_spec), n)[0]


class BestOfNConfig(StageConfig):
    """The best-of-N stage: score sampled completions and keep each prompt's best (rejection sampling)."""

    completions: str
    """completions.jsonl with several responses per prompt (from the generate stage)."""
    scorer: str
    """The scorer (rlhaif.scorers): reward_model:PATH, classifier:PATH:LABEL, python:FILE.py:FUNCTION, ..."""
    output_dir: str
    """Folder for best.jsonl (kept completions), demos.jsonl (the same as SFT data) and scores.jsonl."""
    n: Optional[int] = None
    """Consider the first N responses of each prompt (None = all)."""
    per_prompt: int = 1
    """Responses kept per prompt (the best first)."""
    top_share: float = 1.0
    """Then keep only this share of the kept responses, those with the highest scores over all prompts."""


@dataclass(frozen=True)
class BestOfNResult:
    """What the best-of-N stage made (also its manifest's ``outputs``)."""

    completions: str
    """best.jsonl: the kept completions."""
    demos: str
    """demos.jsonl: the kept responses as SFT data."""
    scores: str
    """scores.jsonl: every completion with its score."""
    prompts: int
    scored: int
    kept: int
    mean_score: Optional[float]
    mean_kept_score: Optional[float]


def run_best_of_n(cfg: BestOfNConfig) -> BestOfNResult:
    """Score, select, write best.jsonl, demos.jsonl, scores.jsonl and best_of_n_stats.json."""
    from rlhaif.data.io import read_records, write_records

    completions = read_records(cfg.completions, CompletionRecord)
    kept, scored = best_of_n(completions, load_scorer(cfg.scorer), cfg.n, cfg.per_prompt, cfg.top_share)
    out = Path(cfg.output_dir)
    write_records(out / "scores.jsonl", scored)
    write_records(out / "best.jsonl", kept)
    demos = [DemoRecord(prompt=c.prompt, response=c.response, score=c.score) for c in kept if c.response.strip()]
    if not demos:
        raise RlhaifError(f"{cfg.completions}: every kept response is empty; nothing to fine-tune on")
    write_records(out / "demos.jsonl", demos)
    mean = lambda xs: round(sum(xs) / len(xs), 6) if xs else None  # noqa: E731
    stats = {"prompts": len({c.prompt_id for c in scored}), "scored": len(scored), "kept": len(kept),
             "mean_score": mean([c.score for c in scored]), "mean_kept_score": mean([c.score for c in kept])}
    (out / "best_of_n_stats.json").write_text(json.dumps(stats, indent=2))
    return BestOfNResult(completions=str(out / "best.jsonl"), demos=str(out / "demos.jsonl"),
                         scores=str(out / "scores.jsonl"), **stats)


def scored_pairs(completions: Sequence[CompletionRecord], scorer: Scorer, labeler: str) -> list[PairRecord]:
    """Each prompt's best and worst response by ``scorer`` as one pair (chosen = best); prompts whose
    responses all score the same, or are the same text, give none. ``source`` names the labeler, ``policy``
    the model that sampled the responses, ``margin_score`` the score difference."""
    scored = best_of_n(completions, scorer)[1]
    by_prompt: dict[str, list[CompletionRecord]] = defaultdict(list)
    for c in scored:
        by_prompt[c.prompt_id].append(c)
    pairs = []
    for pid, group in by_prompt.items():
        ranked = sorted(group, key=lambda c: (-c.score, c.index))
        best, worst = ranked[0], ranked[-1]
        if best.score == worst.score or best.response == worst.response or not worst.response.strip():
            continue
        pairs.append(PairRecord(prompt=best.prompt, chosen=best.response, rejected=worst.response, p=1.0,
                                source=f"scorer:{labeler}", id=pid, policy=best.model,
                                margin_score=round(best.score - worst.score, 6)))
    return pairs


class ScoredPairsConfig(StageConfig):
    """The label stage of online DPO: the current policy's K responses per prompt → (best, worst) pairs by a
    named labeler (a reward model, a classifier or a Python function, as a scorer spec)."""

    completions: str
    """completions.jsonl with at least two responses per prompt (from the generate stage)."""
    labeler: str
    """The labeler, a scorer spec (rlhaif.scorers): reward_model:PATH, classifier:PATH:LABEL, python:FILE.py:FN."""
    output_dir: str
    """Folder for pairs.jsonl."""


@dataclass(frozen=True)
class ScoredPairsResult:
    """What the scored-pairs stage (online DPO's labeller) made (also its manifest's ``outputs``)."""

    pairs: str
    """The pairs.jsonl written."""
    n_pairs: int
    labeler: str
    prompts: int


def run_scored_pairs(cfg: ScoredPairsConfig) -> ScoredPairsResult:
    """Label the completions' best and worst responses; writes pairs.jsonl."""
    from rlhaif.data.io import read_records, write_records

    completions = read_records(cfg.completions, CompletionRecord)
    pairs = scored_pairs(completions, load_scorer(cfg.labeler), cfg.labeler)
    if not pairs:
        raise RlhaifError(f"{cfg.completions}: the labeler {cfg.labeler!r} scored every prompt's responses the "
                          "same; no pair to train on (sample more responses per prompt, or at a higher temperature)")
    out = Path(cfg.output_dir) / "pairs.jsonl"
    write_records(out, pairs)
    return ScoredPairsResult(pairs=str(out), n_pairs=len(pairs), labeler=cfg.labeler,
                             prompts=len({c.prompt_id for c in completions}))
