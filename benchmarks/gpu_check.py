"""The GPU check of docs/scale-out.md: a random-weight Llama built from a config (no download), timed in
three parts; one JSON line per figure. benchmarks/gpu_check.sh runs it on a lent GPU; ``--size tiny`` runs
the same code on a CPU in seconds (that is how it was checked before any GPU ran it).

- ``train``: full fine-tuning steps (AdamW, bf16 autocast on a GPU) through rlhaif's Accelerate set-up
  (``make_accelerator``; under torchrun with one GPU: one process). Tokens/s and MFU = 6·N·tokens/s / peak.
- ``generate``: decode throughput of HF ``generate`` and, where vLLM imports, of rlhaif's VLLMEngine, at
  batch 1/8/32, and each one's share of the HBM-bandwidth bound B·bandwidth / weight bytes (KV reads ignored,
  so the bound is loose at large batch).
- ``rl``: an online RL step, the script's own minimal RLOO loop (not ``run_ppo``, which the vLLM path is not
  wired into yet): sample K per prompt, recompute the trainer's log-probs, truncated-IS weights
  (``rlhaif.policy.importance``), one optimizer step, weight sync into the engine. Steps/s with vLLM rollouts
  vs HF ``generate`` rollouts at equal settings, and rollout/logprob_diff, is_clip_share.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

SIZES = {  # ~0.5B: 24 x (1280 hidden, 20 heads of 64, 4 KV heads, 3456 MLP), 32k vocab, untied
    "0.5b": dict(hidden_size=1280, num_hidden_layers=24, num_attention_heads=20, num_key_value_heads=4,
                 intermediate_size=3456, vocab_size=32000, max_position_embeddings=2048),
    "tiny": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=256, vocab_size=512, max_position_embeddings=512),
}
PEAK = {"H200": (989e12, 4.8e12), "H100": (989e12, 3.35e12)}  # dense bf16 FLOP/s, HBM bytes/s


def emit(**kw) -> None:
    print(json.dumps(kw), flush=True)


def build(size: str, folder: str, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, LlamaConfig

    from rlhaif.models.tiny import make_tokenizer

    cfg = LlamaConfig(**SIZES[size], pad_token_id=0, bos_token_id=2, eos_token_id=3, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    tok = make_tokenizer()
    if os.environ.get("LOCAL_RANK", "0") == "0":  # under torchrun, one writer
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
    return model, tok


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def peaks() -> tuple[float | None, float | None, str]:
    if not torch.cuda.is_available():
        return None, None, "cpu"
    name = torch.cuda.get_device_name()
    for k, v in PEAK.items():
        if k in name:
            return v[0], v[1], name
    return None, None, name


def part_train(model, device, steps: int, batch: int, seq: int) -> None:
    from rlhaif.training import make_accelerator, make_optimizer

    acc = make_accelerator(mixed_precision="bf16" if device == "cuda" else "no")
    opt, _ = make_optimizer(model, 1e-5)
    model, opt = acc.prepare(model, opt)
    model.train()
    V = model.config.vocab_size if hasattr(model, "config") else acc.unwrap_model(model).config.vocab_size
    ids = torch.randint(4, V, (batch, seq), device=acc.device)
    times = []
    for i in range(steps + 2):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        with acc.autocast():
            loss = model(input_ids=ids, labels=ids).loss
        acc.backward(loss)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - t)
    tok_s = batch * seq * acc.num_processes / (sum(times) / len(times))
    N = n_params(acc.unwrap_model(model))
    peak, _, name = peaks()
    emit(part="train", device=name, distributed=str(acc.distributed_type), processes=acc.num_processes, params=N,
         batch=batch, seq=seq, tokens_per_s=round(tok_s, 1), mfu=round(6 * N * tok_s / peak, 4) if peak else None,
         peak_mem_gb=round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None)
    acc.unwrap_model(model).eval()


def prompts_for(tok, n: int) -> list[list[int]]:
    from rlhaif.tokens import encode_prompts

    words = ["tell me about the cat", "what is the sun", "how do i help a dog", "why is the sky blue"]
    return encode_prompts(tok, [words[i % len(words)] + f" {i % 7}" for i in range(n)])


def part_generate(model, tok, engine, new_tokens: int, batches: list[int], weight_bytes: int) -> None:
    from rlhaif.generate import SamplingConfig, sample

    s = SamplingConfig(max_new_tokens=new_tokens, temperature=1.0)
    eos = []  # no stop: every row decodes new_tokens tokens, so tokens/s is decode speed
    _, bw, name = peaks()
    for b in batches:
        ids = prompts_for(tok, b)
        for side in ("hf", "vllm"):
            if side == "vllm" and engine is None:
                continue
            fn = ((lambda: sum(len(r) for r, _ in sample(model, tok, ids, s, batch_size=b))) if side == "hf" else
                  (lambda: sum(len(x.token_ids) for row in engine.sample(ids, 1, s, eos) for x in row)))
            fn()  # warm-up
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            t = time.perf_counter()
            n = fn()
            dt = time.perf_counter() - t
            bound = b * bw / weight_bytes if bw else None
            emit(part="generate", side=side, device=name, batch=b, new_tokens=n, seconds=round(dt, 3),
                 tokens_per_s=round(n / dt, 1), hbm_bound_tokens_per_s=round(bound, 1) if bound else None,
                 share_of_bound=round(n / dt / bound, 4) if bound else None)


def part_rl(model, tok, engine, steps: int, prompts: int, k: int, new_tokens: int, cap: float) -> None:
    from rlhaif.engines.vllm_engine import EngineSample, rollout_from_samples
    from rlhaif.generate import SamplingConfig, sample
    from rlhaif.policy.importance import tis_weights
    from rlhaif.policy.rollout import response_logprobs
    from rlhaif.tokens import eos_ids

    device = next(model.parameters()).device
    s = SamplingConfig(max_new_tokens=new_tokens, temperature=1.0)
    eos = eos_ids(tok, model)
    base = {n: p.detach().clone() for n, p in model.state_dict().items()}
    for side in ("hf", "vllm"):
        if side == "vllm" and engine is None:
            continue
        model.load_state_dict(base)
        if engine is not None:
            engine.update_weights(model)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-6)
        ids = [p for p in prompts_for(tok, prompts) for _ in range(k)]
        times, diffs, clips = [], [], []
        for step in range(steps + 1):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            t = time.perf_counter()
            if side == "vllm":
                samples = [x for row in engine.sample(ids[::k], k, s, eos, seed=step) for x in row]
            else:
                model.eval()
                samples = [EngineSample(r, [0.0] * len(r), f) for r, f in sample(model, tok, ids, s, batch_size=len(ids))]
            rollout, sampler_lp = rollout_from_samples(ids, samples, tok.pad_token_id, device)
            reward = rollout.response_mask.sum(1).float()  # a stand-in reward: response length
            adv = (reward.view(-1, k) - reward.view(-1, k).mean(1, keepdim=True)).view(-1, 1)  # RLOO-style baseline
            model.train()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                lp = response_logprobs(model, rollout, s.temperature)
            mask = rollout.response_mask
            if side == "vllm":
                w, st = tis_weights(lp.detach(), sampler_lp, mask, cap)
                diffs.append(st["rollout/logprob_diff"].item())
                clips.append(st["rollout/is_clip_share"].item())
            else:
                w = mask.float()
            loss = -(w * adv * lp * mask).sum() / mask.sum().clamp(min=1)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if side == "vllm":
                engine.update_weights(model)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            if step:
                times.append(time.perf_counter() - t)
        emit(part="rl", side=side, rollouts_per_step=len(ids), new_tokens=new_tokens,
             steps_per_s=round(len(times) / sum(times), 4), seconds_per_step=round(sum(times) / len(times), 3),
             **({"rollout/logprob_diff": diffs, "rollout/is_clip_share": clips} if side == "vllm" else {}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=list(SIZES), default="0.5b")
    ap.add_argument("--parts", default="train,generate,rl")
    ap.add_argument("--folder", default="/tmp/gpu_check_model")
    ap.add_argument("--train-steps", type=int, default=8)
    ap.add_argument("--train-batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--rl-steps", type=int, default=3)
    ap.add_argument("--rl-prompts", type=int, default=16)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--tis-cap", type=float, default=2.0)
    ap.add_argument("--no-vllm", action="store_true")
    a = ap.parse_args()
    parts = set(a.parts.split(","))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tok = build(a.size, a.folder, torch.float32)
    model.to(device)
    weight_bytes = n_params(model) * (2 if device == "cuda" else 4)
    engine = None
    if not a.no_vllm and parts & {"generate", "rl"}:
        from rlhaif.engines.vllm_engine import VLLMEngine, vllm_available

        if vllm_available():
            engine = VLLMEngine(a.folder, dtype="bfloat16" if device == "cuda" else "float32",
                                max_model_len=min(2048, SIZES[a.size]["max_position_embeddings"]),
                                memory_fraction=0.35 if device == "cuda" else None)
        else:
            emit(part="vllm", skipped="vllm does not import here: the vLLM rows are not measured")
    if "train" in parts:
        part_train(model, device, a.train_steps, a.train_batch, a.seq)
    if "generate" in parts:
        if device == "cuda":
            model.to(torch.bfloat16)
        part_generate(model, tok, engine, a.new_tokens, [int(b) for b in a.batches.split(",")], weight_bytes)
    if "rl" in parts:
        model.to(torch.float32)
        part_rl(model, tok, engine, a.rl_steps, a.rl_prompts, a.k, min(a.new_tokens, 64), a.tis_cap)


if __name__ == "__main__":
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    main()
