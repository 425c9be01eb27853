"""How well does a reward model agree with the gold scorer on an evaluation's held-out answers?

Reads the per-response samples that `rlhaif evaluate` writes (<evaluate dir>/samples/<model>.jsonl, each with
its `gold` score), scores every response with each reward model given, and prints the Pearson correlation of
its scores with the gold scores, overall and by policy model. Used to choose the demo's proxy reward-model
settings (BENCHMARKS.md, "`rlhaif demo` end to end").

    OMP_NUM_THREADS=1 python benchmarks/proxy_vs_gold.py --evaluate runs/demo/evaluate \
        --reward-models runs/demo/round1/proxy_rm /tmp/other_proxy
    python benchmarks/proxy_vs_gold.py --evaluate runs/demo-hh/rules_eval \
        --reward-models runs/demo-hh/round1/proxy_harmless --gold harmless
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--evaluate", required=True, help="An evaluate stage's output folder (with samples/).")
    ap.add_argument("--reward-models", nargs="+", required=True, help="Reward model folders to compare.")
    ap.add_argument("--gold", default="gold", help="The samples' field to compare with: 'gold', or the name of one "
                                                   "of the evaluation's gold_scorers (e.g. harmless).")
    args = ap.parse_args()

    from rlhaif.reward.model import load_reward_model

    rows = []
    for f in sorted((Path(args.evaluate) / "samples").glob("*.jsonl")):
        rows += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    if not rows or args.gold not in rows[0]:
        raise SystemExit(f"{args.evaluate}/samples: no samples with a '{args.gold}' score (run evaluate with a gold "
                         f"scorer, or give --gold one of its gold_scorers)")
    gold = np.array([r[args.gold] for r in rows])
    policy = np.array([r["model"] for r in rows])
    for path in args.reward_models:
        rm = load_reward_model(path)
        s = np.array(rm.score([r["prompt"] for r in rows], [r["response"] for r in rows]))
        by = {m: round(float(np.corrcoef(s[policy == m], gold[policy == m])[0, 1]), 3) for m in sorted(set(policy))}
        print(json.dumps({"reward_model": path, "responses": len(rows),
                          "pearson_r_with_gold": round(float(np.corrcoef(s, gold)[0, 1]), 3), "by_policy_model": by}))


if __name__ == "__main__":
    main()
