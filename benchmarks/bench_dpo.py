"""Benchmark: `rlhaif dpo` vs TRL's current DPOTrainer (1.16, in .bench-venvs/trl-current), in one run.

Same model, same hh-rlhf pairs (1 epoch: --pairs = --steps × --batch), batch, max length, dtype (float32), β,
learning rate, full fine-tuning or LoRA, one torch thread per side by default. Reference handling is like with
like: by default both sides precompute the reference log-probabilities once before training (rlhaif's
`reference: precompute`, TRL's `precompute_ref_log_probs=True`); --lora compares the on-the-fly reference with the
adapter disabled on both sides. --trl-ref-model adds TRL's default full fine-tuning set-up (a second model
copy run every step) as an extra side.

Each side runs in a fresh subprocess (so peak RSS is per side) and times the same span: model load, data
preparation, reference log-probs and training (rlhaif also writes its final checkpoint and model; TRL saves
nothing); "loop" is the training loop alone, after the reference pass. Repetitions alternate which side goes first; the medians and the ratio are printed at the end.

    python benchmarks/bench_dpo.py --model random-llama-7m --steps 4 --batch 8 --max-length 256 --reps 3

The TRL side is this same file run by the TRL venv's python with --side trl.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HH = ROOT.parent / "shared" / "data" / "hh-rlhf" / "harmless-base-test-first1800.jsonl.gz"
TRL_PY = ROOT / ".bench-venvs" / "trl-current" / "bin" / "python"
LORA_R, LORA_ALPHA = 16, 32


def prepare(work: Path, model: str, n_pairs: int) -> tuple[str, str, str]:
    """(model folder, rlhaif pairs file, TRL conversational file) from the shared hh-rlhf pairs."""
    import torch
    from rlhaif.data.formats import read_hh_rlhf, write_trl
    from rlhaif.data.io import write_records
    from rlhaif.models.loading import load_causal_lm

    pairs = read_hh_rlhf(HH, limit=n_pairs, skip_invalid=True)
    ours, theirs = work / "pairs.jsonl", work / "trl.jsonl"
    write_records(ours, pairs)
    write_trl(theirs, pairs, conversational=True)
    base, tok = load_causal_lm("smollm2-135m-instruct")
    if model != "smollm2-135m-instruct":  # SmolLM2's tokenizer and chat template, a small random Llama
        from transformers import AutoModelForCausalLM, LlamaConfig

        hidden, layers = {"random-llama-7m": (128, 4), "random-llama-tiny": (64, 2)}[model]
        cfg = LlamaConfig(vocab_size=base.config.vocab_size, hidden_size=hidden, intermediate_size=4 * hidden,
                          num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                          max_position_embeddings=2048, tie_word_embeddings=True,
                          bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        torch.manual_seed(0)
        base = AutoModelForCausalLM.from_config(cfg)
    folder = work / "model"
    base.save_pretrained(folder)
    tok.save_pretrained(folder)
    n = sum(p.numel() for p in base.parameters())
    print(f"model {model}: {n / 1e6:.1f}M parameters, {len(pairs)} hh-rlhf pairs", flush=True)
    return str(folder), str(ours), str(theirs)


def report(side: str, a, t0: float, c0: float, mean_loss: float, train_seconds: float) -> None:
    print(json.dumps({"side": side, "seconds": time.perf_counter() - t0, "pairs": a.steps * a.batch,
                      "train_seconds": train_seconds,
                      "cpu_seconds": time.process_time() - c0, "mean_loss": mean_loss,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def rlhaif_side(a) -> None:
    """One `run_dpo` in this process; prints one JSON line."""
    from rlhaif.policy.dpo import DPOConfig, run_dpo

    with tempfile.TemporaryDirectory() as out:
        cfg = DPOConfig(model=a.model_dir, pairs=a.data, eval_fraction=0.0, output_dir=out,
                        lora_r=LORA_R if a.lora else 0, lora_alpha=LORA_ALPHA,
                        reference="adapter" if a.lora else "precompute",
                        max_length=a.max_length, batch_size=a.batch, max_steps=a.steps, learning_rate=a.lr,
                        beta=a.beta, save_every=10**6, seed=0)
        t0, c0 = time.perf_counter(), time.process_time()
        run_dpo(cfg)
        rows = [json.loads(line) for line in open(Path(out) / "metrics.jsonl")]
        rows = [r for r in rows if "dpo/loss" in r]
        # metrics.jsonl "time" counts from the start of the loop (after the reference pass) to each step's end
        report("rlhaif", a, t0, c0, statistics.mean(r["dpo/loss"] for r in rows), rows[-1]["time"])


def trl_side(a) -> None:
    """One DPOTrainer.train() in this process (inside the TRL venv); prints one JSON line."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    rows = [json.loads(line) for line in open(a.data)]
    t0, c0 = time.perf_counter(), time.process_time()
    model = AutoModelForCausalLM.from_pretrained(a.model_dir, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(a.model_dir)
    peft_config = None
    if a.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=0.0, target_modules="all-linear",
                                 task_type="CAUSAL_LM")
    with tempfile.TemporaryDirectory() as out:
        cfg = DPOConfig(output_dir=out, per_device_train_batch_size=a.batch, max_steps=a.steps, learning_rate=a.lr,
                        beta=a.beta, max_length=a.max_length, gradient_checkpointing=False,
                        precompute_ref_log_probs=not (a.lora or a.trl_ref_model),
                        precompute_ref_batch_size=16, report_to="none", save_strategy="no", logging_steps=1,
                        use_cpu=True, bf16=False, seed=0, lr_scheduler_type="linear", warmup_steps=0,
                        max_grad_norm=1.0, weight_decay=0.0, disable_tqdm=True)
        trainer = DPOTrainer(model, args=cfg, train_dataset=Dataset.from_list(rows), processing_class=tok,
                             peft_config=peft_config)
        t1 = time.perf_counter()  # the reference pass ran in DPOTrainer.__init__
        result = trainer.train()
        train_seconds = time.perf_counter() - t1
    report("trl", a, t0, c0, result.training_loss, train_seconds)


