"""Critic-free online RL: `rlhaif ppo` with ``advantage_estimator: rloo`` / ``grpo`` against TRL 1.16's
``RLOOTrainer`` / ``GRPOTrainer`` (.bench-venvs/trl-current), same run, equal settings.

    OMP_NUM_THREADS=1 python benchmarks/bench_group_rl.py --sizes tiny 7m --estimators rloo grpo --reps 3
    OMP_NUM_THREADS=2 python benchmarks/bench_group_rl.py --sizes smollm2 --lora-r 16 --estimators rloo grpo \\
        --reps 3 --steps 4

Both sides get the same policy folder, the same reward model (a random sequence-classification Llama with the
policy's tokenizer, bench_common.build_models), the same 16 prompts as chat messages, and per step the same
``--prompts`` prompts x ``--num-generations`` K completions (batch = prompts x K, one batched generation), the
same response length, temperature (plain sampling: top-p 1, top-k off), one optimizer step on the whole rollout
batch (rlhaif: mini_batch_size = batch_size, ppo_epochs 1; TRL: per_device_train_batch_size = batch,
steps_per_generation 1, num_iterations 1, gradient_accumulation_steps 1), clip 0.2, learning rate with linear
decay, gradient clip 1.0, AdamW (fused kernel on both), fp32 everywhere (rlhaif precision fp32; TRL bf16=False),
activation checkpointing off on both (TRL's default is on), the same β:
  rloo  β·KL in the reward, KL = Σ_t (log π − log π_ref) (k1) per response, on both (rlhaif kl_coef; TRL beta)
  grpo  β·k3 to the reference as a per-token loss term, per-response token mean, rewards scaled by the group's
        std (rlhaif kl_loss_coef with its default kl_in_reward for grpo; TRL beta, loss_type 'grpo' — its
        default is 'dapo' — and scale_rewards 'group')
Sizes: tiny (0.32M) and 7m (7.1M) random Llamas with the 99-token words vocabulary (bench_common.SIZES), full
fine-tuning with a frozen reference copy on both; smollm2: SmolLM2-135M-Instruct (the embedded model, saved
with save_pretrained to a folder both load), with ``--lora-r 16``: the reference is the policy with its adapter
disabled on both sides; its reward model is a random 256 x 4 Llama with SmolLM2's tokenizer.

Fixed response length: the policy folder's EOS (tokenizer, config and generation config) is replaced by an added
token whose id lies past the model's vocabulary (``never_stop``), so no side can sample it and every response
runs to ``--max-new-tokens``; each worker reports its mean response length to show it (transformers warns that
the config's eos_token_id is outside the vocabulary: that is the point).

Timed span: end of step 1 to end of the last step (set-up and step 1's warm-up excluded), wall (samples/s,
completions per second) and process CPU time (samples per CPU-second). Memory: peak RSS, and the peak above the
RSS after imports (torch, transformers, peft, accelerate and the side's library). Each side in its own
subprocess, repetitions alternating which side goes first, medians of --reps (bench_common.run_alternating).

What still differs (all measured as it is, none corrected for):
- Generation: rlhaif samples with its own KV-cache loop (plain softmax at T, inverse-CDF draw, stops at the
  length cap); TRL calls transformers' ``generate()`` (sampling with its own GenerationConfig) on the unwrapped
  model. rlhaif's default precision 'auto' would sample from a bf16 copy on this CPU (AMX); here fp32, as TRL.
- Old-policy log-probs: for RLOO (KL in the reward) both sides run a no-grad forward for them every step. For
  GRPO with one optimizer step per rollout (as here) both skip it and use the training forward's detached
  log-probs (ratio 1): TRL's GRPOTrainer when num_iterations and steps_per_generation are 1, rlhaif when
  ppo_epochs is 1 and mini_batch_size = batch_size (`rlhaif.policy.ppo.reuses_update_logprobs`; up to
  commit 50d36a2 rlhaif always ran it).
- RLOO's ratio: TRL clips one ratio per sequence (exp of the summed token log-ratio), mean over sequences;
  rlhaif clips per token, token mean (PPO's loss). Same passes, a different loss value.
- LM head: TRL 1.16 patches in a fused, tiled LM head for its log-prob and entropy passes (never holds the
  (batch, length, vocabulary) logits); rlhaif sends only the response positions through the LM head but holds
  their logits and log-softmax in fp32.
- The full-fine-tuning reference: TRL loads a second copy from the policy folder; rlhaif deep-copies the policy.
- Reward: the same model; rlhaif scores the decoded, stripped response through its RewardModel (chat template
  of the reward's tokenizer, max 256 tokens); TRL applies the reward tokenizer's chat template to prompt +
  completion messages. The group std: rlhaif ε 1e-6, TRL 1e-4.
- Logging: TRL logs every step (logging_steps 1, to read the completion length); rlhaif writes metrics.jsonl
  every step. rlhaif computes the rollout's entropy in its old-log-prob pass; TRL computes entropy in its
  training forward.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import (SIZES, TRL_PY, build_models, clock_rlhaif_steps, current_rss_mib, memory_report,  # noqa: E402
                          run_alternating, span_rates)

GROUP_SIZES = {"tiny": SIZES["tiny"], "7m": SIZES["7m"],
               "smollm2": dict(hidden=256, layers=4, policy="smollm2-135m-instruct")}  # hidden x layers: the reward model
NEVER = "<|never-sampled|>"
KEYS = ("samples_per_second", "samples_per_cpu_second", "peak_rss_mib", "peak_rss_above_imports_mib",
        "response_length", "timed_s")


def never_stop(policy_dir: str) -> int:
    """Make ``policy_dir``'s EOS a token the model cannot emit: an added special token whose id is past the
    model's vocabulary (so past the logits), set as EOS in the tokenizer, the config and the generation config.
    Every sampled response then runs to the length cap, on both sides. Returns the new EOS id."""
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    tok = AutoTokenizer.from_pretrained(policy_dir)
    cfg = AutoConfig.from_pretrained(policy_dir)
    tok.add_special_tokens({"eos_token": NEVER})
    eos = tok.convert_tokens_to_ids(NEVER)
    if eos < cfg.vocab_size:
        raise SystemExit(f"{policy_dir}: the added EOS got id {eos}, inside the vocabulary of {cfg.vocab_size}")
    tok.save_pretrained(policy_dir)
    cfg.eos_token_id = eos
    cfg.save_pretrained(policy_dir)
    try:
        gen = GenerationConfig.from_pretrained(policy_dir)
    except OSError:
        gen = GenerationConfig.from_model_config(cfg)
    gen.eos_token_id = eos
    gen.save_pretrained(policy_dir)
    return eos


def rlhaif_worker(s: dict) -> None:
    import accelerate  # noqa: F401  (imported before the baseline, as TRL's side imports its libraries)
    import peft  # noqa: F401
    import torch
    import transformers  # noqa: F401

    from rlhaif.policy.ppo import PPOConfig, run_ppo

    torch.set_num_threads(s["threads"])
    baseline = current_rss_mib()
    clocks = clock_rlhaif_steps()
    B = s["batch_size"]
    kl = dict(kl_coef=s["beta"]) if s["estimator"] == "rloo" else dict(kl_loss_coef=s["beta"])
    out = tempfile.mkdtemp(dir=s["dir"], prefix="rlhaif-")
    cfg = PPOConfig(model=s["policy"], prompts=s["prompts"], output_dir=out, reward_model=s["reward"],
                    lora_r=s["lora_r"], lora_alpha=2 * s["lora_r"], learning_rate=s["lr"], steps=s["steps"],
                    batch_size=B, mini_batch_size=B, ppo_epochs=1, max_new_tokens=s["max_new_tokens"],
                    temperature=s["temperature"], advantage_estimator=s["estimator"],
                    num_generations=s["num_generations"], seed=s["seed"], precision="fp32",
                    kl_ceiling=None, score_clip=None, max_prompt_length=128, save_every=10_000, sample_every=0,
                    resume=False, keep_checkpoints=False, **kl)
    run_ppo(cfg)
    rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    print(json.dumps({"side": "rlhaif", **span_rates(clocks, B),
                      "response_length": statistics.mean(r["response/length"] for r in rows),
                      **memory_report(baseline)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["tiny", "7m"], choices=list(GROUP_SIZES))
    ap.add_argument("--estimators", nargs="+", default=["rloo", "grpo"], choices=["rloo", "grpo"])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--steps", type=int, default=5, help="optimizer steps per run (the first is not timed)")
    ap.add_argument("--prompts", type=int, default=4, help="prompts per step")
    ap.add_argument("--num-generations", type=int, default=4, help="K completions per prompt")
    ap.add_argument("--max-new-tokens", type=int, default=32, help="response length (every response reaches it)")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--beta", type=float, default=0.05, help="KL coefficient (see the docstring for its form)")
    ap.add_argument("--lora-r", type=int, default=0, help="LoRA rank (0 = full fine-tuning, reference copy)")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")),
                    help="torch/OMP threads per side (default: OMP_NUM_THREADS, else 1)")
    ap.add_argument("--worker", choices=["rlhaif", "trl"], help=argparse.SUPPRESS)
    ap.add_argument("--settings", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        s = json.loads(Path(a.settings).read_text())
        if a.worker == "rlhaif":
            return rlhaif_worker(s)
        from group_rl_trl_side import run

        return run({**s, "out": tempfile.mkdtemp(dir=s["dir"], prefix="trl-")})
    if not TRL_PY.exists():
        sys.exit(f"TRL venv missing at {TRL_PY}: run benchmarks/setup_peer_venvs.sh")
    root = Path(tempfile.mkdtemp(prefix="bench-group-rl-"))
    base = dict(batch_size=a.prompts * a.num_generations, num_generations=a.num_generations, steps=a.steps,
                max_new_tokens=a.max_new_tokens, temperature=a.temperature, lr=a.lr, beta=a.beta,
                lora_r=a.lora_r, threads=a.threads, seed=0)
    print(f"settings: {json.dumps(base)}", flush=True)
    table = []
    for size in a.sizes:
        d = root / size
        d.mkdir()
        policy, reward, n_params = build_models(d, **GROUP_SIZES[size])
        never_stop(policy)
        for est in a.estimators:
            path = d / f"{est}.json"
            path.write_text(json.dumps({**base, "estimator": est, "policy": policy, "reward": reward,
                                        "prompts": str(d / "prompts.jsonl"), "dir": str(d)}))
            load0, t0 = os.getloadavg(), time.time()
            med = run_alternating(__file__, {"rlhaif": ["--settings", str(path)], "trl": ["--settings", str(path)]},
                                  a.reps, "samples", keys=KEYS, threads=a.threads)
            load1 = os.getloadavg()
            r, t = med["rlhaif"], med["trl"]
            row = dict(size=size, params_m=n_params / 1e6, estimator=est, lora_r=a.lora_r, rlhaif=r, trl=t,
                       speed_ratio=r["samples_per_second"] / t["samples_per_second"],
                       cpu_ratio=r["samples_per_cpu_second"] / t["samples_per_cpu_second"],
                       rss_ratio=r["peak_rss_mib"] / t["peak_rss_mib"],
                       above_ratio=r["peak_rss_above_imports_mib"] / t["peak_rss_above_imports_mib"],
                       load_before=load0, load_after=load1, minutes=(time.time() - t0) / 60)
            table.append(row)
            print(f"{size} ({n_params / 1e6:.2f}M) {est}, medians of {a.reps}: " + json.dumps(row), flush=True)
    print("\n| model | estimator | rlhaif samples/s | TRL samples/s | ratio | rlhaif / TRL samples/CPU-s | ratio "
          "| peak RSS rlhaif / TRL (MiB) | ratio | above imports rlhaif / TRL (MiB) | ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for x in table:
        r, t = x["rlhaif"], x["trl"]
        variant = f"LoRA r {x['lora_r']}" if x["lora_r"] else "full"
        print(f"| {x['size']} ({x['params_m']:.2f}M, {variant}) | {x['estimator']} | {r['samples_per_second']:.2f} | {t['samples_per_second']:.2f} | "
              f"**{x['speed_ratio']:.2f}×** | {r['samples_per_cpu_second']:.2f} / {t['samples_per_cpu_second']:.2f} | "
              f"{x['cpu_ratio']:.2f}× | {r['peak_rss_mib']:.0f} / {t['peak_rss_mib']:.0f} | {x['rss_ratio']:.2f}× | "
              f"{r['peak_rss_above_imports_mib']:.0f} / {t['peak_rss_above_imports_mib']:.0f} | "
              f"{x['above_ratio']:.2f}× |")


if __name__ == "__main__":
    main()
