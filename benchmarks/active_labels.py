"""Choosing what people label, measured: reward-model held-out accuracy against the number of labels bought,
random vs uncertainty vs disagreement selection (rlhaif.feedback.select), on the shared hh-rlhf pairs.

Records 1–1,500 of ``harmless-base-test-first1800`` are the pool, 1,501–1,800 are held out. The pool is a
``LabeledPool``: the selector sees the two responses in a seeded random order and never a label; a label is
revealed only when its pair is bought. Buying goes in rounds: ``--start`` random labels, then batches of
``--batch`` chosen by the rule with the newest reward model (label → retrain → select), until the largest
budget. Held-out accuracy is recorded at each budget of ``--budgets``.

The reward model here is a Bradley–Terry linear head on frozen all-MiniLM-L6-v2 embeddings of
"prompt + response" (mean-pooled, normalised), fitted by L-BFGS with an L2 penalty — cheap enough to retrain
every round on a CPU; the fine-tuned MiniLM reward model (BENCHMARKS.md) is stronger. Disagreement uses an
ensemble of ``--members`` heads fitted on bootstrap resamples of the bought labels; uncertainty the margin of
the head fitted on all of them. Each (rule, seed) starts from the same pool order and first random batch.

    OMP_NUM_THREADS=2 python benchmarks/active_labels.py --seeds 3 --out /tmp/active_labels
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HH = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh-rlhf" / "harmless-base-test-first1800.jsonl.gz"


def embed(texts: list[str], max_length: int, batch: int = 64):
    """Mean-pooled, L2-normalised MiniLM embeddings (numpy, one row per text)."""
    import torch

    from rlhaif.models.loading import load_tokenizer, resolve_model

    path, _ = resolve_model("minilm-l6")
    from transformers import AutoModel

    model = AutoModel.from_pretrained(path).eval()
    tok = load_tokenizer("minilm-l6", padding_side="right")
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), batch):
            enc = tok(texts[i:i + batch], truncation=True, max_length=max_length, padding=True, return_tensors="pt")
            h = model(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).float()
            v = (h * m).sum(1) / m.sum(1)
            out.append(torch.nn.functional.normalize(v, dim=-1))
            print(f"\rembedded {min(i + batch, len(texts))}/{len(texts)}", end="", file=sys.stderr)
    print(file=sys.stderr)
    return torch.cat(out).numpy()


def fit_head(diffs, weights=None, l2: float = 1e-2):
    """w minimising mean w_i·log(1 + exp(−w·d_i)) + l2·|w|² (d = φ(chosen) − φ(rejected)), by L-BFGS."""
    import numpy as np
    from scipy.optimize import minimize

    n = len(diffs)
    wts = np.ones(n) if weights is None else np.asarray(weights, dtype=float)

    def f(w):
        z = diffs @ w
        loss = (wts * np.logaddexp(0.0, -z)).sum() / wts.sum() + l2 * (w @ w)
        grad = -(diffs * (wts / (1.0 + np.exp(z)))[:, None]).sum(0) / wts.sum() + 2 * l2 * w
        return loss, grad

    return minimize(f, np.zeros(diffs.shape[1]), jac=True, method="L-BFGS-B").x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(HH))
    ap.add_argument("--pool", type=int, default=1500)
    ap.add_argument("--heldout", type=int, default=300)
    ap.add_argument("--budgets", default="100,200,400,800,1500")
    ap.add_argument("--start", type=int, default=50)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--members", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--rules", default="random,uncertainty,disagreement")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--l2", type=float, default=1e-2)
    ap.add_argument("--out", default="/tmp/active_labels")
    args = ap.parse_args()

    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from rlhaif.data.formats import read_pairs
    from rlhaif.data.records import prompt_text
    from rlhaif.evaluate.metrics import bootstrap_mean_ci
    from rlhaif.feedback.select import LabeledPool, select

    t0 = time.time()
    pairs = read_pairs(args.data, skip_invalid=True)
    pool_pairs, held = pairs[:args.pool], pairs[args.pool:args.pool + args.heldout]
    texts = sorted({prompt_text(p.prompt) + "\n" + t for p in pool_pairs + held for t in (p.chosen, p.rejected)})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = out / f"embeddings-{args.max_length}.npy"
    if cache.exists() and len(np.load(cache)) == len(texts):
        emb = np.load(cache)
    else:
        emb = embed(texts, args.max_length)
        np.save(cache, emb)
    row = {t: i for i, t in enumerate(texts)}

    def phi(prompt, response):
        return emb[row[prompt_text(prompt) + "\n" + response]]

    held_d = np.stack([phi(p.prompt, p.chosen) - phi(p.prompt, p.rejected) for p in held])
    budgets = [int(b) for b in args.budgets.split(",")]
    results = []
    for seed in range(args.seeds):
        for rule in args.rules.split(","):
            pool = LabeledPool(pool_pairs, seed=seed)
            rng = np.random.default_rng(seed)
            bought = pool.buy(select("random", pool.unasked(), args.start, seed=seed))
            curve = {}
            while True:
                d = np.stack([phi(p.prompt, p.chosen) - phi(p.prompt, p.rejected) for p in bought])
                w = fit_head(d, l2=args.l2)
                n = len(bought)
                if n in budgets:
                    correct = [float(x > 0) + 0.5 * float(x == 0) for x in held_d @ w]
                    lo, hi = bootstrap_mean_ci(correct, seed=seed)
                    curve[n] = {"accuracy": float(np.mean(correct)), "low": lo, "high": hi}
                    print(f"seed {seed} {rule:12s} {n:5d} labels: held-out accuracy {curve[n]['accuracy']:.3f} "
                          f"[{lo:.3f}, {hi:.3f}]  ({time.time() - t0:.0f} s)", flush=True)
                if n >= max(budgets):
                    break
                step = min(args.batch, min(b for b in budgets if b > n) - n)
                if rule == "random":
                    chosen = select("random", pool.unasked(), step, seed=seed * 1000 + n)
                else:
                    heads = [w]
                    if rule == "disagreement":
                        heads = [fit_head(d[rng.integers(0, n, n)], l2=args.l2) for _ in range(args.members)]

                    def member(h):
                        return lambda prompts, resp: [float(phi(p, r) @ h) for p, r in zip(prompts, resp)]
                    scorers = {f"head{k}": member(h) for k, h in enumerate(heads)}
                    chosen = select(rule, pool.unasked(), step, scorers, seed=seed * 1000 + n)
                bought += pool.buy(chosen)
            results.append({"seed": seed, "rule": rule, "curve": curve})
    (out / "results.json").write_text(json.dumps(results, indent=1))

    print("\nheld-out accuracy by labels bought (mean over seeds; min–max)")
    rules = args.rules.split(",")
    print("labels  " + "  ".join(f"{r:>22s}" for r in rules))
    table = {}
    for b in budgets:
        cells = []
        for r in rules:
            accs = [x["curve"][b]["accuracy"] for x in results if x["rule"] == r]
            table[(r, b)] = accs
            cells.append(f"{np.mean(accs):.3f} ({min(accs):.3f}–{max(accs):.3f})")
        print(f"{b:6d}  " + "  ".join(f"{c:>22s}" for c in cells))
    full = np.mean(table[("random", max(budgets))]) if "random" in rules else None
    if full is not None:
        for r in rules:
            reach = [b for b in budgets if np.mean(table[(r, b)]) >= full]
            print(f"{r}: reaches random's full-pool accuracy {full:.3f} first at "
                  f"{reach[0] if reach else 'none of the budgets'} labels"
                  + (f" ({reach[0] / max(budgets):.0%} of the pool)" if reach else ""))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for r in rules:
            m = [np.mean(table[(r, b)]) for b in budgets]
            ax.plot(budgets, m, marker="o", label=r)
            ax.fill_between(budgets, [min(table[(r, b)]) for b in budgets], [max(table[(r, b)]) for b in budgets],
                            alpha=0.15)
        ax.set_xscale("log")
        ax.set_xlabel("labels bought (hh-rlhf harmless-base pool of 1,500)")
        ax.set_ylabel("held-out accuracy (300 pairs)")
        ax.set_title("Which comparisons to buy: mean of seeds, band = min–max")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "active-labels.png", dpi=110)
        print(f"plot: {out / 'active-labels.png'}")
    except ImportError:
        pass
    print(f"wall {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
