"""The commands that run one stage: ``rlhaif sft | generate | reward train/score/eval | ppo | dpo | evaluate |
feedback simulate/ai-label | cai revise``. Their options are made from the stage's config (rlhaif.cli.options);
each entry here only says which stage, its help, any extra flag names, and what to print."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

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


def count(n: int, noun: str) -> str:
    """``1 step``, ``2 steps``: a count and its noun, plural when it is not 1."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _sft(res: SFTResult, cfg: Any) -> str:
    return (f"trained {count(res.steps, 'step')} on {count(res.examples, 'example')} "
            f"(last loss {res.metrics.get('sft/loss', float('nan')):.4f}) -> {res.model}")


def _reward_train(res: RewardTrainResult, cfg: Any) -> str:
    if res.members:  # an ensemble: one line per member
        return "\n".join([f"ensemble of {len(res.members)} reward models -> {res.model} (ensemble.json)"]
                         + [f"  {_reward_train(m, cfg)}" for m in res.members])
    acc = res.eval.get("accuracy")
    return (f"trained {count(res.steps, 'step')} on {count(res.train_pairs, 'pair')} -> {res.model}"
            + (f"; held-out accuracy {acc:.1%} on {count(res.eval['n_decided'], 'pair')}, "
               f"mean margin {res.eval['mean_margin']:.3f}" if acc is not None else ""))


def _reward_eval(res: RewardEvalResult, cfg: Any) -> str:
    """The whole report (calibration buckets and all) when it is not written to a file; with ``-o``, where it
    went and its headline figures."""
    rep = res.report
    if not res.output:
        return json.dumps(rep, indent=2)
    acc = "n/a" if rep["accuracy"] is None else f"{rep['accuracy']:.1%}"
    margin = "n/a" if rep["mean_margin"] is None else f"{rep['mean_margin']:.3f}"
    ece = "n/a" if rep.get("ece") is None else f"{rep['ece']:.3f}"
    return (f"accuracy {acc} on {count(rep['n_decided'], 'decided pair')} (of {rep['n_pairs']}), mean margin "
            f"{margin}, calibration error {ece}; report -> {res.output}")


def _reward_score(res: RewardScoreResult, cfg: Any) -> str:
    return f"scored {count(res.n, 'completion')} -> {res.output} (mean score {res.mean_score:.3f})"


def _ppo(res: Any, cfg: Any) -> str | None:  # a rlhaif.policy.ppo.PPOResult
    m = res.metrics
    if res.rank != 0:
        return None
    return (f"ppo: {count(res.steps, 'step')}, score {m.get('objective/score', float('nan')):.4f}, "
            f"kl {m.get('objective/kl', float('nan')):.4f} (k1 estimate: can dip below 0 when the KL is small); "
            f"policy saved to {res.model}")


def _dpo(res: DPOResult, cfg: Any) -> str:
    """One line; ``loss: kto`` trains on rows (one response judged alone), not pairs."""
    unit = "row" if cfg.loss == "kto" else "pair"
    ev = res.eval
    held = (f"; held-out accuracy {ev['eval/accuracy']:.3f} on {count(ev['eval/pairs'], unit)}, implicit-reward "
            f"margin {ev['eval/margin']:.4f}" if ev.get("eval/pairs") else "")
    return (f"dpo ({cfg.loss} loss): trained {count(res.steps, 'step')} on {count(res.train_pairs, unit)}{held} "
            f"-> {res.model}")


def _evaluate(res: EvaluateResult, cfg: Any) -> str:
    lines = []
    for name, r in res.models.items():
        parts = [f"{k}={r[k]['mean']:.3f}" for k in ("proxy", "gold", "kl") if k in r]
        lines.append(f"{name:>12}: " + "  ".join(parts + [f"len={r['length']:.1f}",
                                                         f"refusals={r['refusal_rate']:.0%}"]))
    return "\n".join(lines + [f"report: {Path(res.report).resolve()}"])


def _simulate(res: SimulateResult, cfg: Any) -> str:
    return (f"{count(res.judgments, 'simulated judgment')} -> {count(res.n_pairs, 'pair')} in {res.pairs}; "
            f"flagged: {', '.join(res.flagged) or 'none'}")


def _generate(res: GenerateResult, cfg: Any) -> str:
    kept = (f", the best of each prompt's first {res.best_of} of {res.sampled} sampled" if res.best_of else "")
    return (f"wrote {count(res.responses, 'completion')} to {res.completions}{kept} "
            f"({res.tokens_per_second} new tokens/s, {res.finished_share:.0%} reached EOS)")


COMMANDS = [
    StageCommand(("sft",), "sft", "Supervised fine-tuning: cross-entropy on response tokens (prompt masked), "
                 "full or LoRA.", _sft),
    StageCommand(("generate",), "generate", "Sample K responses per prompt and write completions.jsonl (with "
                 "the sampling settings).", _generate,
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
