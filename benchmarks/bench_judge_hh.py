"""Agreement of the AI judge with human labels on the shared hh-rlhf pairs (harmless-base test, first 1,800).

For every pair the judge answers the multiple-choice question in both orders (human-chosen response shown
as (A), then as (B)), with one principle of the default constitution drawn at random per pair. Reported:

- accuracy with one order: chosen shown as (A), chosen shown as (B), and their mean (what a judge that
  scores one random order gets on average);
- accuracy with both orders averaged (p = ½[P(A|chosen first) + P(B|chosen second)]);
- position bias: share of the 2·N single-order judgments that prefer (A);
- order consistency: share of pairs where both orders pick the same response.
A probability of exactly 0.5 counts as half right.

Results are appended per chunk to <out>/judgments.jsonl, so the run can be stopped and resumed, and
``--summarize`` reports whatever has finished.

    OMP_NUM_THREADS=1 python benchmarks/bench_judge_hh.py --n 1800 --out /tmp/bench_judge --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/data/hh-rlhf/harmless-base-test-first1800.jsonl.gz"


def summarize(rows: list[dict]) -> dict:
    def acc(ps):
        return sum(1.0 if p > 0.5 else 0.5 if p == 0.5 else 0.0 for p in ps) / len(ps)

    n = len(rows)
    a_first = acc([r["p_ab"] for r in rows])  # P(chosen) when chosen is (A)
    b_first = acc([1 - r["p_ba"] for r in rows])  # P(chosen) when chosen is (B)
    return {"pairs": n, "acc_chosen_as_A": round(a_first, 4), "acc_chosen_as_B": round(b_first, 4),
            "acc_one_order_mean": round((a_first + b_first) / 2, 4),
            "acc_both_orders": round(acc([r["p"] for r in rows]), 4),
            "position_bias_share_A": round(sum((r["p_ab"] > 0.5) + (r["p_ba"] > 0.5) for r in rows) / (2 * n), 4),
            "order_consistency": round(sum((r["p_ab"] > 0.5) == (r["p_ba"] < 0.5) for r in rows) / n, 4),
            "mean_p_chosen": round(sum(r["p"] for r in rows) / n, 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--n", type=int, default=1800)
    ap.add_argument("--out", default="/tmp/bench_judge_hh")
    ap.add_argument("--max-length", type=int, default=384)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--chunk", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--summarize", action="store_true", help="only report the judgments already written")
    args = ap.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "judgments.jsonl"
    from rlhaif.data.io import append_jsonl, read_jsonl_tolerant

    done = list({r["i"]: r for r in reversed(read_jsonl_tolerant(log))}.values())  # one row per pair index
    if not args.summarize:
        import torch

        from rlhaif.data.formats import read_hh_rlhf
        from rlhaif.feedback.ai.backends import HFBackend
        from rlhaif.feedback.ai.constitution import load_constitution
        from rlhaif.feedback.ai.judge import judge_pairs
        from rlhaif.models.loading import load_causal_lm

        if args.threads:
            torch.set_num_threads(args.threads)
        pairs = read_hh_rlhf(args.data, limit=args.n, skip_invalid=True)
        rng = random.Random(args.seed)
        constitution = load_constitution()
        principles = [constitution.sample_principle(rng) for _ in pairs]
        model, tok = load_causal_lm(args.model)
        backend = HFBackend(model, tok, name=args.model, max_length=args.max_length, batch_size=args.batch_size)
        have = {r["i"] for r in done}
        todo = [i for i in range(len(pairs)) if i not in have]
        start = len(done)
        t0 = time.time()
        for s in range(0, len(todo), args.chunk):
            idx = todo[s:s + args.chunk]
            judged = judge_pairs(backend, [(pairs[i].prompt, pairs[i].chosen, pairs[i].rejected, principles[i])
                                           for i in idx])
            for i, j in zip(idx, judged):
                row = {"i": i, "principle": principles[i].name, "p_ab": j.p_ab, "p_ba": j.p_ba, "p": j.p}
                append_jsonl(log, row)
                done.append(row)
            rate = (len(done) - start) / (time.time() - t0)
            print(f"{len(done)}/{len(pairs)} pairs, {rate:.2f} pairs/s, {json.dumps(summarize(done))}", flush=True)
    if not done:
        sys.exit("no judgments yet")
    done.sort(key=lambda r: r["i"])
    n_first = next((k for k, r in enumerate(done) if r["i"] != k), len(done))
    done = done[:n_first]  # report the first N pairs of the file, without gaps
    result = {"model": args.model, "data": Path(args.data).name, "max_length": args.max_length, **summarize(done)}
    (out / "summary.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
