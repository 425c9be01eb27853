"""Generation throughput: `rlhaif.generate.generate_completions` beside plain `model.generate`.

Same model, same prompts (the bundled demo prompts, chat template applied, left-padded), same sampling
settings and seed on both sides; batch 1 and batch 16; median of --reps repetitions, sides interleaved (who
goes first alternates) so a change in machine load hits both. New tokens are counted the same way on both
sides: up to and including the first EOS. Peak RSS of each side is taken in a fresh subprocess (one batch-16 run after loading).

The anchor: batch 1 is also run with llama.cpp (llama-cpp-python in .bench-venvs/llama-cpp, built by
``benchmarks/setup_peer_venvs.sh llama-cpp``; not a dependency of rlhaif) on the same GGUF file the built-in
model is de-quantized from, the same prompt token ids and --max-new-tokens tokens each (EOS ignored there), and
every side's batch-1 rate is printed as a share of the weight-read bound (bench_hw.py: half the measured copy
bandwidth over the fp32 weights' bytes).

    python benchmarks/bench_generate.py --reps 3 --max-new-tokens 64 --threads 1
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from rlhaif.generate import SamplingConfig, generate_completions, read_prompts
from rlhaif.models.loading import load_causal_lm
from rlhaif.tokens import encode_prompts, eos_ids, left_pad

PROMPTS = Path(__file__).resolve().parents[1] / "src/rlhaif/assets/prompts/demo_prompts.jsonl"


def plain_generate(model, tok, prompts, sampling: SamplingConfig, batch_size: int, seed: int) -> tuple[int, list]:
    """What a user would write with transformers alone: tokenize with the chat template, left-pad, generate."""
    torch.manual_seed(seed)
    eos = eos_ids(tok, model)
    enc = encode_prompts(tok, [p.prompt for p in prompts])
    n_tokens, outs = 0, []
    with torch.no_grad():
        for start in range(0, len(enc), batch_size):
            ids, mask = left_pad(enc[start:start + batch_size], tok.pad_token_id)
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=sampling.max_new_tokens,
                                 do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p,
                                 top_k=sampling.top_k, pad_token_id=tok.pad_token_id, eos_token_id=eos,
                                 use_cache=True)
            for row in out[:, ids.shape[1]:].tolist():
                cut = next((i + 1 for i, t in enumerate(row) if t in eos), len(row))
                n_tokens += cut
                outs.append(tok.decode(row[:cut], skip_special_tokens=True).strip())
    return n_tokens, outs


def rlhaif_generate(model, tok, prompts, sampling, batch_size, seed) -> tuple[int, list]:
    recs, stats = generate_completions(model, tok, prompts, 1, sampling, batch_size=batch_size, seed=seed)
    return stats["new_tokens"], [r.response for r in recs]


SIDES = {"rlhaif": rlhaif_generate, "plain": plain_generate}


def rss_mode(args) -> None:
    torch.set_num_threads(args.threads) if args.threads else None
    model, tok = load_causal_lm(args.model)
    prompts = read_prompts(PROMPTS)[:16]
    SIDES[args.rss_side](model, tok, prompts, SamplingConfig(max_new_tokens=args.max_new_tokens), 16, 0)
    print(json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def anchor(args, model, tok, prompts, batch1: dict[str, float]) -> None:
    """llama.cpp at batch 1 on the same prompts, and every side as a share of the weight-read bound."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_hw import copy_bandwidth, gguf_path, llama_cpp_rate, weight_bytes

    bound = copy_bandwidth(3) / 2 * 1e9 / weight_bytes(model)
    print(f"weight-read bound at batch 1 (fp32): {bound:.1f} tokens/s", flush=True)
    for side, r in batch1.items():
        print(f"  {side} batch 1: {r:.1f} tokens/s = {r / bound:.0%} of the bound", flush=True)
    if args.model != "smollm2-135m-instruct":
        print("llama.cpp anchor: only for the built-in smollm2-135m-instruct (its GGUF)")
        return
    enc = encode_prompts(tok, [p.prompt for p in prompts])
    rates = [llama_cpp_rate(gguf_path(), ids, args.max_new_tokens, args.threads or torch.get_num_threads())
             for ids in enc]
    if any(r is None for r in rates):
        print("llama.cpp anchor: .bench-venvs/llama-cpp missing (benchmarks/setup_peer_venvs.sh llama-cpp)")
        return
    med = statistics.median(r["tokens_per_s"] for r in rates)
    size = Path(gguf_path()).stat().st_size / weight_bytes(model)
    print(f"llama.cpp (Q4_1 GGUF) batch 1, same {len(enc)} prompts x {args.max_new_tokens} tokens: median "
          f"{med:.1f} tokens/s = {med / bound:.0%} of the fp32 bound (its file is {size:.2f}x the fp32 weights' "
          f"bytes); rlhaif / llama.cpp {batch1['rlhaif'] / med:.2f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch1-prompts", type=int, default=4, help="prompts generated one at a time at batch 1")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--rss-side", choices=list(SIDES), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_side:
        return rss_mode(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    sampling = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=0.7, top_p=1.0, top_k=0)
    model, tok = load_causal_lm(args.model)
    all_prompts = read_prompts(PROMPTS)
    print(f"model={args.model} threads={torch.get_num_threads()} max_new_tokens={args.max_new_tokens} "
          f"temperature={sampling.temperature} reps={args.reps}", flush=True)
    SIDES["plain"](model, tok, all_prompts[:2], SamplingConfig(max_new_tokens=8), 2, 0)  # warm-up
    results = {}
    for batch, prompts in ((1, all_prompts[:args.batch1_prompts]), (16, all_prompts[:16])):
        times = {s: [] for s in SIDES}
        for rep in range(args.reps):
            order = list(SIDES) if rep % 2 == 0 else list(SIDES)[::-1]  # alternate who runs first
            for side in order:
                fn = SIDES[side]
                t0 = time.perf_counter()
                n, outs = fn(model, tok, prompts, sampling, batch, seed=rep)
                times[side].append(n / (time.perf_counter() - t0))
                results.setdefault((batch, rep), {})[side] = outs
            same = results[(batch, rep)]["rlhaif"] == results[(batch, rep)]["plain"]
            print(f"batch {batch:2d} rep {rep}: " + "  ".join(f"{s} {times[s][-1]:.1f} tok/s" for s in SIDES)
                  + f"  identical outputs: {same}", flush=True)
        med = {s: statistics.median(v) for s, v in times.items()}
        print(f"batch {batch:2d} ({len(prompts)} prompts x {args.max_new_tokens} new tokens): median tokens/s "
              f"rlhaif {med['rlhaif']:.1f}  plain {med['plain']:.1f}  ratio rlhaif/plain "
              f"{med['rlhaif'] / med['plain']:.3f}", flush=True)
        if batch == 1:
            batch1 = med
    anchor(args, model, tok, all_prompts[:args.batch1_prompts], batch1)
    for side in SIDES:
        cmd = [sys.executable, __file__, "--rss-side", side, "--model", args.model,
               "--max-new-tokens", str(args.max_new_tokens), "--threads", str(args.threads)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        print(f"peak RSS {side} (load + batch 16): {json.loads(out)['peak_rss_mib']:.0f} MiB", flush=True)


if __name__ == "__main__":
    main()
