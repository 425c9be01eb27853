"""What this CPU can do, and how close rlhaif's sampling and updates come to it.

Measures, in one process with --threads torch threads:
  roofline     a 2048² matrix product in fp32 and bf16 (GFLOP/s): the compute ceiling of each dtype
  bandwidth    a 256 MiB tensor copy (GB/s, read + write); half of it is the weight-read rate a decode step
               can reach, and weight bytes / read rate is the decode bound (tokens/s at batch B ≤ B × bound₁)
  lm head      8 × 576 @ 576 × 49,152 alone (GB/s of weights read), fp32 and bf16
  decode       SmolLM2-135M, one chat prompt, --new-tokens new tokens (EOS ignored, so every row runs the same
               length), batch 1/8/32, fp32 and bf16 weights: HF ``generate`` (plain sampling) and rlhaif's
               sampler (``rlhaif.policy.rollout.sample_responses``), tokens/s (prefill included; and the decode
               steps alone: the extra tokens of the long call over a 1-token call's, over the extra time) and
               the share of the batch's bound: the lower of the weight-read bound (B × weight-read rate / weight bytes)
               and the matmul roofline (the dtype's GFLOP/s / 2 × params FLOPs a token); with --baseline-rev
               also the sampler of that git revision, the sides interleaved --decode-reps times (medians: the
               A/B form for a loaded machine); bf16 also under autocast on fp32 weights
  llama.cpp    llama-cpp-python (.bench-venvs/llama-cpp, ``benchmarks/setup_peer_venvs.sh llama-cpp``), the
               same GGUF file (Q4_1) the built-in model is de-quantized from, batch 1, same prompt and length
  updates      one PPO update pass (``forward_response`` on ActorCritic, mini-batch 4, loss, backward) and one
               DPO pass (``pair_logprobs`` on 4 pairs, sigmoid loss, backward) on SmolLM2-135M, fp32 and
               autocast bf16: achieved GFLOP/s (matrix-product FLOPs counted as in ppo_flops.py) and the share
               of the roofline of the same dtype
  profile      (--profile) torch.profiler's top operators of one batch-1 and one batch-8 sampler run

    python benchmarks/bench_hw.py --threads 2
    python benchmarks/bench_hw.py --threads 2 --skip hf,llama,updates --baseline-rev 3983e8e --decode-reps 5
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
LLAMA_PY = ROOT / ".bench-venvs" / "llama-cpp" / "bin" / "python"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from ppo_flops import trunk_macs_per_token  # noqa: E402

PROMPT = "Write a short story about a cat who learns to swim."


CLOCK = time.perf_counter  # time.process_time under --clock cpu: every rate and bound in CPU seconds


def best_seconds(fn, reps: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(reps):
        t0 = CLOCK()
        fn()
        best = min(best, CLOCK() - t0)
    return best


def roofline(reps: int) -> dict[str, float]:
    out = {}
    for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(2048, 2048).to(dt), torch.randn(2048, 2048).to(dt)
        out[name] = 2 * 2048 ** 3 / best_seconds(lambda: a @ b, reps) / 1e9
    return out


def copy_bandwidth(reps: int) -> float:
    src = torch.ones(64 * 2 ** 20)  # 256 MiB fp32
    dst = torch.empty_like(src)
    return 2 * src.numel() * 4 / best_seconds(lambda: dst.copy_(src), reps) / 1e9


def lm_head_gbs(weight: torch.Tensor, reps: int) -> dict[str, float]:
    out = {}
    for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        w = weight.detach().to(dt).contiguous()
        x = torch.randn(8, w.shape[1]).to(dt)
        out[name] = w.numel() * w.element_size() / best_seconds(lambda: x @ w.T, reps) / 1e9
    return out


def weight_bytes(model) -> int:
    seen, n = set(), 0
    for p in model.parameters():  # the tied embedding / LM head once: the head reads all of it every step
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            n += p.numel() * p.element_size()
    return n


def param_count(model) -> int:
    """Parameters, the tied embedding / LM head once: a decode step does 2 × this many FLOPs a token."""
    return sum({p.data_ptr(): p.numel() for p in model.parameters()}.values())


def batch_bound(batch: int, bound1: float, roof_gflops: float, params: int) -> tuple[float, str]:
    """(tokens/s, which binds) the lower of the weight-read bound (``batch`` × ``bound1``, the batch-1 rate
    at which the weights can be read) and the matmul roofline (2 × params × batch FLOPs a step)."""
    compute = roof_gflops * 1e9 / (2 * params)
    return (batch * bound1, "weight reads") if batch * bound1 <= compute else (compute, "matmul roofline")


def sampler_at(rev: str):
    """``sample_responses`` as git revision ``rev`` wrote it (the A side of an A/B run), loaded from its
    source text into a module of its own."""
    import types

    src = subprocess.run(["git", "show", f"{rev}:src/rlhaif/policy/rollout.py"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    mod = types.ModuleType(f"rollout_{rev}")
    exec(compile(src, f"{rev}:rollout.py", "exec"), mod.__dict__)
    return mod.sample_responses


def distinct_rows(prompt_ids: list[int], batch: int) -> list[list[int]]:
    """``batch`` prompts of the same length that differ in their middle token: the sampler runs the prefill of
    identical prompts once, which would flatter it against HF ``generate`` here."""
    mid = len(prompt_ids) // 2
    return [prompt_ids[:mid] + [100 + (prompt_ids[mid] + i) % 10_000] + prompt_ids[mid + 1:] for i in range(batch)]


def decode_rate(kind: str, model, prompt_ids: list[int], batch: int, new_tokens: int, pad_id: int,
                autocast: bool = False, sampler=None) -> float:
    from rlhaif.policy.rollout import sample_responses

    sampler = sampler or sample_responses
    rows = distinct_rows(prompt_ids, batch)
    ids = torch.tensor(rows)

    def run(n):
        torch.manual_seed(0)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            if kind == "hf":
                model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                               min_new_tokens=n, do_sample=True, temperature=0.7, top_k=0, top_p=1.0,
                               pad_token_id=pad_id)
            else:
                sampler(model, rows, pad_id, [-1], n, 0.7)

    run(2)  # warm-up: a short run (kernels picked, caches allocated)
    t0 = CLOCK()
    run(1)  # the prompt's prefill and one token
    t1 = CLOCK()
    run(new_tokens)
    t2 = CLOCK()
    # (all new tokens over the whole call, prefill included; the decode steps alone: the extra tokens over the
    # extra time of the long call)
    return batch * new_tokens / (t2 - t1), batch * (new_tokens - 1) / max(1e-9, (t2 - t1) - (t1 - t0))


def llama_cpp_rate(gguf: str, prompt_ids: list[int], new_tokens: int, threads: int) -> dict | None:
    """Batch-1 tokens/s of llama-cpp-python on ``gguf`` in its own venv, fed the same prompt token ids (the GGUF
    carries the same tokenizer); None when the venv is missing."""
    if not LLAMA_PY.exists():
        return None
    code = r"""
