"""A panel of simulated annotators: each ranks responses by a scorer, with its own noise and biases.

Annotator utility for the response shown at position i (Gaussian noise, fresh for every judgment):

    u_i = s·score_i + noise·ε_i + position_bias·[i = 0] + length_bias·words_i/100,   s = -1 if adversarial else 1

Pairwise: the higher utility wins. Ranking: ranks by utility. The adversary answers against the scorer
("RLHF trolling"). The scorer is any ``score(prompts, responses) -> list[float]``, e.g. a reward model's
``score``, named by a spec of ``rlhaif.scorers``; ``"length"`` (longer is better) needs nothing. Judgments go through the real store.
"""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Sequence

from pydantic import BaseModel, ConfigDict, Field

from rlhaif.config import StageConfig
from rlhaif.scorers import Scorer, load_scorer


class AnnotatorSpec(BaseModel):
    """One simulated annotator."""

    model_config = ConfigDict(extra="forbid")
    name: str
    """Annotator name (stored as ``sim-<name>``; the export's source is ``human:sim-<name>``)."""
    noise: float = Field(0.5, ge=0)
    """Standard deviation of the Gaussian noise added to each score."""
    position_bias: float = 0.0
    """Bonus to the response shown first."""
    length_bias: float = 0.0
    """Bonus per 100 words of response."""
    adversarial: bool = False
    """Answer against the scorer."""


def default_panel() -> list[AnnotatorSpec]:
    return [AnnotatorSpec(name="a1", noise=0.3), AnnotatorSpec(name="a2", noise=0.5),
            AnnotatorSpec(name="a3", noise=0.5, position_bias=0.3), AnnotatorSpec(name="a4", noise=0.7, length_bias=0.2),
            AnnotatorSpec(name="troll", noise=0.3, adversarial=True)]


class SimulatedPanelConfig(StageConfig):
    """Settings of the simulated panel (``run_simulated_panel``)."""

    output_dir: str
    """Where pairs.jsonl, report.json (and feedback.db when no ``db`` is given) are written."""
    completions: Optional[str] = None
    """A completions.jsonl to import into a new campaign; leave empty to label an existing campaign."""
    db: Optional[str] = None
    """The feedback store (path or URL); default ``<output_dir>/feedback.db``, the panel's own (reproducible
    from ``seed``: display orders drawn from it; a given store draws them from a secure source, for its people)."""
    campaign: str = "simulated"
    """Campaign to label (created from ``completions`` when given)."""
    kind: Literal["pairwise", "ranking"] = "pairwise"
    """Task kind when the campaign is created here."""
    overlap: int = 5
    """Annotators per item when the campaign is created here."""
    annotators: list[AnnotatorSpec] = Field(default_factory=default_panel)
    """The panel; by default five annotators, one adversarial."""
    scorer: str = "length"
    """Any scorer spec of ``rlhaif.scorers``: 'length' (longer is better), 'reward_model:<path>' (a reward model
    trained by `rlhaif reward train`), 'classifier:<path>:<label>', 'python:<file.py>:<function>'."""
    seed: int = 0
    """Seed of the annotators' noise."""


def simulated_value(spec: AnnotatorSpec, kind: str, scores: Sequence[float], texts: Sequence[str],
                    rng: random.Random) -> dict:
    """The submission (screen positions) of one simulated annotator for responses shown in this order."""
    sign = -1.0 if spec.adversarial else 1.0
    u = [sign * s + spec.noise * rng.gauss(0.0, 1.0) + (spec.position_bias if i == 0 else 0.0)
         + spec.length_bias * len(t.split()) / 100.0 for i, (s, t) in enumerate(zip(scores, texts))]
    if kind == "pairwise":
        return {"choice": "A" if u[0] >= u[1] else "B", "strength": None}
    order = sorted(range(len(u)), key=lambda i: -u[i])
    ranks = [0] * len(u)
    for r, i in enumerate(order, start=1):
        ranks[i] = r
    return {"ranks": ranks}


