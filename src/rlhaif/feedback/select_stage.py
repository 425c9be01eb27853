"""The select stage: buy ``budget`` comparisons per round by a selection rule (rlhaif.feedback.select), scored
by the newest reward model: the rounds of active labelling, label → retrain the reward model → select::

    - stage: select
      repeat: true
      pool: ${pool.pairs}          # pairs whose labels are known: people simulated, a label seen once bought
      rule: uncertainty            # random | uncertainty | disagreement (`feedback import --select`)
      budget: 100
      scorer: ${prev.rm}           # the newest reward model: the previous round's (round 1 has none: random)
      previous: ${prev.select}     # what earlier rounds bought: never offered again, its labels kept
    - {stage: reward, name: rm, repeat: true, data: ${select.pairs}, ...}

The pool is one of:

- ``pool``: preference pairs with known labels (rlhaif pairs, TRL or hh-rlhf; ``pool_lines`` picks lines), as a
  ``LabeledPool``: the selector sees each prompt and its two responses in a seeded random order, never the
  label, which is revealed only when the pair is bought. ``pairs.jsonl`` holds every pair bought so far, this
  round's and (from ``previous``) the earlier rounds', so round r's reward model learns from rounds 1..r.
- ``completions``: a completions.jsonl, the pool every pair of a prompt's distinct responses, as `rlhaif
  feedback import --select` takes it; ``completions.jsonl`` holds this round's comparisons, two responses under
  one prompt id each, for a labelling stage (``simulate``, ``human``, ``ai_label``).

Either way ``selection.jsonl`` lists every comparison chosen so far and why: ``batch`` (round r of a recipe
buys batch r), ``rule``, ``score``, ``rank``, as the import stores on its tasks. A ``scorer`` left empty (what
``${prev.rm}`` is in round 1) buys at random, and says so; a rule that needs a scorer and names none is an error.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import model_validator

from rlhaif.config import StageConfig
from rlhaif.errors import ConfigError, RlhaifError

SELECTION = "selection.jsonl"


class SelectConfig(StageConfig):
    """Settings of the select stage (`stage: select` in a recipe)."""

    output_dir: str
    """Folder for selection.jsonl, and pairs.jsonl (``pool``) or completions.jsonl (``completions``)."""
    rule: Literal["random", "uncertainty", "disagreement"]
    """The selection rule (rlhaif.feedback.select): random, uncertainty (smallest reward margin first) or
    disagreement (largest spread of an ensemble's margins first)."""
    budget: int
    """Comparisons bought this round."""
    pool: Optional[str] = None
    """Pairs with known labels (rlhaif pairs, TRL, hh-rlhf): the labels are revealed only when bought."""
    pool_lines: Optional[str] = None
    """Use only these 1-based lines of ``pool``, e.g. "1-1500" (the rest held out for evaluation)."""
    completions: Optional[str] = None
    """Instead of ``pool``: a completions.jsonl; the comparisons chosen go to a labelling stage."""
    scorer: Optional[Union[str, list[str]]] = None
    """The scorer(s) ranking the pool (rlhaif.scorers): ``${prev.<reward stage>}`` for the newest reward model;
    for disagreement an ensemble folder counts as its members. Empty (``${prev...}`` in round 1): at random."""
    previous: Optional[str] = None
    """The previous round's select folder (``${prev.<this stage>}``): its comparisons are not offered again and
    its pairs are kept. Empty in round 1."""
    seed: int = 0
    """Seed of the pool's response order and of the tie-breaking (and of the order itself for random)."""

    @model_validator(mode="after")
    def _one_pool_and_a_scorer(self) -> "SelectConfig":
        if (self.pool is None) == (self.completions is None):
            raise ValueError("give exactly one of 'pool' (pairs with known labels) and 'completions' "
                             "(responses to have labelled)")
        if self.pool_lines is not None and self.pool is None:
            raise ValueError("'pool_lines' picks lines of 'pool'; there is no pool")
        if self.rule != "random" and "scorer" not in self.model_fields_set:
            raise ValueError(f"rule '{self.rule}' needs a scorer: 'scorer: ${{prev.<reward stage>}}' (the "
                             "newest reward model; round 1, which has none, buys at random) or a scorer spec")
        return self


@dataclass(frozen=True)
class SelectResult:
    """What the select stage made (also its manifest's ``outputs``)."""

    selection: str
    """selection.jsonl: every comparison chosen so far (this batch and the earlier ones), with why."""
    batch: int
    """This batch's number (1 + the batches of ``previous``)."""
    rule: str
    """The rule this batch was chosen by (random where the scorer was empty)."""
    scorer: tuple[str, ...]
    """The scorer specs it was scored with (an ensemble's members for disagreement); empty for random."""
    selected: int
    """Comparisons chosen in this batch."""
    remaining: int
    """Comparisons of the pool not chosen yet, after this batch."""
    pairs: Optional[str] = None
    """``pool``: pairs.jsonl, every labelled pair bought so far (the reward stage's ``data``)."""
    n_pairs: Optional[int] = None
    completions: Optional[str] = None
    """``completions``: completions.jsonl, this batch's comparisons to label."""


def _scorer_specs(cfg: SelectConfig) -> list[str]:
    from rlhaif.feedback.select import committee

    given = [cfg.scorer] if isinstance(cfg.scorer, str) else list(cfg.scorer or [])
    return committee(cfg.rule, given)


def _previous(cfg: SelectConfig) -> tuple[list[dict[str, Any]], list[Any]]:
    """(selection rows, labelled pairs) of the earlier rounds, from ``previous``."""
    from rlhaif.data.io import read_jsonl, read_records
    from rlhaif.data.records import PairRecord

    if cfg.previous is None:
        return [], []
    folder = Path(cfg.previous)
    if not (folder / SELECTION).is_file():
        raise ConfigError(f"select: previous: {folder} holds no {SELECTION}; give the previous round's select "
                          "folder (${prev.<this stage>})")
    rows = [row for _, row in read_jsonl(folder / SELECTION)]
    if cfg.pool is None:
        return rows, []
    if not (folder / "pairs.jsonl").is_file():
        raise ConfigError(f"select: previous: {folder} chose from completions, and this stage buys from a pool")
    return rows, read_records(folder / "pairs.jsonl", PairRecord)


def _candidates(cfg: SelectConfig, before: list[dict[str, Any]]):
    """(the pool's candidates not chosen before, the LabeledPool that reveals their labels or None, the
    completion records of ``completions`` or None)."""
    from rlhaif.feedback.select import LabeledPool, candidate_pairs

    if cfg.pool is not None:
        from rlhaif.reward.pairs import load_pairs, parse_lines

        pool = LabeledPool(load_pairs(cfg.pool, parse_lines(cfg.pool_lines, "pool_lines")), seed=cfg.seed)
        pool.restore([row["id"] for row in before])
        return pool.unasked(), pool, None
    from rlhaif.data.io import read_records
    from rlhaif.data.records import CompletionRecord

    asked = {(row["id"], row["first_text"], row["second_text"]) for row in before}
    records = read_records(cfg.completions, CompletionRecord)
    return candidate_pairs(records, exclude=asked), None, records


def run_select(cfg: SelectConfig) -> SelectResult:
    """Choose ``budget`` comparisons of what is left of the pool; write selection.jsonl and pairs.jsonl (bought,
    with their labels) or completions.jsonl (to be labelled)."""
    from rlhaif.data.io import write_jsonl, write_records
    from rlhaif.feedback.select import select
    from rlhaif.manifest import write_stage_manifest
    from rlhaif.scorers import load_scorer

    t0 = time.time()
    before, kept = _previous(cfg)
    candidates, pool, records = _candidates(cfg, before)
    if cfg.budget > len(candidates):
        raise RlhaifError(f"select: budget {cfg.budget} is larger than what is left of the pool: {len(candidates)} "
                          f"comparisons not chosen yet ({len(before)} chosen in earlier rounds)")
    specs, rule = _scorer_specs(cfg), cfg.rule
    if rule == "random" and specs:
        print(f"select: rule random: the scorer ({', '.join(specs)}) is not used", flush=True)
        specs = []
    elif not specs:  # the rule needs one (SelectConfig), and it is empty: round 1 of ${prev...}
        print(f"select: no scorer yet (scorer is empty, as ${{prev...}} is in round 1): {cfg.budget} of "
              f"{len(candidates)} comparisons chosen at random (seed {cfg.seed}), not by {rule}", flush=True)
        rule = "random"
    elif rule == "disagreement" and len(specs) < 2:
        raise RlhaifError(f"select: rule 'disagreement' needs an ensemble: a reward model trained with 'ensemble: "
                          f"N' (N >= 2), or two or more scorers; got {', '.join(specs)}")
    chosen = select(rule, candidates, cfg.budget, {s: load_scorer(s) for s in specs}, cfg.seed)
    batch = 1 + max((row["batch"] for row in before), default=0)
    out = Path(cfg.output_dir)
    rows = before + [{"batch": batch, "id": s.candidate.prompt_id, "first": s.candidate.first,
                      "second": s.candidate.second, **s.record(), "first_text": s.candidate.first_text,
                      "second_text": s.candidate.second_text} for s in chosen]
    write_jsonl(out / SELECTION, rows)
    fields: dict[str, Any] = {}
    if pool is not None:
        bought = [p.model_copy(update={"selection": {**p.selection, "batch": batch}}) for p in pool.buy(chosen)]
        fields["n_pairs"] = write_records(out / "pairs.jsonl", kept + bought)
        fields["pairs"] = str(out / "pairs.jsonl")
    else:
        write_records(out / "completions.jsonl", _to_label(records, chosen, batch))
        fields["completions"] = str(out / "completions.jsonl")
    print(f"select: batch {batch}: {len(chosen)} comparisons by {rule}"
          + (f" of {', '.join(specs)}" if specs else "") + f"; {len(candidates) - len(chosen)} left in the pool",
          flush=True)
    result = SelectResult(selection=str(out / SELECTION), batch=batch, rule=rule, scorer=tuple(specs),
                          selected=len(chosen), remaining=len(candidates) - len(chosen), **fields)
    write_stage_manifest("select", cfg, result, wall_time_s=round(time.time() - t0, 2))
    return result


def _to_label(records: list[Any], chosen, batch: int) -> list[Any]:
    """Each chosen comparison as two completions (of ``records``) under a prompt id of its own (``<prompt
    id>/<i>-<j>``), with why it was chosen: a labelling stage asks exactly these pairs."""
    by_key = {(r.prompt_id, r.index): r for r in records}
    out = []
    for s in chosen:
        c = s.candidate
        why = {**s.record(), "batch": batch}
        out += [by_key[c.prompt_id, i].model_copy(update={"prompt_id": f"{c.prompt_id}/{c.first}-{c.second}",
                                                          "selection": why}) for i in (c.first, c.second)]
    return out

