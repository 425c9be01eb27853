"""`rlhaif ppo`: PPO with a KL penalty against a reference policy (Ouyang et al. 2022; Ziegler et al. 2019).

One step: sample ``num_generations`` responses per prompt in one batch (rollout.py) → score the text (reward
model or a Python function) → old log-probs, values and reference log-probs → per-token rewards with the KL
penalty (kl.py) → GAE and whitening (advantages.py), or without a critic RLOO / GRPO / Dr. GRPO over each
prompt's group (group_advantages.py, ``advantage_estimator``) → ``ppo_epochs`` passes over minibatches of the
clipped losses (losses.py; GRPO's k3 KL loss term) → β update (kl_control.py) → metrics, samples, checkpoint.

Rollouts come from the policy itself, or with ``rollout_backend: vllm`` from a vLLM engine colocated in the
process (weights synced after every step, each token's policy-gradient term weighted by truncated importance
sampling: importance.py, docs/ppo.md).

Reference policy: with LoRA, the same weights with the adapter disabled (one copy of the base in memory);
a LoRA SFT adapter given as ``model`` is merged into the base first, so the reference is the SFT policy,
not the raw base (TRL issues 495, 536). With full fine-tuning, a frozen copy.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Callable, ClassVar, Literal, Optional

import torch

from rlhaif.config import LoRAConfig, TrainConfig
from rlhaif.data.records import prompt_text
from rlhaif.errors import ConfigError, RlhaifError
from rlhaif.models.loading import DEFAULT_POLICY
from rlhaif.policy.group_advantages import check_group_settings

Scorer = Callable[[list, list], list]


class PPOConfig(TrainConfig, LoRAConfig):
    """Settings of `rlhaif ppo`. Defaults start from TRL 1.0.0's PPO (γ=1, λ=0.95, clips 0.2, vf 0.1,
    β=0.05, 4 epochs, T=0.7) and add LoRA, an entropy bonus (off), adaptive KL (off) and a KL ceiling.
    Checkpoints, resume, logging and precision come from ``TrainConfig``."""

    resume_may_change: ClassVar[frozenset[str]] = TrainConfig.resume_may_change | {
        "steps", "sample_every", "score_threshold", "monitor_scorers"}

    model: str = DEFAULT_POLICY
    """Policy to start from: folder (full model or LoRA SFT adapter, merged first), .gguf or built-in name."""
    prompts: str
    """Prompts: JSONL with a 'prompt' field (text or messages), or .txt one per line."""
    output_dir: str = "runs/ppo"
    """Where metrics.jsonl, samples.jsonl, checkpoints/ and the final model/ go."""
    reward_model: Optional[str] = None
    """A reward model folder (rlhaif reward train); scores are computed from text with its own tokenizer."""
    reward_fn: Optional[str] = None
    """Instead of a reward model: 'module:function' or 'file.py:function', score(prompts, responses) -> floats."""
    monitor_scorers: dict[str, str] = {}
    """Scorers that only watch, name -> scorer spec (rlhaif.scorers): every step's responses are scored by each
    and the mean logged as ``monitor/<name>``; they never enter the reward. Log a held-out gold scorer here to
    see proxy and gold score against KL over training (Gao et al. 2022; recipes/study-overoptimization.yaml)."""
    value_model: Optional[str] = None
    """A separate value model (causal LM folder or name) for the critic; default: a head on the policy's trunk."""
    lora_r: int = 16
    """LoRA rank; 0 = full fine-tuning with a frozen copy as the reference."""
    learning_rate: float = 1e-5
    """AdamW learning rate, linear decay to 0 over `steps` (use ~1e-4 with LoRA on small models)."""
    steps: int = 100
    """PPO steps (one rollout batch and its update each)."""
    batch_size: int = 16
    """Rollouts per step per process."""
    mini_batch_size: int = 4
    """Rollouts per optimizer step; must divide batch_size."""
    ppo_epochs: int = 4
    """Passes over each rollout batch."""
    max_new_tokens: int = 64
    """Response length cap in tokens."""
    max_prompt_length: int = 256
    """Longest prompt in tokens; a longer one is an error naming it."""
    temperature: float = 0.7
    """Sampling temperature; the log-probs for ratio and KL use the same temperature (plain softmax)."""
    gamma: float = 1.0
    """GAE discount γ."""
    lam: float = 0.95
    """GAE λ."""
    advantage_estimator: Literal["gae", "rloo", "grpo", "dr_grpo"] = "gae"
    """gae = PPO with a critic; rloo, grpo, dr_grpo = critic-free, from the num_generations responses to each
    prompt (docs/ppo.md, "Which estimator when")."""
    num_generations: int = 1
    """K responses sampled per prompt in one batch (≥ 2 for rloo, grpo, dr_grpo); batch_size counts rollouts,
    so each step uses batch_size / K prompts per process."""
    kl_in_reward: Optional[bool] = None
    """True: β·KL (kl_coef) is subtracted from the reward; False: the KL is a k3 loss term (kl_loss_coef).
    None = the estimator's form: in the reward for gae and rloo, a loss term for grpo and dr_grpo."""
    kl_loss_coef: float = 0.04
    """Coefficient of the k3 KL loss term when kl_in_reward is false (GRPO's β, 0.04 in Shao et al.)."""
    clip_range: float = 0.2
    """PPO ratio clip ε."""
    clip_range_value: float = 0.2
    """Value clip ε_v around the rollout's values."""
    vf_coef: float = 0.1
    """Value-loss coefficient c₁."""
    entropy_coef: float = 0.0
    """Entropy-bonus coefficient c₂ (0 = off, as in TRL)."""
    kl_coef: float = 0.05
    """Initial (or fixed) KL penalty β."""
    kl_target: Optional[float] = None
    """Adaptive KL: target KL per sequence in nats (Ziegler et al. use 6); None keeps β fixed."""
    kl_horizon: int = 10000
    """Adaptive KL horizon (samples)."""
    kl_estimator: Literal["k1", "k3"] = "k1"
    """Per-token KL estimator for the penalty: k1 = log π − log π_ref, k3 = (r − 1) − log r (≥ 0)."""
    kl_ceiling: Optional[float] = 0.5
    """Stop a step's remaining PPO epochs once its approx KL to the rollout policy exceeds this (nats/token)."""
    missing_eos_penalty: Optional[float] = None
    """Subtracted from the score of a response that hits the length cap without EOS; None = off."""
    score_clip: Optional[float] = 10.0
    """Clip scores to ±this before the KL penalty (OpenRLHF uses 10); None = no clip."""
    seed: int = 0
    """Random seed (each process adds its rank for sampling)."""
    save_every: int = 50
    """Checkpoint every N steps (and at the end); resume continues exactly from the newest."""
    keep_checkpoints: bool = True
    """Keep checkpoints/ after a finished run (the newest two), so a longer run can continue it."""
    sample_every: int = 10
    """Write a few prompt/response/score samples to samples.jsonl every N steps."""
    score_threshold: Optional[float] = None
    """Stop early once the step's mean score reaches this."""
    merge_lora: bool = False
    """Save the final policy with the LoRA adapter merged into the base (default: the adapter alone). Forced on
    when ``model`` is itself a LoRA adapter: its base was merged with it, so an adapter alone would name the raw base."""
    dtype: str = "float32"
    """Weights dtype: float32, bfloat16 or float16."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """Rollout sampler precision: 'auto' samples from a bf16 copy of the policy (refreshed after every update)
    where the CPU does bf16 natively and measured faster, else fp32. Only which tokens are drawn depends on it:
    old, new and reference log-probs are all computed by the policy under the update's precision
    (``mixed_precision``: fp32 weights, bf16 products under 'bf16'), so the first ratio stays 1."""
    rollout_backend: Literal["hf", "vllm"] = "hf"
    """Sampler of the rollouts: 'hf' = the policy itself (rollout.py); 'vllm' = a vLLM engine colocated in this
    process (pip install 'rlhaif[vllm]', or benchmarks/setup_vllm_venv.sh on CPU), given the policy's weights
    (LoRA merged) after every step's update and built from the resumed weights on resume. The trainer still
    recomputes the old log-probs; each token's policy-gradient term is weighted by truncated importance
    sampling, min(π_old/π_vLLM, tis_cap) (docs/ppo.md)."""
    tis_cap: float = 2.0
    """Cap C of the truncated importance weight min(π_old/π_sampler, C) with vLLM rollouts (Yao et al. 2025
    use 2); ignored with 'hf' rollouts, whose sampler is the trainer itself."""


# ---------------------------------------------------------------------------------------------- set-up


def check_batch_sizes(cfg: PPOConfig, world_size: int = 1) -> None:
    """One message naming the sizes that must divide each other and how to fix them (veRL 2333, 3095)."""
    if cfg.batch_size % cfg.mini_batch_size:
        divisors = [d for d in range(1, cfg.batch_size + 1) if cfg.batch_size % d == 0]
        raise ConfigError(f"batch_size ({cfg.batch_size}) must be a multiple of mini_batch_size "
                          f"({cfg.mini_batch_size}): set mini_batch_size to one of {divisors} "
                          f"(batch_size is per process; {world_size} process(es) give "
                          f"{cfg.batch_size * world_size} rollouts per step)")
    if cfg.rollout_backend == "vllm" and world_size > 1:
        raise ConfigError(f"rollout_backend 'vllm' runs in one process (the engine is colocated in it and sets "
                          f"up its own one-process group); this launch has {world_size}: use rollout_backend "
                          f"'hf' under several processes")
    if cfg.tis_cap <= 0:
        raise ConfigError(f"tis_cap must be > 0 (the cap of the importance weight), got {cfg.tis_cap}")
    check_group_settings(cfg.advantage_estimator, cfg.num_generations, cfg.batch_size, kl_in_reward(cfg),
                         cfg.kl_target, cfg.value_model)
    if cfg.reward_model is None and cfg.reward_fn is None:
        raise ConfigError("ppo needs a scorer: give reward_model (a folder from `rlhaif reward train`) or "
                          "reward_fn ('module:function' or 'file.py:function')")


def kl_in_reward(cfg: PPOConfig) -> bool:
    """Where the KL to the reference goes: the reward (β = kl_coef) or a k3 loss term (kl_loss_coef)."""
    if cfg.kl_in_reward is not None:
        return cfg.kl_in_reward
    return cfg.advantage_estimator in ("gae", "rloo")


def load_scorer(cfg: PPOConfig, device=None) -> tuple[Scorer, str]:
    """(score(prompts, responses) -> list of floats, its name), through the one scorer syntax
    (``rlhaif.scorers``): ``reward_model`` is a reward-model folder or any scorer spec (e.g.
    ``classifier:PATH:LABEL``); ``reward_fn`` a Python function. Reward models get the prompt as given (text or
    messages); Python functions get plain prompt text."""
    from rlhaif.scorers import load_scorer as load_spec

    if cfg.reward_fn:
        if ":" not in cfg.reward_fn:
            raise ConfigError(f"reward_fn '{cfg.reward_fn}' must look like 'module:function' or 'file.py:function'")
        spec = cfg.reward_fn if cfg.reward_fn.startswith("python:") else f"python:{cfg.reward_fn}"
        return load_spec(spec, device=device), cfg.reward_fn
    return load_spec(cfg.reward_model, device=device), f"reward model {cfg.reward_model}"


def check_scores(scores, n: int, name: str) -> torch.Tensor:
    """(n,) float tensor, or a clear error naming the scorer: wrong count, not numbers, NaN or infinite."""
    try:
        values = [float(s) for s in scores]
    except (TypeError, ValueError) as e:
        raise RlhaifError(f"{name} must return a list of numbers, got {type(scores).__name__}: {e}") from None
    if len(values) != n:
        raise RlhaifError(f"{name} returned {len(values)} scores for {n} responses; it must return one per response")
    bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
    if bad:
        raise RlhaifError(f"{name} returned {values[bad[0]]} for response {bad[0]} "
                          f"({len(bad)} non-finite score(s) in the batch); scores must be finite numbers")
    return torch.tensor(values)


def load_policy(cfg: PPOConfig):
    """(ActorCritic, frozen reference model or None when LoRA's disabled adapter is the reference, tokenizer)."""
    from rlhaif.models.loading import add_lora, load_causal_lm
    from rlhaif.policy.value_head import ActorCritic

    policy, tok = load_causal_lm(cfg.model, dtype=cfg.dtype, merge_adapter=True)  # SFT adapter → merged base
    ref = None
    if cfg.lora_r > 0:
        policy = add_lora(policy, r=cfg.lora_r, alpha=cfg.lora_scale_alpha)
    else:
        ref = copy.deepcopy(policy).eval().requires_grad_(False)
    value_model = None
    if cfg.value_model:
        lm, _ = load_causal_lm(cfg.value_model, dtype=cfg.dtype, merge_adapter=True)
        value_model = lm.base_model  # the critic keeps the trunk only: it needs hidden states, never an LM head
        del lm
        if cfg.lora_r > 0:
            value_model = add_lora(value_model, r=cfg.lora_r, alpha=cfg.lora_scale_alpha, task_type="FEATURE_EXTRACTION")
    model = ActorCritic(policy, value_model)
    if cfg.advantage_estimator != "gae":  # critic-free: the head is never trained (and DDP needs no grad for it)
        model.value_head.requires_grad_(False)
    model.eval()  # no dropout: old and new log-probs must come from the same deterministic function
    return model, ref, tok


def context_length(model) -> int | None:
    cfg = model.config
    return getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)