def label_campaign(store, specs: Sequence[AnnotatorSpec], scorer: Scorer, seed: int = 0) -> int:
    """Each simulated annotator labels all of its assignments through the store; returns judgments made."""
    from rlhaif.data.records import prompt_text
    from rlhaif.feedback.human.schemas import JudgmentIn

    ids = _ensure_annotators(store, specs)
    made = 0
    for k, spec in enumerate(specs):
        rng = random.Random(f"{seed}:{k}")
        aid_ann = ids[f"sim-{spec.name}"]
        batch = []
        for view in store.pending_views(aid_ann):
            aid = view["assignment_id"]
            prompt = prompt_text([_msg(m) for m in view["messages"]]) if len(view["messages"]) > 1 else view["messages"][0]["content"]
            scores = scorer([prompt] * len(view["responses"]), view["responses"])
            value = simulated_value(spec, view["kind"], scores, view["responses"], rng)
            batch.append(JudgmentIn(client_id=uuid.uuid4().hex, assignment_id=aid, value=value))
        made += store.submit_many(aid_ann, batch)
    return made


def _ensure_annotators(store, specs: Sequence[AnnotatorSpec]) -> dict[str, int]:
    """Add the missing ``sim-<name>`` annotators; returns {name: id} of every annotator."""
    have = {a.name for a in store.annotators()}
    for spec in specs:
        if f"sim-{spec.name}" not in have:
            store.add_annotator(f"sim-{spec.name}")
    return {a.name: a.id for a in store.annotators()}


def _msg(m: dict):
    from rlhaif.data.records import Message

    return Message(**m)


@dataclass(frozen=True)
class FeedbackResult:
    """What a feedback stage made (also its manifest's ``outputs``): the simulated panel's, and the human
    stage's (``rlhaif.feedback.human.collect``), so a recipe can swap one for the other."""

    pairs: str
    """The pairs.jsonl exported."""
    n_pairs: int


@dataclass(frozen=True)
class SimulateResult(FeedbackResult):
    """What `rlhaif feedback simulate` made."""

    judgments: int
    """Simulated judgments made."""
    flagged: list[str]
    """Annotators flagged as unreliable (their labels left out of the pairs)."""
    agreement: Any
    """report.json's agreement between annotators."""
    alpha: Any
    """report.json's Krippendorff's alpha."""


def run_simulated_panel(config: SimulatedPanelConfig, scorer: Scorer | None = None) -> SimulateResult:
    """Label a campaign (or a completions file) with the panel; write pairs.jsonl and report.json."""
    import json

    from rlhaif.data.io import read_records
    from rlhaif.data.records import CompletionRecord
    from rlhaif.feedback.human.report import build_report, export_pairs
    from rlhaif.feedback.human.store import Store
    from rlhaif.manifest import write_stage_manifest

    t0 = time.time()
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Its own store is labelled by the panel only: display orders from the seed, so the labels follow it alone.
    # A store given as ``db`` may have people in it: their orders stay secret (and the labels vary run to run).
    store = (Store(config.db) if config.db else
             Store(str(out / "feedback.db"), display_order_seed=config.seed))
    store.migrate()
    try:
        _ensure_annotators(store, config.annotators)  # first, so the import spreads the tasks over all of them
        if config.completions:
            store.create_campaign(config.campaign, config.kind, overlap=min(config.overlap, len(config.annotators)),
                                  guidelines="Simulated annotators rank by the scorer.")
            store.import_completions(config.campaign, read_records(config.completions, CompletionRecord),
                                     path=config.completions)
        else:
            store.campaign(config.campaign)  # must exist
        made = label_campaign(store, config.annotators, scorer or load_scorer(config.scorer), config.seed)
        exported = export_pairs(store, out / "pairs.jsonl", campaign=config.campaign)
        report = build_report(store, config.campaign)
        (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    finally:
        store.close()
    result = SimulateResult(pairs=str(out / "pairs.jsonl"), n_pairs=exported["pairs"], judgments=made,
                            flagged=report["flagged"], agreement=report["agreement"], alpha=report["alpha"])
    write_stage_manifest("simulate", config, result, wall_time_s=round(time.time() - t0, 2))
    return result