import json, sys, time
from llama_cpp import Llama
gguf, toks, n, threads = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
llm = Llama(model_path=gguf, n_ctx=512, n_threads=threads, n_threads_batch=threads, verbose=False, seed=0)
best = None
for rep in range(2):
    llm.reset()
    t0 = time.perf_counter(); k = 0; t_first = None
    for tok in llm.generate(toks, temp=0.7, top_k=0, top_p=1.0, min_p=0.0, repeat_penalty=1.0, reset=True):
        k += 1
        if k == 1:
            t_first = time.perf_counter()
        if k == n:
            break
    t1 = time.perf_counter()
    r = {"tokens_per_s": n / (t1 - t0), "decode_tokens_per_s": (n - 1) / (t1 - t_first), "prompt_tokens": len(toks)}
    if best is None or r["tokens_per_s"] > best["tokens_per_s"]:
        best = r
print(json.dumps(best))
"""
    res = subprocess.run([str(LLAMA_PY), "-c", code, gguf, json.dumps(prompt_ids), str(new_tokens), str(threads)],
                         capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    if res.returncode != 0:
        print(res.stderr[-2000:], file=sys.stderr)
        return None
    return json.loads(res.stdout.strip().splitlines()[-1])


def gguf_path() -> str:
    from rlhaif.models.loading import BUILTIN_CAUSAL

    module, fname, _ = BUILTIN_CAUSAL["smollm2-135m-instruct"]
    return str(Path(importlib.util.find_spec(module).origin).parent / fname)


def update_shares(model, tok, roof: dict[str, float], prompt_len: int = 38, response: int = 32,
                  reps: int = 1) -> list[tuple[str, str, float, float]]:
    """(kind, dtype, GFLOP/s, share of that dtype's roofline) of one PPO and one DPO update pass."""
    from rlhaif.policy.dpo import pair_logprobs
    from rlhaif.policy.dpo_losses import dpo_loss
    from rlhaif.policy.ppo import forward_response
    from rlhaif.policy.value_head import ActorCritic

    c = model.config
    T = prompt_len + response
    per_tok = trunk_macs_per_token(c.hidden_size, c.num_hidden_layers, c.num_attention_heads,
                                   c.num_key_value_heads, c.intermediate_size, T)
    head = c.hidden_size * c.vocab_size
    ac = ActorCritic(model).train()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, c.vocab_size, (8, T), generator=g)
    attn = torch.ones_like(ids)
    resp_mask = torch.zeros_like(ids)
    resp_mask[:, prompt_len:] = 1
    rows = []
    for dt in ("fp32", "bf16"):
        def ppo():
            mb = {"input_ids": ids[:4], "attention_mask": attn[:4], "response_ids": ids[:4, prompt_len:]}
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dt == "bf16"):
                lp, v, _ = forward_response(ac, mb, 0.7)
            (-(lp.mean()) + v.float().pow(2).mean()).backward()
            ac.zero_grad(set_to_none=True)

        def dpo():
            batch = {"input_ids": ids, "attention_mask": attn, "loss_mask": resp_mask}
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dt == "bf16"):
                lp = pair_logprobs(model, batch)
            dpo_loss(lp.float(), torch.zeros(8), 0.1)[0].backward()
            model.zero_grad(set_to_none=True)

        # MACs × 2 = FLOPs; backward = 2× forward (trained weights): ×3 in all
        ppo_flops = 2 * 3 * 4 * (T * per_tok + (response + 1) * head)
        dpo_flops = 2 * 3 * 8 * (T * per_tok + (response - 1) * head)  # head on the response positions only
        for kind, fn, flops in (("PPO update pass (mini-batch 4)", ppo, ppo_flops),
                                ("DPO update pass (4 pairs)", dpo, dpo_flops)):
            rate = flops / best_seconds(fn, reps) / 1e9
            rows.append((kind, dt, rate, rate / roof[dt]))
    return rows