def run_side(cmd: list[str]) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "TQDM_DISABLE": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="random-llama-7m",
                    choices=["random-llama-tiny", "random-llama-7m", "smollm2-135m-instruct"])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--lora", action="store_true", help="LoRA r=16 on both sides, reference = adapter disabled")
    ap.add_argument("--trl-ref-model", action="store_true", help="add TRL with a reference model copy as a side")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per side")
    ap.add_argument("--side", choices=["rlhaif", "trl"], help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.side:
        import torch

        torch.set_num_threads(a.threads)
        return rlhaif_side(a) if a.side == "rlhaif" else trl_side(a)
    if not TRL_PY.exists():
        sys.exit(f"TRL venv missing: {TRL_PY} (run benchmarks/setup_peer_venvs.sh)")
    common = ["--steps", str(a.steps), "--batch", str(a.batch), "--max-length", str(a.max_length), "--beta",
              str(a.beta), "--lr", str(a.lr), "--threads", str(a.threads)] + (["--lora"] if a.lora else [])
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, ours, theirs = prepare(Path(tmp), a.model, a.steps * a.batch)
        sides = {"rlhaif": [sys.executable, __file__, "--side", "rlhaif", "--model-dir", model_dir, "--data", ours],
                 "trl": [str(TRL_PY), __file__, "--side", "trl", "--model-dir", model_dir, "--data", theirs]}
        if a.trl_ref_model:
            sides["trl-ref-model"] = sides["trl"] + ["--trl-ref-model"]
        for rep in range(a.reps):  # alternate who goes first, so load on the machine hits both sides alike
            names = list(sides) if rep % 2 == 0 else list(reversed(sides))
            for name in names:
                r = run_side(sides[name] + common)
                results.setdefault(name, []).append(r)
                print(f"rep {rep + 1} {name:14s} {r['pairs'] / r['seconds']:7.3f} pairs/s {r['seconds']:7.1f} s "
                      f"{r['pairs'] / r['cpu_seconds']:7.3f} pairs/CPU-s  loop {r['pairs'] / r['train_seconds']:7.3f} "
                      f"pairs/s  peak RSS {r['peak_rss_mb']:6.0f} MB  mean loss {r['mean_loss']:.4f}", flush=True)
    med = {k: {"pairs_per_s": statistics.median(r["pairs"] / r["seconds"] for r in v),
               "pairs_per_cpu_s": statistics.median(r["pairs"] / r["cpu_seconds"] for r in v),
               "loop_pairs_per_s": statistics.median(r["pairs"] / r["train_seconds"] for r in v),
               "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in v)} for k, v in results.items()}
    print(f"\nmedians of {a.reps}: " + json.dumps({k: {m: round(x, 3) for m, x in v.items()} for k, v in med.items()}))
    for k in med:
        if k != "rlhaif":
            print(f"rlhaif / {k}: {med['rlhaif']['pairs_per_s'] / med[k]['pairs_per_s']:.2f}x pairs/s (wall), "
                  f"{med['rlhaif']['pairs_per_cpu_s'] / med[k]['pairs_per_cpu_s']:.2f}x pairs per CPU-second, "
                  f"{med['rlhaif']['loop_pairs_per_s'] / med[k]['loop_pairs_per_s']:.2f}x in the training loop alone, "
                  f"peak RSS {med['rlhaif']['peak_rss_mb'] / med[k]['peak_rss_mb']:.2f}x")


if __name__ == "__main__":
    main()
