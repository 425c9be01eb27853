"""Score an evaluation's samples with another scorer and report the paired per-prompt gain of one model over
another with a bootstrap 95 % interval: e.g. a helpfulness check of a run whose gold scorer rewards harmlessness.

    python benchmarks/cross_score.py runs/demo-hh/evaluate runs/demo/gold_rm --model rl --against sft
"""

from __future__ import annotations

import argparse
import json
import os
import statistics as st
from collections import defaultdict

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # as the CLI: no weight-loading bars in the output
from rlhaif.evaluate.metrics import bootstrap_mean_ci  # noqa: E402
from rlhaif.scorers import load_scorer  # noqa: E402


def per_prompt_scores(samples: str, score) -> dict[str, float]:
    rows = [json.loads(line) for line in open(samples)]
    values = score([r["prompt"] for r in rows], [r["response"] for r in rows])
    by_prompt = defaultdict(list)
    for r, v in zip(rows, values):
        by_prompt[r["prompt_id"]].append(float(v))
    return {k: st.mean(v) for k, v in by_prompt.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("evaluate_dir", help="an `rlhaif evaluate` output folder (with samples/<model>.jsonl)")
    ap.add_argument("scorer", help="scorer spec (rlhaif.scorers): a reward-model folder, classifier:..., python:...")
    ap.add_argument("--model", default="rl")
    ap.add_argument("--against", default="sft")
    ap.add_argument("--rounds", type=int, default=2000)
    a = ap.parse_args()
    score = load_scorer(a.scorer)
    mine, ref = (per_prompt_scores(f"{a.evaluate_dir}/samples/{m}.jsonl", score) for m in (a.model, a.against))
    diff = [mine[k] - ref[k] for k in sorted(mine)]
    lo, hi = bootstrap_mean_ci(diff, a.rounds)
    print(f"{a.model} over {a.against} by {a.scorer}: {st.mean(diff):+.3f} [{lo:+.3f}, {hi:+.3f}] "
          f"(paired over {len(diff)} prompts, {a.rounds} bootstrap rounds)")


if __name__ == "__main__":
    main()
