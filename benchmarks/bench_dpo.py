"""Benchmark: `rlhaif dpo` vs TRL's current DPOTrainer (1.16, in .bench-venvs/trl-current), same model, pairs,
batch, max length, dtype (float32), β, learning rate and LoRA/full setting, in one run.

Each repetition runs each side in a fresh subprocess (so peak RSS is per side) and times the same span:
model load + data preparation + reference log-probs + training (rlhaif also writes its final checkpoint and
model; TRL saves nothing). Prints pairs/s and peak RSS per side, medians of --reps, and the ratio.

    python benchmarks/bench_dpo.py --model random-llama-7m --pairs 160 --steps 20 --batch 8 --max-length 256
    python benchmarks/bench_dpo.py --model smollm2-135m-instruct --lora --steps 6 --batch 4 --max-length 256
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HH = ROOT.parent / "shared" / "data" / "hh-rlhf" / "harmless-base-test-first1800.jsonl.gz"
TRL_PY = ROOT / ".bench-venvs" / "trl-current" / "bin" / "python"


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
    if model == "random-llama-7m":  # SmolLM2's tokenizer and chat template, a small random Llama (tied embeddings)
        from transformers import AutoModelForCausalLM, LlamaConfig

        cfg = LlamaConfig(vocab_size=base.config.vocab_size, hidden_size=128, intermediate_size=512,
                          num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
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


def rlhaif_worker(a) -> None:
    """One rlhaif run in this process; prints one JSON line."""
    import resource
    import time

    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    from rlhaif.policy.dpo import DPOConfig, run_dpo

    with tempfile.TemporaryDirectory() as out:
        cfg = DPOConfig(model=a.model_dir, pairs=a.pairs_file, eval_fraction=0.0, output_dir=out, lora=a.lora,
                        max_length=a.max_length, batch_size=a.batch, max_steps=a.steps, learning_rate=a.lr,
                        beta=a.beta, save_steps=10**6, seed=0)
        t0, c0 = time.perf_counter(), time.process_time()
        run_dpo(cfg)
        seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
        losses = [json.loads(line).get("dpo/loss") for line in open(Path(out) / "metrics.jsonl")]
    print(json.dumps({"side": "rlhaif", "seconds": seconds, "pairs": a.steps * a.batch,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "cpu_seconds": cpu_seconds,
                      "train_loss": statistics.mean(x for x in losses if x is not None)}))


def run_side(cmd: list[str]) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="random-llama-7m", choices=["random-llama-7m", "smollm2-135m-instruct"])
    ap.add_argument("--pairs", type=int, default=160)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--lora", action="store_true")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads per side (0 = torch's default)")
    ap.add_argument("--trl-precompute", action="store_true", help="also run TRL with precompute_ref_log_probs")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", help=argparse.SUPPRESS)
    ap.add_argument("--pairs-file", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return rlhaif_worker(a)
    if not TRL_PY.exists():
        sys.exit(f"TRL venv missing: {TRL_PY} (run benchmarks/setup_peer_venvs.sh)")
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, ours, theirs = prepare(Path(tmp), a.model, a.pairs)
        common = ["--steps", str(a.steps), "--batch", str(a.batch), "--max-length", str(a.max_length),
                  "--beta", str(a.beta), "--lr", str(a.lr), "--threads", str(a.threads)] + (["--lora"] if a.lora else [])
        sides = {"rlhaif": [sys.executable, __file__, "--worker", "--model-dir", model_dir, "--pairs-file", ours, *common],
                 "trl": [str(TRL_PY), str(Path(__file__).with_name("bench_dpo_trl.py")), "--model", model_dir,
                         "--data", theirs, *common]}
        if a.trl_precompute:
            sides["trl-precompute"] = sides["trl"] + ["--precompute"]
        results: dict[str, list[dict]] = {k: [] for k in sides}
        for rep in range(a.reps):  # interleaved, so load on the machine hits both sides alike
            for name, cmd in sides.items():
                r = run_side(cmd)
                results[name].append(r)
                print(f"rep {rep + 1} {name:15s} {r['pairs'] / r['seconds']:7.2f} pairs/s  "
                      f"{r['seconds']:7.1f} s  {r['pairs'] / r['cpu_seconds']:7.2f} pairs/CPU-s  peak RSS {r['peak_rss_mb']:7.0f} MB  mean loss {r['train_loss']:.4f}",
                      flush=True)
    med = {k: (statistics.median(r["pairs"] / r["seconds"] for r in v), statistics.median(r["peak_rss_mb"] for r in v),
               statistics.median(r["pairs"] / r["cpu_seconds"] for r in v)) for k, v in results.items()}
    print(f"\nmedians of {a.reps}: " + json.dumps({k: {"pairs_per_s": round(s, 3), "pairs_per_cpu_s": round(c, 3),
                                                      "peak_rss_mb": round(m)} for k, (s, m, c) in med.items()}))
    for k in med:
        if k != "rlhaif":
            print(f"rlhaif / {k}: {med['rlhaif'][0] / med[k][0]:.2f}x pairs/s (wall), "
                  f"{med['rlhaif'][2] / med[k][2]:.2f}x pairs per CPU-second, {med['rlhaif'][1] / med[k][1]:.2f}x peak RSS")


if __name__ == "__main__":
    main()