def encode_all_prompts(cfg: PPOConfig, tok, records, context: int | None) -> list[list[int]]:
    from rlhaif.tokens import encode_prompts

    try:
        ids = encode_prompts(tok, [r.prompt for r in records], cfg.max_prompt_length)
    except RlhaifError as e:
        raise RlhaifError(f"{cfg.prompts}: {e}") from None
    for i, p in enumerate(ids):
        if context and len(p) + cfg.max_new_tokens > context:
            raise RlhaifError(f"{cfg.prompts}: prompt {records[i].id or i} is {len(p)} tokens; with max_new_tokens="
                              f"{cfg.max_new_tokens} it exceeds the model's context of {context} tokens: shorten "
                              f"it, or lower max_new_tokens or max_prompt_length")
    return ids


def rollout_engine(cfg: PPOConfig, policy, tok, prompt_ids: list[list[int]], rank: int):
    """The colocated vLLM engine for 'vllm' rollouts, built from ``policy``'s current weights (LoRA merged),
    or None for 'hf' rollouts."""
    if cfg.rollout_backend != "vllm":
        return None
    from rlhaif.generate import engine_for, use_vllm

    use_vllm("vllm", "ppo (rollout_backend: vllm)")  # the message when vLLM is missing
    return engine_for(policy, tok, max(map(len, prompt_ids)) + cfg.max_new_tokens, cfg.seed + rank, cfg.dtype)


