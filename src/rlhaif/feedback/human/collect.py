"""The human stage of a recipe: load completions into the annotation app, serve it until every task is
labelled (or Ctrl-C), then export the labels as pairs.jsonl. What `rlhaif demo --human` uses in place of the
simulated panel."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import Field

from rlhaif.config import StageConfig
from rlhaif.errors import RlhaifError
from rlhaif.feedback.simulate import FeedbackResult


class HumanFeedbackConfig(StageConfig):
    """The human stage: load completions into the annotation app, serve it until every task is labelled (or
    Ctrl-C), then export the labels as pairs.jsonl. What `rlhaif demo --human` uses in place of the panel."""

    completions: str
    """completions.jsonl (K responses per prompt) to label."""
    output_dir: str
    """Folder for feedback.db (unless `db` is set), annotator_token.txt and pairs.jsonl."""
    db: Optional[str] = None
    """Feedback store: SQLite path or database URL; default <output_dir>/feedback.db."""
    campaign: str = "rlhf"
    """Campaign name in the store."""
    kind: Literal["pairwise", "ranking"] = "ranking"
    """Task kind: rank the K responses of a prompt (InstructGPT), or compare consecutive pairs."""
    annotator: str = "me"
    """Annotator created for you; the sign-in token is printed and kept in annotator_token.txt."""
    guidelines: str = ("Rank the responses from best to worst: helpful, honest and harmless first. "
                       "Mark nonsense with F.")
    """Guidelines shown with every task."""
    host: str = "127.0.0.1"
    """Address the app listens on."""
    port: int = 8765
    """Port the app listens on."""
    cost_per_hour: Optional[float] = Field(None, ge=0)
    """What an annotator's hour costs: the manifest's ``costs`` then holds the cost per usable pair."""


@dataclass(frozen=True)
class HumanFeedbackResult(FeedbackResult):
    """What the human stage made: the pairs (as the simulated panel's) and how far you got."""

    labelled: int
    """Tasks you labelled."""
    tasks: int
    """Tasks assigned to you."""
    costs: Optional[dict[str, Any]] = None
    """What the labels cost (rlhaif.feedback.costs): judgments, median seconds, usable pairs, cost."""


def run_human_feedback(cfg: HumanFeedbackConfig) -> HumanFeedbackResult:
    import threading

    from rlhaif.data.io import read_records
    from rlhaif.data.records import CompletionRecord
    from rlhaif.feedback.human.report import campaign_costs, export_pairs
    from rlhaif.feedback.human.store import Store, write_secret
    from rlhaif.manifest import write_stage_manifest

    t0 = time.time()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    db = cfg.db or str(out / "feedback.db")
    store = Store(db)
    store.migrate()
    store.create_campaign(cfg.campaign, cfg.kind, guidelines=cfg.guidelines)
    store.import_completions(cfg.campaign, read_records(cfg.completions, CompletionRecord), cfg.completions)
    token_file = out / "annotator_token.txt"
    if token_file.exists():  # resumed: the annotator and their labels are already in the store
        token = token_file.read_text().strip()
    else:
        token = store.add_annotator(cfg.annotator)
        write_secret(token_file, token + "\n")  # 0600 from creation: never readable by others
    me = store.annotator_by_token(token)
    if me is None:
        raise RlhaifError(f"{token_file}: this token is not in {db}; delete the file to create a new annotator")

    def finished() -> bool:
        done, total = store.progress_of(me.id)
        return total > 0 and done >= total

    if not finished():
        import uvicorn

        from rlhaif.feedback.human.app import Settings, create_app

        server = uvicorn.Server(uvicorn.Config(create_app(Settings(db=db)), host=cfg.host, port=cfg.port,
                                               log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        print(f"annotate at http://{cfg.host}:{cfg.port}/login with the token {token}\n"
              f"(the run continues when every task is labelled; Ctrl-C stops early and uses the labels so far)",
              flush=True)
        try:
            while not finished() and thread.is_alive():
                time.sleep(1.0)
        except KeyboardInterrupt:
            print("stopped: exporting the labels given so far", flush=True)
        server.should_exit = True
        thread.join(timeout=10)
    done, total = store.progress_of(me.id)
    counts = export_pairs(store, out / "pairs.jsonl", cfg.campaign)
    result = HumanFeedbackResult(pairs=str(out / "pairs.jsonl"), n_pairs=counts.get("pairs"), labelled=done,
                                 tasks=total, costs=campaign_costs(store, cfg.campaign, cfg.cost_per_hour)[cfg.campaign])
    write_stage_manifest("human", cfg, result, wall_time_s=round(time.time() - t0, 2))
    return result
