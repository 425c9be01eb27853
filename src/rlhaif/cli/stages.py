"""The commands that run one stage: ``rlhaif sft | generate | reward train/score/eval | ppo | dpo | evaluate |
feedback simulate/ai-label | cai revise``. Their options are made from the stage's config (rlhaif.cli.options);
each entry here only says which stage, its help, any extra flag names, and what to print."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from rlhaif.cli.options import StageCommand
from rlhaif.manifest import stage_outputs

if TYPE_CHECKING:  # the stages import torch: only when a command runs
    from rlhaif.evaluate.run import EvaluateResult
    from rlhaif.feedback.simulate import SimulateResult
    from rlhaif.generate import GenerateResult
    from rlhaif.policy.dpo import DPOResult
    from rlhaif.policy.sft import SFTResult
    from rlhaif.reward.evaluate import RewardEvalResult, RewardScoreResult
    from rlhaif.reward.train import RewardTrainResult


def _json(result: Any, cfg: Any) -> str:
    return json.dumps(stage_outputs(result), indent=2)


def _sft(res: SFTResult, cfg: Any) -> str:
    return (f"trained {res.steps} steps on {res.examples} examples "
            f"(last loss {res.metrics.get('sft/loss', float('nan')):.4f}) -> {res.model}")


def _reward_train(res: RewardTrainResult, cfg: Any) -> str:
    if res.members:  # an ensemble: one line per member
        return "\n".join([f"ensemble of {len(res.members)} reward models -> {res.model} (ensemble.json)"]
                         + [f"  {_reward_train(m, cfg)}" for m in res.members])
    acc = res.eval.get("accuracy")
    return (f"trained {res.steps} steps on {res.train_pairs} pairs -> {res.model}"
            + (f"; held-out accuracy {acc:.1%} on {res.eval['n_decided']} pairs, "
               f"mean margin {res.eval['mean_margin']:.3f}" if acc is not None else ""))


def _reward_eval(res: RewardEvalResult, cfg: Any) -> str:
    return json.dumps(res.report, indent=2)


def _reward_score(res: RewardScoreResult, cfg: Any) -> str:
    return f"scored {res.n} completions -> {res.output} (mean score {res.mean_score:.3f})"


def _ppo(res: Any, cfg: Any) -> str | None:  # a rlhaif.policy.ppo.PPOResult
    m = res.metrics
    if res.rank != 0:
        return None
    return (f"ppo: {res.steps} steps, score {m.get('objective/score', float('nan')):.4f}, "
            f"kl {m.get('objective/kl', float('nan')):.4f}; policy saved to {res.model}")


def _dpo(res: DPOResult, cfg: Any) -> str:
    return json.dumps({"model": res.model, "steps": res.steps, **res.eval})


def _evaluate(res: EvaluateResult, cfg: Any) -> str:
    lines = []
    for name, r in res.models.items():
        parts = [f"{k}={r[k]['mean']:.3f}" for k in ("proxy", "gold", "kl") if k in r]
        lines.append(f"{name:>12}: " + "  ".join(parts + [f"len={r['length']:.1f}",
                                                         f"refusals={r['refusal_rate']:.0%}"]))
    return "\n".join(lines + [f"report: {Path(res.report).resolve()}"])


def _simulate(res: SimulateResult, cfg: Any) -> str:
    return (f"{res.judgments} simulated judgments -> {res.n_pairs} pairs in {res.pairs}; "
            f"flagged: {', '.join(res.flagged) or 'none'}")


def _generate(res: GenerateResult, cfg: Any) -> str:
    return (f"wrote {res.responses} completions to {res.completions} "
            f"({res.tokens_per_second} new tokens/s, {res.finished_share:.0%} reached EOS)")


def _generate_with_progress(fn, cfg) -> GenerateResult:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    click.echo(f"loading {cfg.model} ...", err=True)
    with Progress(TextColumn("[bold]generate"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  transient=True) as bar:
        task = bar.add_task("generate", total=None)
        return fn(cfg, progress=lambda done, total: bar.update(task, completed=done, total=total))


COMMANDS = [
    StageCommand(("sft",), "sft", "Supervised fine-tuning: cross-entropy on response tokens (prompt masked), "
                 "full or LoRA.", _sft),
    StageCommand(("generate",), "generate", "Sample K responses per prompt and write completions.jsonl (with "
                 "the sampling settings).", _generate, call=_generate_with_progress,
                 flags={"output_dir": ["--output-dir"]}),  # -o: the completions file, as before
    StageCommand(("reward", "train"), "reward", "Train a Bradley–Terry reward model on preference pairs; writes "
                 "the model, eval.json, metrics.", _reward_train),
    StageCommand(("reward", "eval"), "rlhaif.reward.evaluate:run_reward_eval", "Accuracy, mean margin and "
                 "calibration of a reward model on a pairs file.", _reward_eval),
    StageCommand(("reward", "score"), "rlhaif.reward.evaluate:run_reward_score", "Add `score` (normalized) and "
                 "`raw_score` to every completion.", _reward_score),
    StageCommand(("ppo",), "ppo", "Optimise the policy against a reward model (or a Python reward) with PPO and "
                 "a KL penalty.", _ppo),
    StageCommand(("dpo",), "dpo", "Direct preference optimization from pairs; writes model/, metrics.jsonl and "
                 "eval.json.", _dpo),
    StageCommand(("evaluate",), "evaluate", "Sample every model on the same prompts; proxy/gold scores, KL, win "
                 "rate, diversity -> report.html.", _evaluate, flags={"models": ["--models", "--model", "-m"]}),
    StageCommand(("feedback", "simulate"), "simulate", "Label with a simulated panel (five annotators, one "
                 "adversarial) and export pairs.", _simulate),
    StageCommand(("feedback", "ai-label"), "ai_label", "Label pairs with an AI judge (both orders averaged): "
                 "writes pairs.jsonl with soft labels p and source ai:<model>:<principle>; a cache makes reruns "
                 "free. With --db, the labels also go into the feedback store beside the human judgments "
                 "(`rlhaif feedback export` writes both).", _json),
    StageCommand(("cai", "revise"), "revise", "Answer red-team prompts, then critique and revise n times under "
                 "randomly drawn principles; write revisions.jsonl (every round), sft.jsonl and pairs.jsonl "
                 "(revision ≻ original). Resumable.", _json, flags={"n_rounds": ["--n-rounds", "--rounds"]}),
]