def engine_rollout(engine, cfg: PPOConfig, prompts: list[list[int]], pad_id: int, eos, step: int, rank: int,
                   world: int, device):
    """(Rollout, the sampler's log-probs (B, R)) of one response per prompt sampled by ``engine`` with the
    plain softmax at T, seeded by (seed, step, rank): a resumed run draws what the uninterrupted one would."""
    from rlhaif.engines.vllm_engine import rollout_from_samples
    from rlhaif.generate import SamplingConfig

    sampling = SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature)
    seed = ((cfg.seed * 100_003 + step) * world + rank) % 2**31
    samples = [r[0] for r in engine.sample(prompts, 1, sampling, eos, seed)]
    return rollout_from_samples(prompts, samples, pad_id, device)


def prompt_indices(step: int, n: int, batch: int, rank: int, world: int, seed: int) -> list[int]:
    """Indices of this process's prompts at ``step``: a fixed function of the step, so a resumed run draws
    exactly the prompts the uninterrupted run would: the stream of seeded epoch permutations every loop draws
    its data from (``rlhaif.training.stream_indices``)."""
    from rlhaif.training import stream_indices

    return stream_indices(((step - 1) * world + rank) * batch, batch, n, seed)


def reuses_update_logprobs(cfg: PPOConfig, critic: bool, kl_reward: bool, engine) -> bool:
    """Whether a step's old log-probs can be the update's own, detached (TRL's GRPOTrainer does the same):
    one epoch of one minibatch updates at the very weights that sampled, so the ratio is 1 by construction.
    Only without a critic (GAE needs the values first), with the KL as a loss term (a KL in the reward needs
    the log-probs before the advantages) and with rlhaif's own sampler (another sampler's tokens are reweighted
    by the old log-probs before the update)."""
    return (not critic and not kl_reward and engine is None and cfg.ppo_epochs == 1
            and cfg.mini_batch_size == cfg.batch_size)


