"""The overoptimization study's tables (docs/overoptimization.md) from its run folder: for each RL arm, proxy
score, gold score and KL to the reference over training (means of step windows, from its metrics.jsonl), its
wall time, and the held-out paired gains over the reference model from the study's evaluation report.

    python benchmarks/study_table.py runs/demo                # after `rlhaif run study-overoptimization --run-dir runs/demo`
    python benchmarks/study_table.py runs/study --arms ppo rloo grpo --window 4
"""

from __future__ import annotations

import argparse
import json
import random
import statistics as st
from itertools import combinations
from pathlib import Path

from rlhaif.evaluate.metrics import paired_difference, per_prompt_means
from rlhaif.evaluate.report import window_means


def read_metrics(path: Path) -> list[dict]:
    """The per-step rows of a metrics.jsonl (rows with a `step` and an `objective/score`)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if "step" in r and "objective/score" in r]


def curve_table(run_dir: Path, arms: list[str], window: int) -> str:
    by_arm = {arm: read_metrics(run_dir / "round1" / arm / "metrics.jsonl") for arm in arms
              if (run_dir / "round1" / arm / "metrics.jsonl").is_file()}
    n = min(len(rows) for rows in by_arm.values()) // window
    lines = ["| arm | steps | wall s | " + " | ".join(f"steps {i * window + 1}–{(i + 1) * window}" for i in range(n))
             + " |", "|---" * (3 + n) + "|"]
    for arm, rows in by_arm.items():
        # the one proxy: the reward itself, or watching where the arm optimizes something else (an ensemble)
        proxy = "monitor/proxy" if rows and "monitor/proxy" in rows[0] else "objective/score"
        for key, name in ((proxy, "proxy"), ("monitor/gold", "gold"), ("objective/kl", "KL")):
            if not all(key in r for r in rows):  # e.g. no KL in a kl_free run
                continue
            means = [y for _, y in window_means([(r["step"], r[key]) for r in rows], window)[:n]]
            lines.append(f"| {arm} {name} | {len(rows)} | {rows[-1]['time']:.0f} | "
                         + " | ".join(f"{m:.2f}" if name == "KL" else f"{m:+.3f}" for m in means) + " |")
    return "\n".join(lines)


def gains_table(report: dict) -> str:
    kl = {m: v["kl"]["mean"] for m, v in report["models"].items() if "kl" in v}
    lines = ["| model over " + report["reference"] + " | gold [95 % CI] | proxy [95 % CI] | length, tokens | KL, nats |",
             "|---|---|---|---|---|"]
    by = {}
    for p in report["paired"]:
        if p["against"] == report["reference"]:
            by.setdefault(p["model"], {})[p["kind"]] = p
    for model, kinds in by.items():
        cells = [f"{kinds[k]['mean']:+.3f} [{kinds[k]['low']:+.3f}, {kinds[k]['high']:+.3f}]" for k in ("gold", "proxy")]
        cells.append(f"{kinds['length']['mean']:+.1f} [{kinds['length']['low']:+.1f}, {kinds['length']['high']:+.1f}]")
        lines.append(f"| {model} | " + " | ".join(cells) + f" | {kl.get(model, float('nan')):.2f} |")
    any_gold = next(iter(by.values()))["gold"]
    lines.append(f"\n{any_gold['prompts']} prompts × {any_gold['samples_per_prompt']} samples; detectable gold gain "
                 f"at 80 % power: {any_gold['mde']:.3f}")
    return "\n".join(lines)


def read_samples(eval_dir: Path, model: str) -> list[dict]:
    """An evaluation's samples of one model, in its order (prompts in file order, k samples each)."""
    return [json.loads(line) for line in (eval_dir / "samples" / f"{model}.jsonl").read_text().splitlines() if line]


def length_controlled(mine: list[dict], ref: list[dict], k: int, rounds: int = 2000) -> tuple[float, float, float]:
    """The gold gain at equal length: the intercept of the per-prompt gold difference regressed on the
    per-prompt length difference (tokens), with a bootstrap 95 % interval over prompts."""
    def per_prompt(rows, key):
        return per_prompt_means([r[key] for r in rows], k)

    dg = [a - b for a, b in zip(per_prompt(mine, "gold"), per_prompt(ref, "gold"))]
    dl = [a - b for a, b in zip(per_prompt(mine, "tokens"), per_prompt(ref, "tokens"))]

    def intercept(idx):
        x, y = [dl[i] for i in idx], [dg[i] for i in idx]
        mx, my = st.mean(x), st.mean(y)
        sxx = sum((v - mx) ** 2 for v in x)
        slope = sum((a - mx) * (b - my) for a, b in zip(x, y)) / sxx if sxx else 0.0
        return my - slope * mx

    rng = random.Random(0)
    n = len(dg)
    boot = sorted(intercept([rng.randrange(n) for _ in range(n)]) for _ in range(rounds))
    return intercept(range(n)), boot[int(0.025 * rounds)], boot[int(0.975 * rounds) - 1]


def pairs_table(eval_dir: Path, report: dict, arms: list[str]) -> str:
    """Each arm against each other arm (paired per prompt, gold and proxy), and each arm's gold gain over the
    reference at equal length."""
    k = report["paired"][0]["samples_per_prompt"]
    samples = {m: read_samples(eval_dir, m) for m in [*arms, report["reference"]]}
    lines = ["| paired | gold [95 % CI] | proxy [95 % CI] |", "|---|---|---|"]
    for a, b in combinations(arms, 2):
        cells = []
        for kind in ("gold", "proxy"):
            d = paired_difference([r[kind] for r in samples[a]], [r[kind] for r in samples[b]], k)
            cells.append(f"{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]")
        lines.append(f"| {a} over {b} | " + " | ".join(cells) + " |")
    lines += ["", f"| over {report['reference']}, at equal length | gold [95 % CI] |", "|---|---|"]
    for a in arms:
        est, lo, hi = length_controlled(samples[a], samples[report["reference"]], k)
        lines.append(f"| {a} | {est:+.3f} [{lo:+.3f}, {hi:+.3f}] |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--arms", nargs="+", default=["ppo", "rloo", "grpo", "rloo_ensemble"])
    ap.add_argument("--window", type=int, default=4, help="steps per column of the training table")
    ap.add_argument("--eval", default="study_eval", help="the evaluate stage's folder name")
    a = ap.parse_args()
    print(curve_table(a.run_dir, a.arms, a.window))
    report_path = a.run_dir / a.eval / "report.json"
    if report_path.exists():
        print()
        report = json.loads(report_path.read_text())
        print(gains_table(report))
        print()
        print(pairs_table(report_path.parent, report, [m for m in a.arms if m in report["models"]]))


if __name__ == "__main__":
    main()
