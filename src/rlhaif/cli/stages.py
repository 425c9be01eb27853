"""The commands that run one stage: ``rlhaif sft | generate | reward train/score/eval | ppo | dpo | evaluate |
feedback simulate/ai-label | cai revise``. Their options are made from the stage's config (rlhaif.cli.options);
each entry here only says which stage, its help, any extra flag names, and what to print."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


from rlhaif.cli.options import StageCommand


def _json(result: dict, cfg: Any) -> str:
    return json.dumps(result, indent=2, default=str)


def _sft(out: dict, cfg: Any) -> str:
    return (f"trained {out['steps']} steps on {out['examples']} examples (last loss {out['final_loss']:.4f}) "
            f"-> {out['model']}")


def _reward_train(rep: dict, cfg: Any) -> str:
    acc = rep.get("accuracy")
    return (f"trained {rep['steps']} steps on {rep['train_pairs']} pairs -> {cfg.output_dir}"
            + (f"; held-out accuracy {acc:.1%} on {rep['n_decided']} pairs, mean margin {rep['mean_margin']:.3f}"
               if acc is not None else ""))


def _reward_score(out: dict, cfg: Any) -> str:
    return f"scored {out['n']} completions -> {out['output']} (mean score {out['mean_score']:.3f})"


def _ppo(res: dict, cfg: Any) -> str | None:
    m = res["metrics"]
    if res["rank"] != 0:
        return None
    return (f"ppo: {res['steps']} steps, score {m.get('objective/score', float('nan')):.4f}, "
            f"kl {m.get('objective/kl', float('nan')):.4f}; policy saved to {res['model']}")


def _dpo(res: dict, cfg: Any) -> str:
    return json.dumps({"model": res["model"], "steps": res["steps"], **res["eval"]})


def _evaluate(res: dict, cfg: Any) -> str:
    lines = []
    for name, r in res["models"].items():
        parts = [f"{k}={r[k]['mean']:.3f}" for k in ("proxy", "gold", "kl") if k in r]
        lines.append(f"{name:>12}: " + "  ".join(parts + [f"len={r['length']:.1f}",
                                                         f"refusals={r['refusal_rate']:.0%}"]))
    return "\n".join(lines + [f"report: {Path(res['report']).resolve()}"])


def _simulate(res: dict, cfg: Any) -> str:
    return (f"{res['judgments']} simulated judgments -> {res['n_pairs']} pairs in {res['pairs']}; "
            f"flagged: {', '.join(res['flagged']) or 'none'}")


def _generate(res: dict, cfg: Any) -> str:
    kept = (f", the best of each prompt's first {res['best_of']} of {res['sampled']} sampled" if res.get("best_of")
            else "")
    return (f"wrote {res['responses']} completions to {res['completions']}{kept} "
            f"({res['tokens_per_second']} new tokens/s, {res['finished_share']:.0%} reached EOS)")


COMMANDS = [
    StageCommand(("sft",), "sft", "Supervised fine-tuning: cross-entropy on response tokens (prompt masked), "
                 "full or LoRA.", _sft),
    StageCommand(("generate",), "generate", "Sample K responses per prompt and write completions.jsonl (with "
                 "the sampling settings).", _generate,
                 flags={"output_dir": ["--output-dir"]}),  # -o: the completions file, as before
    StageCommand(("reward", "train"), "reward", "Train a Bradley–Terry reward model on preference pairs; writes "
                 "the model, eval.json, metrics.", _reward_train),
    StageCommand(("reward", "eval"), "rlhaif.reward.evaluate:run_reward_eval", "Accuracy, mean margin and "
                 "calibration of a reward model on a pairs file.", _json),
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
