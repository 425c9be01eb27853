"""Reward-model training speed: rlhaif `run_reward_train` vs TRL 1.16 `RewardTrainer`, same model and pairs.

    python benchmarks/bench_reward.py [--pairs 256] [--reps 3]

Both sides train the same random Llama-architecture sequence-classification model (saved once to a temp
folder, word-level tokenizer), on the same pairs, batch size, max length (no pair is truncated), fp32, one
epoch, in separate subprocesses (TRL in .bench-venvs/trl-current). Reported: pairs/s over the training loop
(rlhaif: the metrics.jsonl clock at the last step; TRL: `train_runtime`) and peak RSS of the process.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRL_PY = ROOT / ".bench-venvs" / "trl-current" / "bin" / "python"


def make_inputs(d: Path, n_pairs: int) -> None:
    from rlhaif.models.tiny import WORDS, save_tiny

    save_tiny(d / "model", "llama", seed=0, reward=True, hidden=256, layers=4, heads=8)
    rng = random.Random(0)
    words = [w for w in WORDS if w.isalpha()]
    line = lambda n: " ".join(rng.choice(words) for _ in range(n))
    rows = [{"prompt": line(24), "chosen": line(32), "rejected": line(32)} for _ in range(n_pairs)]
    (d / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def worker(side: str, d: Path, batch: int, max_length: int) -> None:
    out = Path(tempfile.mkdtemp(dir=d))
    if side == "rlhaif":
        from rlhaif.reward.train import RewardTrainConfig, run_reward_train

        run_reward_train(RewardTrainConfig(data=str(d / "pairs.jsonl"), backbone=str(d / "model"), output_dir=str(out),
                                           batch_size=batch, max_length=max_length, learning_rate=1e-4, epochs=1,
                                           eval_fraction=0.0, normalize=False, save_steps=0, text_format="chat"))
        rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
        # the clock starts at the logger; subtract nothing: first step included, same as TRL's train_runtime
        runtime = rows[-1]["time"]
    else:
        from datasets import load_dataset
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        from trl import RewardConfig, RewardTrainer

        ds = load_dataset("json", data_files=str(d / "pairs.jsonl"), split="train")
        model = AutoModelForSequenceClassification.from_pretrained(d / "model", num_labels=1)
        tok = AutoTokenizer.from_pretrained(d / "model")
        args = RewardConfig(output_dir=str(out), per_device_train_batch_size=batch, max_length=max_length,
                            learning_rate=1e-4, num_train_epochs=1, logging_steps=1, save_strategy="no",
                            report_to=[], use_cpu=True, bf16=False, fp16=False, dataloader_num_workers=0,
                            disable_dropout=True)
        trainer = RewardTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
        runtime = trainer.train().metrics["train_runtime"]
    n = sum(1 for _ in open(d / "pairs.jsonl"))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"side": side, "runtime": runtime, "pairs_per_s": n / runtime, "peak_rss_mb": peak_mb}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--worker", choices=["rlhaif", "trl"])
    ap.add_argument("--dir")
    a = ap.parse_args()
    if a.worker:
        return worker(a.worker, Path(a.dir), a.batch, a.max_length)
    d = Path(tempfile.mkdtemp(prefix="bench-reward-"))
    make_inputs(d, a.pairs)
    results: dict[str, list[dict]] = {"rlhaif": [], "trl": []}
    for rep in range(a.reps):
        for side, py in (("rlhaif", sys.executable), ("trl", str(TRL_PY))):  # interleaved: same load on both
            cmd = [py, __file__, "--worker", side, "--dir", str(d), "--batch", str(a.batch),
                   "--max-length", str(a.max_length)]
            res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            if res.returncode:
                sys.exit(f"{side} failed:\n{res.stderr[-3000:]}")
            results[side].append(json.loads(res.stdout.strip().splitlines()[-1]))
            print(side, rep, results[side][-1], flush=True)
    med = {s: {k: statistics.median(r[k] for r in rs) for k in ("pairs_per_s", "peak_rss_mb")} for s, rs in results.items()}
    print(json.dumps(med, indent=2))
    print(f"speed ratio rlhaif/trl: {med['rlhaif']['pairs_per_s'] / med['trl']['pairs_per_s']:.2f}x; "
          f"peak RSS rlhaif/trl: {med['rlhaif']['peak_rss_mb'] / med['trl']['peak_rss_mb']:.2f}")


if __name__ == "__main__":
    main()