def forward_response(model, batch: dict, temperature: float, with_values: bool = True):
    """(logprobs (B, R), values (B, R), log-softmax of logits/T (B, R, V)) of the response tokens; position
    P−1+t predicts response token t and its hidden state is the state V(s_t) is read from. The full
    log-softmax is returned because the entropy (bonus or statistic) is computed from the same pass.
    ``with_values=False`` (no critic): values are zeros and the value head is not run."""
    R = batch["response_ids"].shape[1]
    logits, values = model(batch["input_ids"], batch["attention_mask"], logits_to_keep=R + 1, with_values=with_values)
    logp = torch.log_softmax(logits[:, :-1].float() / temperature, dim=-1)
    values = values[:, :-1].float() if with_values else torch.zeros_like(logp[..., 0])
    return logp.gather(-1, batch["response_ids"].unsqueeze(-1)).squeeze(-1), values, logp


# ---------------------------------------------------------------------------------------------- the loop


def run_ppo(cfg: PPOConfig) -> dict:
    from rlhaif.data.io import append_jsonl
    from rlhaif.generate import read_prompts
    from rlhaif.metrics import MetricsLogger
    from rlhaif.policy.advantages import gae, masked_mean, whiten
    from rlhaif.policy.group_advantages import (LOSS_AGGREGATION, group_advantages, group_prompt_indices,
                                                group_stats, kl_loss, loss_token_weights)
    from rlhaif.policy.kl import kl_penalized_rewards, token_kl
    from rlhaif.policy.importance import tis_weights
    from rlhaif.policy.kl_control import AdaptiveKLController, FixedKLController
    from rlhaif.policy.losses import entropy_from_logprobs, explained_variance, policy_loss, value_loss
    from rlhaif.policy.rollout import decode_responses, response_logprobs, row_seed, sample_responses
    from rlhaif.precision import choose_precision, sampling_copy
    from rlhaif.scorers import load_scorer as load_spec
    from rlhaif.tokens import eos_ids
    from rlhaif.training import (finish_run, load_checkpoint, make_accelerator, make_optimizer, save_checkpoint,
                                 save_pretrained_atomic, seed_everything, start_run)

    t_start = time.time()
    out = Path(cfg.output_dir)
    acc = make_accelerator(mixed_precision=cfg.mixed_precision, log_with=cfg.log_with, project_dir=out)
    rank, world = acc.process_index, acc.num_processes
    check_batch_sizes(cfg, world)
    seed_everything(cfg.seed)
    records = read_prompts(cfg.prompts)
    scorer, scorer_name = load_scorer(cfg, device=acc.device)
    monitors = {name: load_spec(spec, device=acc.device) for name, spec in cfg.monitor_scorers.items()}
    model, ref, tok = load_policy(cfg)
    prompt_ids = encode_all_prompts(cfg, tok, records, context_length(model.policy))
    eos = eos_ids(tok, model.policy)
    optimizer, scheduler = make_optimizer(model, cfg.learning_rate, total_steps=cfg.steps)
    model, optimizer = acc.prepare(model, optimizer)
    if ref is not None:
        ref.to(acc.device)
    kl_ctl = (AdaptiveKLController(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon) if cfg.kl_target
              else FixedKLController(cfg.kl_coef))

    start = 0
    ckpt = start_run(cfg, "ppo", acc)  # resume (refused on other settings, logs cut back) or a fresh start
    if ckpt is not None:
        state = load_checkpoint(ckpt, model, optimizer, scheduler, acc)  # weights, optimizer, scheduler, RNG
        start = state["step"]
        kl_ctl.load_state_dict(state["kl_ctl"])
    else:
        seed_everything(cfg.seed + rank)  # each process samples differently
    if cfg.log_with:
        acc.init_trackers("ppo", config=cfg.model_dump(mode="json"))
    engine = rollout_engine(cfg, acc.unwrap_model(model).policy, tok, prompt_ids, rank)  # resumed weights on resume

    mb_per_epoch = cfg.batch_size // cfg.mini_batch_size
    K, critic = cfg.num_generations, cfg.advantage_estimator == "gae"  # K rollouts per prompt; GAE has a critic
    kl_reward, aggregation = kl_in_reward(cfg), LOSS_AGGREGATION[cfg.advantage_estimator]
    reuse = reuses_update_logprobs(cfg, critic, kl_reward, engine)
    step, row = start, {}
    prec, sampler = choose_precision(cfg.precision, acc.device), None
    show = ("objective/score", "objective/kl", "objective/beta", "policy/clipfrac")
    with MetricsLogger(out, total_steps=cfg.steps, description="ppo", accelerator=acc, show=show,
                       start_step=start) as log:
        for step in range(start + 1, cfg.steps + 1):
            # 1. Rollout: sample from the current policy (LoRA on), plain softmax at T.
            t0 = time.perf_counter()
            idx = group_prompt_indices(prompt_indices(step, len(records), cfg.batch_size // K, rank, world, cfg.seed), K)
            core = acc.unwrap_model(model)
            if engine is None:  # the current weights: a bf16 copy (refreshed here) or the policy itself
                sampler = sampling_copy(core.policy, prec, into=sampler)
                seeds = [row_seed(cfg.seed, step, rank, r) for r in range(len(idx))]  # a stream per row
                rollout, sampler_logprobs = sample_responses(sampler, [prompt_ids[i] for i in idx],
                                                             tok.pad_token_id, eos, cfg.max_new_tokens,
                                                             cfg.temperature, seeds), None
            else:
                rollout, sampler_logprobs = engine_rollout(engine, cfg, [prompt_ids[i] for i in idx],
                                                           tok.pad_token_id, eos, step, rank, world, acc.device)
            responses = decode_responses(tok, rollout)
            t1 = time.perf_counter()

            # 2. Score the text (the reward model re-tokenizes with its own tokenizer).
            prompts = [records[i].prompt for i in idx]
            scores = check_scores(scorer(prompts, responses), len(idx), scorer_name).to(acc.device)
            if cfg.score_clip is not None:
                scores = scores.clamp(-cfg.score_clip, cfg.score_clip)
            t2 = time.perf_counter()
            watched = {f"monitor/{name}": check_scores(fn(prompts, responses), len(idx), f"monitor '{name}'").mean()
                       for name, fn in monitors.items()}  # watched, never rewarded

            # 3. Old log-probs and values, reference log-probs, KL-penalized rewards, GAE.
            batch = {"input_ids": rollout.input_ids, "attention_mask": rollout.attention_mask,
                     "response_ids": rollout.response_ids}
            mask = rollout.response_mask.float()  # (B, R)
            # Under the update's autocast (mixed_precision bf16: bf16 products), so that the first ratio is 1.
            with torch.no_grad(), acc.autocast():
                if reuse:  # the update's own forward gives the old log-probs (step 4): one policy pass less
                    old_logprobs, old_values, rollout_entropy = None, torch.zeros_like(mask), None
                else:
                    old_logprobs, old_values, logp = forward_response(core, batch, cfg.temperature, critic)
                    rollout_entropy, _ = entropy_from_logprobs(logp, mask)
                    del logp
                if ref is None:
                    with core.policy.disable_adapter():
                        ref_logprobs = response_logprobs(core.policy, rollout, cfg.temperature)
                else:
                    ref_logprobs = response_logprobs(ref, rollout, cfg.temperature)
                beta = kl_ctl.value if kl_reward else 0.0  # the KL as a loss term: scores alone are the reward
                # (reused: β is 0 here, the KL being a loss term, so the placeholder KL of 0 changes no reward)
                rewards, kl_stats = kl_penalized_rewards(scores, ref_logprobs if reuse else old_logprobs,
                                                         ref_logprobs, mask, beta, rollout.eos_reached,
                                                         cfg.missing_eos_penalty, cfg.kl_estimator)
                old_values = old_values * mask
                if critic:
                    advantages, returns = gae(rewards, old_values, mask, cfg.gamma, cfg.lam)
                    advantages = whiten(advantages, mask)
                else:  # one sequence reward per response, its group's baseline, the same Â on every token
                    seq_advantages, _ = group_advantages(kl_stats["scores"] - beta * kl_stats["kl"], K,
                                                         cfg.advantage_estimator)
                    advantages, returns = seq_advantages[:, None] * mask, old_values
            batch.update(old_values=old_values, advantages=advantages, returns=returns, mask=mask,
                         ref_logprobs=ref_logprobs, **({} if reuse else {"old_logprobs": old_logprobs}))
            engine_stats = {}
            if sampler_logprobs is not None:  # another sampler drew the tokens: truncated IS per token
                batch["tis"], engine_stats = tis_weights(old_logprobs, sampler_logprobs, mask, cfg.tis_cap)

            # 4. PPO epochs over minibatches; stop the step early if the update drifts past the KL ceiling.
            stats: dict[str, list[float]] = {}
            early_stop = False
            for _epoch in range(cfg.ppo_epochs):
                order = torch.randperm(cfg.batch_size)
                for k in range(mb_per_epoch):
                    mb_idx = order[k * cfg.mini_batch_size:(k + 1) * cfg.mini_batch_size].to(acc.device)
                    mb = {key: v[mb_idx] for key, v in batch.items()}
                    with acc.autocast():
                        logprobs, values, logp = forward_response(model, mb, cfg.temperature, critic)
                    # token weights: the estimator's loss aggregation (token mean, per-response mean, constant)
                    weights = loss_token_weights(mb["mask"], aggregation, cfg.max_new_tokens)
                    if "tis" in mb:  # w ≥ 0 scales max(−Â·r, −Â·clip(r)) exactly as it scales Â
                        weights = weights * mb["tis"]
                    old = logprobs.detach() if reuse else mb["old_logprobs"]  # reused: the ratio is 1
                    pg_loss, pg_stats = policy_loss(logprobs, old, mb["advantages"] * weights, mb["mask"],
                                                    cfg.clip_range)
                    with torch.set_grad_enabled(cfg.entropy_coef > 0):  # off: a statistic, no (B, R, V) graph
                        entropy, _ = entropy_from_logprobs(logp, mb["mask"])
                    if reuse:  # this minibatch is the whole rollout batch (permuted): its KL and entropy
                        kl_stats["kl"][mb_idx] = token_kl(logprobs.detach(), mb["ref_logprobs"], mb["mask"],
                                                          cfg.kl_estimator).sum(-1)
                        rollout_entropy = entropy.detach()
                    loss = pg_loss - cfg.entropy_coef * entropy
                    mb_stats = [("policy/loss", pg_loss), ("policy/entropy", entropy),
                                *(("policy/" + n, s) for n, s in pg_stats.items())]
                    if critic:
                        v_loss, v_stats = value_loss(values, mb["old_values"], mb["returns"], mb["mask"],
                                                     cfg.clip_range_value)
                        loss = loss + cfg.vf_coef * v_loss
                        mb_stats += [("value/loss", v_loss), ("value/clipfrac", v_stats["vf_clipfrac"])]
                    if not kl_reward:  # GRPO's form: β·k3 to the reference as a loss term
                        k_loss, _ = kl_loss(logprobs, mb["ref_logprobs"], mb["mask"], weights)
                        loss = loss + cfg.kl_loss_coef * k_loss
                        mb_stats.append(("policy/kl_loss", k_loss))
                    acc.backward(loss)
                    acc.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    for name, v in mb_stats:
                        stats.setdefault(name, []).append(float(v.detach()))
                    approx_kl = acc.reduce(pg_stats["approx_kl"].detach().reshape(1), "mean")  # same decision on all ranks
                    if cfg.kl_ceiling is not None and float(approx_kl) > cfg.kl_ceiling:
                        early_stop = True
                        break
                if early_stop:
                    break
            scheduler.step()
            if engine is not None:  # the engine samples the next step from the updated policy
                t_sync = time.perf_counter()
                engine.update_weights(acc.unwrap_model(model).policy)
                engine_stats["time/weight_sync"] = torch.tensor(time.perf_counter() - t_sync)
            t3 = time.perf_counter()

            # 5. Metrics (averaged over processes), β update, samples, checkpoint.
            kl_coef_now = kl_ctl.value if kl_reward else cfg.kl_loss_coef  # the β in force, reward or loss term
            local = {
                "objective/score": scores.mean(), "objective/kl": kl_stats["kl"].mean(),
                "objective/non_score_reward": -kl_coef_now * kl_stats["kl"].mean(),
                "objective/rlhf_reward": (kl_stats["scores"] - kl_coef_now * kl_stats["kl"]).mean(),
                "objective/entropy": rollout_entropy,
                "response/length": mask.sum(-1).mean(), "response/eos_share": rollout.eos_reached.float().mean(),
                **{k: torch.tensor(sum(v) / len(v)) for k, v in stats.items()}, **engine_stats, **watched,
            }
            if critic:
                local["value/explained_variance"] = explained_variance(old_values, returns, mask)
            if K > 1:  # groups of K responses to one prompt: how often they all score alike, and their spread
                g = group_stats(kl_stats["scores"] - beta * kl_stats["kl"], K)
                local.update({"objective/zero_std_share": g["zero_std_share"],
                              "objective/group_score_std": group_stats(kl_stats["scores"], K)["group_std"]})
            keys = sorted(local)
            reduced = acc.reduce(torch.stack([torch.as_tensor(local[k], dtype=torch.float32).to(acc.device)
                                              for k in keys]), "mean")
            row = {k: float(v) for k, v in zip(keys, reduced)}
            row.update({"objective/beta": kl_coef_now, "policy/early_stop": float(early_stop),
                        "train/learning_rate": scheduler.get_last_lr()[0], "time/generate": t1 - t0, "time/score": t2 - t1,
                        "time/train": t3 - t2, "samples_per_second": cfg.batch_size * world / (t3 - t0)})
            kl_ctl.update(row["objective/kl"], cfg.batch_size * world)
            log.log(step, row)
            if acc.is_main_process and cfg.sample_every and step % cfg.sample_every == 0:
                for i in range(min(4, len(idx))):
                    append_jsonl(out / "samples.jsonl", {"step": step, "prompt": prompt_text(prompts[i]),
                                                         "response": responses[i], "score": float(scores[i]),
                                                         "eos": bool(rollout.eos_reached[i])})
            done = cfg.score_threshold is not None and row["objective/score"] >= cfg.score_threshold
            if step % cfg.save_every == 0 or step == cfg.steps or done:
                save_checkpoint(out, step, model, optimizer, scheduler, {"kl_ctl": kl_ctl.state_dict()}, acc)
            if done:
                log.print(f"score {row['objective/score']:.3f} reached score_threshold {cfg.score_threshold}: stop")
                break

    if engine is not None:
        engine.close()
    core = acc.unwrap_model(model)
    from rlhaif.models.loading import is_adapter_folder

    merge = cfg.merge_lora or (cfg.lora_r > 0 and is_adapter_folder(cfg.model))  # SFT adapter merged at load
    model_dir = save_pretrained_atomic(core.policy, tok, out / "model", merge_lora=merge, accelerator=acc)
    if acc.is_main_process and critic:
        from safetensors.torch import save_file

        save_file({k: v.detach().cpu().contiguous() for k, v in core.value_head.state_dict().items()},
                  str(out / "value_head.safetensors"))
    checksum = float(sum(p.detach().double().abs().sum() for p in core.parameters() if p.requires_grad))
    result = finish_run("ppo", cfg, {"model": str(model_dir), "metrics": row, "steps": step, "resumed_from": start,
                                     "precision": prec.as_manifest(),
                                     "rank": rank, "param_checksum": checksum}, t_start, acc)
    acc.end_training()
    return result