def profile(model, prompt_ids, pad_id) -> None:
    from torch.profiler import ProfilerActivity, profile as tprofile

    from rlhaif.policy.rollout import sample_responses

    for batch in (1, 8):
        sample_responses(model, distinct_rows(prompt_ids, batch), pad_id, [-1], 4, 0.7)
        t0 = time.perf_counter()
        with tprofile(activities=[ProfilerActivity.CPU]) as prof:
            sample_responses(model, distinct_rows(prompt_ids, batch), pad_id, [-1], 16, 0.7)
        wall = time.perf_counter() - t0
        print(f"\nprofile: sampler batch {batch}, 16 new tokens, {wall:.2f} s wall under the profiler")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3, help="repetitions of the micro-benchmarks (best is kept)")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--skip", default="", help="comma list of sections to skip: decode,hf,llama,updates")
    ap.add_argument("--baseline-rev", help="also time the sampler of this git revision (A/B, interleaved)")
    ap.add_argument("--decode-reps", type=int, default=1, help="interleaved repetitions of each decode run "
                    "(the median is kept)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="rates and bounds per wall second, or per CPU second of this process (cpu: an A/B on a "
                    "loaded machine, where waiting for a core is not the sampler's time; with --threads 1)")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--json", help="also write the figures to this file")
    a = ap.parse_args()
    global CLOCK
    CLOCK = time.process_time if a.clock == "cpu" else time.perf_counter
    torch.set_num_threads(a.threads)
    skip = set(filter(None, a.skip.split(",")))
    from rlhaif.models.loading import load_causal_lm
    from rlhaif.tokens import encode_prompts

    up = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"threads={torch.get_num_threads()} torch={torch.__version__} cpu={torch.backends.cpu.get_cpu_capability()}"
          f"\nuptime: {up}", flush=True)
    fig: dict = {"threads": a.threads, "uptime": up}
    roof = fig["roofline_gflops"] = roofline(a.reps)
    bw = fig["copy_gbs"] = copy_bandwidth(a.reps)
    read = bw / 2
    print(f"matmul 2048²: fp32 {roof['fp32']:.0f} GFLOP/s, bf16 {roof['bf16']:.0f} GFLOP/s "
          f"(bf16 {roof['bf16'] / roof['fp32']:.2f}x)\nmemory copy: {bw:.1f} GB/s (read + write) → "
          f"{read:.1f} GB/s of weight reads", flush=True)
    model, tok = load_causal_lm("smollm2-135m-instruct")
    model.eval()
    head = fig["lm_head_gbs"] = lm_head_gbs(model.lm_head.weight, a.reps)
    print(f"LM head 8×576 @ 576×49152: fp32 {head['fp32']:.1f} GB/s, bf16 {head['bf16']:.1f} GB/s of weights "
          f"(bound {read:.1f})", flush=True)
    prompt_ids = encode_prompts(tok, [PROMPT])[0]
    pad = tok.pad_token_id
    bf16 = None
    if "decode" not in skip or a.profile:
        from rlhaif.precision import PrecisionChoice, sampling_copy

        bf16 = sampling_copy(model, PrecisionChoice("bfloat16", "bf16", "cpu", "benchmark"))
    if "decode" not in skip:
        fig["decode"] = []
        params = param_count(model)
        if a.clock == "cpu":
            print("rates and bounds per CPU second of this process (--clock cpu)")
        sides = {"hf": ("HF generate", None)} if "hf" not in skip else {}
        if a.baseline_rev:
            sides["baseline"] = (f"sampler @ {a.baseline_rev}", sampler_at(a.baseline_rev))
        sides["rlhaif"] = ("rlhaif sampler", None)
        for dt, m in (("fp32", model), ("bf16", bf16)):
            bound1 = read * 1e9 / weight_bytes(m)
            print(f"decode bound ({dt}, {weight_bytes(m) / 2 ** 20:.0f} MiB of weights, {params / 1e6:.0f}M "
                  f"params): weight reads {bound1:.1f} tokens/s per row, matmul roofline "
                  f"{roof[dt] * 1e9 / (2 * params):.0f} tokens/s", flush=True)
            for b in map(int, a.batches.split(",")):
                bound, binds = batch_bound(b, bound1, roof[dt], params)
                rates: dict[str, list[tuple[float, float]]] = {k: [] for k in sides}
                for _ in range(a.decode_reps):  # interleaved: load changes hit every side alike
                    for kind, (_, fn) in sides.items():
                        rates[kind].append(decode_rate("hf" if kind == "hf" else "rlhaif", m, prompt_ids, b,
                                                       a.new_tokens, pad, sampler=fn))
                for kind, (label, _) in sides.items():
                    whole = sorted(x for x, _ in rates[kind])[len(rates[kind]) // 2]
                    steps = sorted(y for _, y in rates[kind])[len(rates[kind]) // 2]
                    fig["decode"].append({"dtype": dt, "batch": b, "side": kind, "tokens_per_s": whole,
                                          "steps_tokens_per_s": steps, "all_tokens_per_s": rates[kind],
                                          "bound": bound, "binds": binds})
                    print(f"  {dt} batch {b:2d} {label:22s} {whole:7.1f} tokens/s  ({whole / bound:.0%} of {bound:.0f}, "
                          f"{binds}); decode steps alone {steps:7.1f} ({steps / bound:.0%})"
                          + (f"  runs {', '.join(f'{x:.0f}' for x, _ in rates[kind])}" if a.decode_reps > 1 else ""),
                          flush=True)
        r, _ = decode_rate("rlhaif", model, prompt_ids, 1, a.new_tokens, pad, autocast=True)
        print(f"  fp32 weights under bf16 autocast, batch 1, rlhaif sampler: {r:.1f} tokens/s", flush=True)
        fig["decode_autocast_b1"] = r
    if "llama" not in skip:
        r = llama_cpp_rate(gguf_path(), prompt_ids, a.new_tokens, a.threads)
        fig["llama_cpp"] = r
        if r is None:
            print("llama.cpp: .bench-venvs/llama-cpp missing (benchmarks/setup_peer_venvs.sh llama-cpp)")
        else:
            print(f"llama.cpp (llama-cpp-python, Q4_1 GGUF) batch 1: {r['tokens_per_s']:.1f} tokens/s "
                  f"(decode alone {r['decode_tokens_per_s']:.1f}; the same {r['prompt_tokens']} prompt tokens)",
                  flush=True)
    if "updates" not in skip:
        fig["updates"] = []
        for kind, dt, rate, share in update_shares(model, tok, roof):
            fig["updates"].append({"kind": kind, "dtype": dt, "gflops": rate, "share": share})
            print(f"{kind} {dt}: {rate:.1f} GFLOP/s = {share:.0%} of the {dt} roofline", flush=True)
    if a.profile:
        profile(bf16, prompt_ids, pad)
    print(f"uptime after: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    if a.json:
        Path(a.json).write_text(json.dumps(fig, indent=2))


if __name__ == "__main__":
    main()
