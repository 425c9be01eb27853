"""`rlhaif ppo`: PPO with a KL penalty against a reference policy (Ouyang et al. 2022; Ziegler et al. 2019).

One step: sample ``num_generations`` responses per prompt in one batch (rollout.py) → score the text (reward
model or a Python function) → old log-probs, values and reference log-probs → per-token rewards with the KL
penalty (kl.py) → GAE and whitening (advantages.py), or without a critic RLOO / GRPO / Dr. GRPO over each
prompt's group (group_advantages.py, ``advantage_estimator``) → ``ppo_epochs`` passes over minibatches of the
clipped losses (losses.py; GRPO's k3 KL loss term) → β update (kl_control.py) → metrics, samples, checkpoint.
In code (as OpenRLHF): ``ExperienceMaker.make`` turns prompts into an ``Experience`` (rollout, ``Scoring``,
old / reference log-probs, values, rewards, advantages), ``ppo_update`` runs the epochs over it with the loss
of ``ppo_loss``, ``step_metrics`` makes the step's row; ``run_ppo`` sets up and loops.

Rollouts come from the policy itself, or with ``rollout_backend: vllm`` from a vLLM engine colocated in the
process (weights synced after every step, each token's policy-gradient term weighted by truncated importance
sampling: importance.py, docs/ppo.md).

Reference policy: with LoRA, the same weights with the adapter disabled (one copy of the base in memory);
a LoRA SFT adapter given as ``model`` is merged into the base first, so the reference is the SFT policy,
not the raw base (TRL issues 495, 536). With full fine-tuning, a frozen copy. With ``kl_free``, none at all.

The online-RL options of 2025–2026 (docs/ppo.md, "Knobs"): clip-higher and GSPO's sequence ratio in the
policy loss, the loss aggregation, DAPO's dynamic sampling (``dynamic_sampling``: flat groups dropped before
any forward pass, more prompts sampled), overlong shaping and truncated-completion masking, KL-free runs.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar, Literal, Optional

import torch

from rlhaif.config import LoRAConfig, TrainConfig
from rlhaif.data.records import prompt_text
from rlhaif.errors import ConfigError, RlhaifError
from rlhaif.models.loading import DEFAULT_POLICY
from rlhaif.objectives import ObjectiveScorers, ObjectivesConfig
from rlhaif.policy.advantages import zero_pads
from rlhaif.policy.group_advantages import check_group_settings
from rlhaif.policy.importance import tis_weights
from rlhaif.policy.losses import entropy_from_logprobs
from rlhaif.policy.rollout import Rollout
from rlhaif.training import TrainResult

Scorer = Callable[[list, list], list]


class PPOConfig(TrainConfig, LoRAConfig, ObjectivesConfig):
    """Settings of `rlhaif ppo`. Defaults start from TRL 1.0.0's PPO (γ=1, λ=0.95, clips 0.2, vf 0.1,
    β=0.05, 4 epochs, T=0.7) and add LoRA, an entropy bonus (off), adaptive KL (off) and a KL ceiling.
    Checkpoints, resume, logging and precision come from ``TrainConfig``; several objectives in place of one
    scorer from ``ObjectivesConfig`` (rlhaif.objectives)."""

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
    see proxy and gold score against KL over training (Gao et al. 2022; the study-overoptimization recipe)."""
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
    """PPO ratio clip ε (ε_low: the ratio's lower bound is 1 − ε; also its upper bound 1 + ε unless
    clip_range_high is set)."""
    clip_range_high: Optional[float] = None
    """Clip-higher (DAPO, Yu et al. 2025): the ratio's upper bound is 1 + clip_range_high (0.28 in the paper),
    so a token with a positive advantage may gain more probability before its gradient stops and the entropy
    does not collapse; None = clip_range (the symmetric clip)."""
    importance_sampling_level: Literal["token", "sequence"] = "token"
    """'token' = PPO's ratio per token; 'sequence' = GSPO (Zheng et al. 2025): one ratio per response, the
    geometric mean of its token ratios exp(mean_t(log π_θ − log π_old)), clipped as a whole (the paper uses
    clip ranges of about 3e-4 / 4e-4). With vLLM rollouts the truncated importance weights still apply per token."""
    loss_aggregation: Optional[Literal["token_mean", "sequence_mean", "constant"]] = None
    """How token losses add up: 'token_mean' = Σ over all tokens / number of tokens (DAPO; long responses weigh
    in proportion to their length), 'sequence_mean' = mean over responses of each one's token mean (GRPO),
    'constant' = token sums / (responses × max_new_tokens) (Dr. GRPO). None = the estimator's own: token_mean
    for gae and rloo, sequence_mean for grpo, constant for dr_grpo."""
    dynamic_sampling: bool = False
    """DAPO's dynamic sampling (Yu et al. 2025): drop the groups whose num_generations responses all score the
    same (zero advantage, no gradient) and sample more prompts until the batch holds batch_size /
    num_generations informative groups, at most dynamic_sampling_max_rounds extra rounds (then the batch is
    filled with dropped groups). Group estimators only (rloo, grpo, dr_grpo)."""
    dynamic_sampling_max_rounds: int = 3
    """Cap on the extra sampling rounds per step with dynamic_sampling; each round samples batch_size / K more
    prompts K times."""
    overlong_buffer: Optional[int] = None
    """DAPO's overlong shaping: the last L_c tokens before max_new_tokens in which the score is lowered by
    clip((L − (max_new_tokens − L_c)) / L_c, 0, 1) × overlong_penalty; None = off."""
    overlong_penalty: float = 1.0
    """The full overlong penalty, reached at max_new_tokens (used with overlong_buffer)."""
    mask_truncated_completions: bool = False
    """Leave responses cut by max_new_tokens (no EOS) out of the loss (DAPO's overlong filtering; TRL's
    mask_truncated_completions): their score says nothing about an answer that was never finished."""
    kl_free: bool = False
    """No KL to a reference (β = 0): no reference model is loaded (full fine-tuning makes no frozen copy) and
    no reference forward pass is run (with LoRA, no adapter-disabled pass); kl_coef and kl_loss_coef are not
    used (a value other than 0 or their default is refused) and objective/kl is not logged."""
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
    check_group_settings(cfg.advantage_estimator, cfg.num_generations, cfg.batch_size, kl_in_reward(cfg),
                         cfg.kl_target, cfg.value_model)
    check_knob_settings(cfg)
    if cfg.objectives:
        if cfg.reward_model is not None or cfg.reward_fn is not None:
            raise ConfigError("give either one scorer (reward_model or reward_fn) or several (objectives), not both")
        cfg.build_objectives()  # an unknown rule, a weight for a scorer that is not there, ...: one message
        if cfg.risky_field:
            from rlhaif.objectives import prompt_field_values

            prompt_field_values(cfg.prompts, cfg.risky_field)  # a prompt without the field: file, line, field
    elif cfg.reward_model is None and cfg.reward_fn is None:
        raise ConfigError("ppo needs a scorer: give reward_model (a folder from `rlhaif reward train`), "
                          "reward_fn ('module:function' or 'file.py:function') or objectives (name: scorer)")


def check_knob_settings(cfg: PPOConfig) -> None:
    """One ConfigError per impossible combination of the 2025–2026 knobs, naming the field to change."""
    from rlhaif.policy.group_advantages import GROUP_ESTIMATORS

    if cfg.clip_range_high is not None and cfg.clip_range_high < 0:
        raise ConfigError(f"clip_range_high is the ratio's upper clip 1 + ε_high and must be ≥ 0, "
                          f"got {cfg.clip_range_high}")
    if cfg.dynamic_sampling:
        if cfg.num_generations < 2:
            raise ConfigError(f"dynamic_sampling drops groups whose responses to one prompt all score the same; "
                              f"with num_generations {cfg.num_generations} there are no groups: set "
                              f"num_generations to 2 or more, or dynamic_sampling false")
        if cfg.advantage_estimator not in GROUP_ESTIMATORS:
            raise ConfigError(f"dynamic_sampling drops groups whose group advantages are all 0; "
                              f"advantage_estimator '{cfg.advantage_estimator}' has a critic that still gives "
                              f"them a gradient: use rloo, grpo or dr_grpo, or dynamic_sampling false")
        if cfg.dynamic_sampling_max_rounds < 0:
            raise ConfigError(f"dynamic_sampling_max_rounds must be ≥ 0, got {cfg.dynamic_sampling_max_rounds}")
    if cfg.overlong_buffer is not None and not 0 < cfg.overlong_buffer <= cfg.max_new_tokens:
        raise ConfigError(f"overlong_buffer ({cfg.overlong_buffer}) counts the last tokens before "
                          f"max_new_tokens ({cfg.max_new_tokens}) and must be in 1..{cfg.max_new_tokens}")
    if cfg.overlong_penalty < 0:
        raise ConfigError(f"overlong_penalty is subtracted from the score and must be ≥ 0, got {cfg.overlong_penalty}")
    if cfg.kl_free:
        if cfg.kl_target is not None:
            raise ConfigError("kl_free runs without a reference, so there is no KL for kl_target to adapt β to: "
                              "set kl_target to null or kl_free false")
        coef = "kl_coef" if kl_in_reward(cfg) else "kl_loss_coef"
        value = getattr(cfg, coef)  # its default is not used (β = 0); another value is a contradiction
        if value not in (0, type(cfg).model_fields[coef].default):
            raise ConfigError(f"kl_free means β = 0, but {coef} is set to {value}: drop {coef} "
                              f"(or set it to 0), or kl_free false")


def kl_in_reward(cfg: PPOConfig) -> bool:
    """Where the KL to the reference goes: the reward (β = kl_coef) or a k3 loss term (kl_loss_coef)."""
    if cfg.kl_in_reward is not None:
        return cfg.kl_in_reward
    return cfg.advantage_estimator in ("gae", "rloo")


def loss_aggregation(cfg: PPOConfig) -> str:
    """How token losses add up: ``loss_aggregation``, or the advantage estimator's own."""
    from rlhaif.policy.group_advantages import LOSS_AGGREGATION

    return cfg.loss_aggregation or LOSS_AGGREGATION[cfg.advantage_estimator]


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
    """(ActorCritic, frozen reference model or None when LoRA's disabled adapter is the reference or there is
    none (``kl_free``), tokenizer)."""
    from rlhaif.models.loading import add_lora, load_causal_lm
    from rlhaif.policy.value_head import ActorCritic

    policy, tok = load_causal_lm(cfg.model, dtype=cfg.dtype, merge_adapter=True)  # SFT adapter → merged base
    ref = None
    if cfg.lora_r > 0:
        policy = add_lora(policy, r=cfg.lora_r, alpha=cfg.lora_scale_alpha)
    elif not cfg.kl_free:  # KL-free: no frozen copy
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
                   world: int, device, sampling_round: int = 0):
    """(Rollout, the sampler's log-probs (B, R)) of one response per prompt sampled by ``engine`` with the
    plain softmax at T, seeded by (seed, step, rank, dynamic sampling's round): a resumed run draws what the
    uninterrupted one would."""
    from rlhaif.engines.vllm_engine import rollout_from_samples
    from rlhaif.generate import SamplingConfig

    sampling = SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature)
    seed = ((cfg.seed * 100_003 + step) * world + rank + sampling_round * 1_000_003) % 2**31
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


@dataclass
class Sampled:
    """One sampling round, scored: B rows, K consecutive rows per prompt (tensors (B,) or (B, R))."""

    idx: list[int]  # each row's prompt (an index into the prompt file)
    prompts: list  # each row's prompt as given (text or messages)
    rollout: Rollout
    sampler_logprobs: Optional[torch.Tensor]  # (B, R) the sampler's (vLLM), None when the policy sampled
    responses: list[str]
    scores: torch.Tensor  # the scorer's, clipped
    score_metrics: dict[str, torch.Tensor]  # per-response metrics of the scoring (monitor/<name>)
    overlong: torch.Tensor  # DAPO's overlong penalty, 0 without overlong_buffer
    shaped: torch.Tensor  # scores less the overlong and missing-EOS penalties: the reward before the KL


def take_rows(parts: list[Sampled], rows: list[tuple[int, int]], pad_id: int) -> Sampled:
    """The rows ``(part, row)`` of several rounds as one Sampled, re-padded to the longest prompt and response
    among them (``rollout_from_ids``)."""
    from rlhaif.policy.rollout import rollout_from_ids

    def ids(tokens, mask, i):
        return tokens[i][mask[i].bool()].tolist()

    def stack(get):
        return torch.stack([get(s)[i] for s, i in picked])

    picked = [(parts[p], i) for p, i in rows]
    device = parts[0].rollout.response_ids.device
    rollout = rollout_from_ids([ids(s.rollout.query_ids, s.rollout.query_mask, i) for s, i in picked],
                               [ids(s.rollout.response_ids, s.rollout.response_mask, i) for s, i in picked],
                               pad_id, [bool(s.rollout.eos_reached[i]) for s, i in picked], device)
    sampler_logprobs = None
    if parts[0].sampler_logprobs is not None:
        sampler_logprobs = torch.zeros(rollout.response_ids.shape, device=device)
        for j, (s, i) in enumerate(picked):
            n = int(s.rollout.response_mask[i].sum())
            sampler_logprobs[j, :n] = s.sampler_logprobs[i, :n]
    return Sampled([s.idx[i] for s, i in picked], [s.prompts[i] for s, i in picked], rollout, sampler_logprobs,
                   [s.responses[i] for s, i in picked], stack(lambda s: s.scores),
                   {k: stack(lambda s: s.score_metrics[k]) for k in parts[0].score_metrics},
                   stack(lambda s: s.overlong), stack(lambda s: s.shaped))


def dynamic_sampling(first: Sampled, sample_round: Callable[[int], Sampled], num_generations: int,
                     max_rounds: int, pad_id: int) -> tuple[Sampled, dict[str, float]]:
    """DAPO's dynamic sampling (Yu et al. 2025): keep the groups of ``first`` whose shaped scores are not all
    equal and call ``sample_round(r)`` (r = 1, 2, …, at most ``max_rounds``) for as many groups again until
    as many informative groups as ``first`` has are kept; short after the last round, the batch is filled
    with flat groups in the order met. Returns (the batch, stats: informative_share of ``first``,
    discarded_groups, resampled_groups, rounds, filled_groups)."""
    from rlhaif.policy.group_advantages import informative_rows

    K = num_generations
    groups = len(first.idx) // K
    parts, kept, flat, informative_share = [first], [], [], 1.0
    for r in range(max_rounds + 1):
        part = first if r == 0 else sample_round(r)
        if r:
            parts.append(part)
        rows, flat_rows = informative_rows(part.shaped, K, groups - len(kept) // K)
        if r == 0:  # every group of the first round was looked at
            informative_share = 1 - len(flat_rows) / len(part.idx)
        kept += [(r, i) for i in rows]
        flat += [(r, i) for i in flat_rows]
        if len(kept) == groups * K:
            break
    filled = flat[:groups * K - len(kept)]
    stats = {"dynamic_sampling/informative_share": informative_share,
             "dynamic_sampling/discarded_groups": (len(flat) - len(filled)) / K,
             "dynamic_sampling/resampled_groups": float((len(parts) - 1) * groups),
             "dynamic_sampling/rounds": float(len(parts) - 1),
             "dynamic_sampling/filled_groups": len(filled) / K}
    return take_rows(parts, kept + filled, pad_id), stats


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


def response_batch(rollout: Rollout, rows: Optional[torch.Tensor] = None) -> dict[str, torch.Tensor]:
    """The token tensors ``forward_response`` reads, of ``rows`` (default: every row)."""
    batch = {"input_ids": rollout.input_ids, "attention_mask": rollout.attention_mask,
             "response_ids": rollout.response_ids}
    return batch if rows is None else {k: v[rows] for k, v in batch.items()}


# ------------------------------------------------------------------------------------- scoring and experience


class Scoring:
    """The one place a step's responses are scored: ``(prompt records, responses) -> (scores (B,), metrics)``,
    the reward's scores clipped to ±``score_clip``, and per-response metrics (B,) each by name: with several
    objectives each scorer's scores as ``objective/<name>`` (their combination is the reward), and the watching
    scorers as ``monitor/<name>``, which never enter the reward."""

    def __init__(self, scorer: Scorer | ObjectiveScorers, name: str, monitors: dict[str, Scorer],
                 score_clip: float | None):
        self.scorer, self.name, self.monitors, self.score_clip = scorer, name, monitors, score_clip

    def __call__(self, records: list, responses: list[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        prompts = [r.prompt for r in records]
        metrics: dict[str, torch.Tensor] = {}
        if isinstance(self.scorer, ObjectiveScorers):
            scores, each = self.scorer(records, responses)
            metrics.update({f"objective/{name}": s for name, s in each.items()})
        else:
            scores = check_scores(self.scorer(prompts, responses), len(responses), self.name)
        if self.score_clip is not None:
            scores = scores.clamp(-self.score_clip, self.score_clip)
        metrics.update({f"monitor/{name}": check_scores(fn(prompts, responses), len(responses), f"monitor '{name}'")
                        for name, fn in self.monitors.items()})
        return scores, metrics


@dataclass
class Experience:
    """One rollout batch and everything the update reads (OpenRLHF's Experience): B rows, K consecutive rows
    per prompt; tensors are (B,) or response-aligned (B, R) on the training device."""

    prompt_index: list[int]  # each row's prompt (an index into the prompt file)
    prompts: list  # each row's prompt as given (text or messages)
    responses: list[str]
    rollout: Rollout  # token ids and masks of prompt and response, eos_reached
    mask: torch.Tensor  # (B, R) float, 1 on response tokens
    loss_mask: torch.Tensor  # (B, R) the tokens the loss sees: ``mask`` less truncated responses if masked out
    scores: torch.Tensor  # (B,) the scorer's, clipped
    score_metrics: dict[str, torch.Tensor]  # (B,) each: per-response metrics of the scoring (objective/, monitor/)
    overlong: torch.Tensor  # (B,) DAPO's overlong penalty, 0 without overlong_buffer
    penalized_scores: torch.Tensor  # (B,) scores less the overlong and missing-EOS penalties: the reward before the KL
    kl: torch.Tensor  # (B,) summed per-token KL to the reference (filled in by the update when old is reused)
    beta: float  # β of the KL in the reward; 0 when the KL is a loss term
    ref_logprobs: Optional[torch.Tensor]  # (B, R) the reference policy's; None with kl_free (no reference)
    old_logprobs: Optional[torch.Tensor]  # (B, R) the sampling policy's; None: the update's own, detached
    values: torch.Tensor  # (B, R) the critic's at sampling time, 0 without a critic
    advantages: torch.Tensor  # (B, R)
    returns: torch.Tensor  # (B, R) value targets
    tis: Optional[torch.Tensor]  # (B, R) truncated importance weights when another sampler drew the tokens
    entropy: Optional[torch.Tensor]  # mean token entropy of the rollout (set by the update when old is reused)
    stats: dict[str, torch.Tensor]  # scalar statistics of the sampling (rollout/… with another sampler)
    timings: dict[str, float]  # time/generate, time/score

    @property
    def size(self) -> int:
        return len(self.responses)

    def sequence_rewards(self) -> torch.Tensor:
        """(B,) each response's reward R_i = score − β·KL: what the group estimators compare."""
        return self.penalized_scores - self.beta * self.kl


class ExperienceMaker:
    """Makes the Experience of a list of prompt indices (each repeated K times in a row): sample → score →
    old log-probs and values, reference log-probs → KL-penalized rewards → advantages (GAE and whitening, or
    the group estimator). Each call stands alone, so a step may call it again for more prompts."""

    def __init__(self, cfg: PPOConfig, acc, model, ref, tok, prompt_ids: list[list[int]], records, scoring: Scoring,
                 engine, eos, precision, kl_ctl):
        self.cfg, self.acc, self.model, self.ref, self.tok = cfg, acc, model, ref, tok
        self.prompt_ids, self.records, self.scoring, self.engine, self.eos = prompt_ids, records, scoring, engine, eos
        self.precision, self.kl_ctl, self.sampler = precision, kl_ctl, None
        self.critic, self.kl_reward = cfg.advantage_estimator == "gae", kl_in_reward(cfg)
        self.reuse = reuses_update_logprobs(cfg, self.critic, self.kl_reward, engine)

    def make(self, step: int, idx: list[int]) -> Experience:
        from rlhaif.policy.kl import kl_penalized_rewards

        cfg, acc = self.cfg, self.acc
        self.timings = {"time/generate": 0.0, "time/score": 0.0}
        batch, stats = self.sample_scored(step, idx), {}
        if cfg.dynamic_sampling:  # flat groups dropped before any forward pass: more prompts sampled instead
            batch, ds_stats = dynamic_sampling(
                batch, lambda r: self.sample_scored(step, self.round_indices(step, r), r), cfg.num_generations,
                cfg.dynamic_sampling_max_rounds, self.tok.pad_token_id)
            stats = {k: torch.tensor(v) for k, v in ds_stats.items()}
        rollout = batch.rollout
        mask = rollout.response_mask.float()  # (B, R)
        # Under the update's autocast (mixed_precision bf16: bf16 products), so that the first ratio is 1.
        with torch.no_grad(), acc.autocast():
            old_logprobs, values, entropy = self.sampling_policy_pass(rollout, mask)
            ref_logprobs = self.reference_logprobs(rollout)
            beta = self.kl_ctl.value if self.kl_reward else 0.0  # the KL as a loss term: scores alone are the reward
            # reused old log-probs: β is 0 (the KL is a loss term), so the placeholder KL of 0 changes no reward;
            # no reference (kl_free): a KL of exactly 0
            lp, ref_lp = ((torch.zeros_like(mask),) * 2 if ref_logprobs is None else
                          (ref_logprobs if old_logprobs is None else old_logprobs, ref_logprobs))
            rewards, kl_stats = kl_penalized_rewards(batch.scores - batch.overlong, lp, ref_lp, mask, beta,
                                                     rollout.eos_reached, cfg.missing_eos_penalty, cfg.kl_estimator)
            advantages, returns = self.advantages(rewards, kl_stats["scores"] - beta * kl_stats["kl"], values, mask)
        loss_mask = mask * rollout.eos_reached[:, None].to(mask.dtype) if cfg.mask_truncated_completions else mask
        tis = None
        if batch.sampler_logprobs is not None:  # another sampler drew the tokens: truncated IS per token
            tis, tis_stats = tis_weights(old_logprobs, batch.sampler_logprobs, mask, cfg.tis_cap)
            stats.update(tis_stats)
        return Experience(prompt_index=batch.idx, prompts=batch.prompts, responses=batch.responses, rollout=rollout,
                          mask=mask, loss_mask=loss_mask, scores=batch.scores, score_metrics=batch.score_metrics,
                          overlong=batch.overlong, penalized_scores=kl_stats["scores"], kl=kl_stats["kl"],
                          beta=beta, ref_logprobs=ref_logprobs, old_logprobs=old_logprobs, values=values,
                          advantages=advantages, returns=returns, tis=tis, entropy=entropy, stats=stats,
                          timings=self.timings)

    def sample_scored(self, step: int, idx: list[int], sampling_round: int = 0) -> Sampled:
        """Sample and score the prompts ``idx`` (each repeated K times in a row), with the overlong and
        missing-EOS penalties; the seconds go to ``self.timings``."""
        from rlhaif.policy.kl import missing_eos_scores, overlong_penalty
        from rlhaif.policy.rollout import decode_responses

        cfg = self.cfg
        t0 = time.perf_counter()
        rollout, sampler_logprobs = self.sample(step, [self.prompt_ids[i] for i in idx], sampling_round)
        responses = decode_responses(self.tok, rollout)
        t1 = time.perf_counter()
        prompts = [self.records[i].prompt for i in idx]  # the reward model re-tokenizes with its own tokenizer
        scores, score_metrics = self.scoring([self.records[i] for i in idx], responses)
        scores = scores.to(self.acc.device)
        overlong = (torch.zeros_like(scores) if cfg.overlong_buffer is None else
                    overlong_penalty(rollout.response_mask.sum(-1), cfg.max_new_tokens, cfg.overlong_buffer,
                                     cfg.overlong_penalty).to(scores))
        shaped = missing_eos_scores(scores - overlong, rollout.eos_reached, cfg.missing_eos_penalty)
        self.timings["time/generate"] += t1 - t0
        self.timings["time/score"] += time.perf_counter() - t1
        return Sampled(idx, prompts, rollout, sampler_logprobs, responses, scores, score_metrics, overlong, shaped)

    def round_indices(self, step: int, sampling_round: int) -> list[int]:
        """The prompts of dynamic sampling's extra round ``sampling_round`` of ``step``: batch_size / K more,
        from the prompt stream seeded by (seed, round), a fixed function of (step, round) as resume needs."""
        from rlhaif.policy.group_advantages import group_prompt_indices

        cfg, K = self.cfg, self.cfg.num_generations
        return group_prompt_indices(prompt_indices(step, len(self.records), cfg.batch_size // K, self.acc.process_index,
                                                   self.acc.num_processes, cfg.seed + sampling_round), K)

    def sample(self, step: int, prompt_ids: list[list[int]], sampling_round: int = 0
               ) -> tuple[Rollout, Optional[torch.Tensor]]:
        """(Rollout, the sampler's log-probs or None when the policy sampled) at the current weights, plain
        softmax at T: a bf16 copy of the policy (refreshed here) or the policy itself, or the vLLM engine."""
        from rlhaif.policy.rollout import row_seed, sample_responses
        from rlhaif.precision import sampling_copy

        cfg, acc = self.cfg, self.acc
        if self.engine is not None:
            return engine_rollout(self.engine, cfg, prompt_ids, self.tok.pad_token_id, self.eos, step,
                                  acc.process_index, acc.num_processes, acc.device, sampling_round)
        self.sampler = sampling_copy(acc.unwrap_model(self.model).policy, self.precision, into=self.sampler)
        # a random stream per row, from (seed, step, rank, row) and, for dynamic sampling's extra rounds, the round
        key = (cfg.seed, step, acc.process_index) + ((sampling_round,) if sampling_round else ())
        seeds = [row_seed(*key, r) for r in range(len(prompt_ids))]
        return sample_responses(self.sampler, prompt_ids, self.tok.pad_token_id, self.eos, cfg.max_new_tokens,
                                cfg.temperature, seeds), None

    def sampling_policy_pass(self, rollout: Rollout, mask: torch.Tensor):
        """(old log-probs (B, R), values (B, R), entropy): the policy's pass over its rollout; with reused
        log-probs no pass at all: (None, zeros, None), the update filling them in."""
        if self.reuse:
            return None, torch.zeros_like(mask), None
        old_logprobs, values, logp = forward_response(self.acc.unwrap_model(self.model), response_batch(rollout),
                                                      self.cfg.temperature, self.critic)
        entropy, _ = entropy_from_logprobs(logp, mask)
        return old_logprobs, zero_pads(values, mask), entropy

    def reference_logprobs(self, rollout: Rollout) -> Optional[torch.Tensor]:
        """(B, R) under the reference: LoRA's disabled adapter, or the frozen copy; None with kl_free (no pass)."""
        from rlhaif.policy.rollout import response_logprobs

        if self.cfg.kl_free:
            return None
        if self.ref is not None:
            return response_logprobs(self.ref, rollout, self.cfg.temperature)
        policy = self.acc.unwrap_model(self.model).policy
        with policy.disable_adapter():
            return response_logprobs(policy, rollout, self.cfg.temperature)

    def advantages(self, rewards: torch.Tensor, sequence_rewards: torch.Tensor, values: torch.Tensor,
                   mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(advantages, returns), (B, R): GAE over the per-token ``rewards`` and whitened, with a critic; else
        each response's group advantage from ``sequence_rewards`` (B,) on every one of its tokens."""
        from rlhaif.policy.advantages import gae, whiten
        from rlhaif.policy.group_advantages import group_advantages

        cfg = self.cfg
        if self.critic:
            advantages, returns = gae(rewards, values, mask, cfg.gamma, cfg.lam)
            return whiten(advantages, mask), returns
        seq_advantages, _ = group_advantages(sequence_rewards, cfg.num_generations, cfg.advantage_estimator)
        return zero_pads(seq_advantages[:, None].expand_as(mask), mask), values


# ------------------------------------------------------------------------------------------ loss and update


def ppo_loss(cfg: PPOConfig, exp: Experience, rows: torch.Tensor, logprobs: torch.Tensor, values: torch.Tensor,
             logp: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss of the minibatch ``rows`` of ``exp``, from the update's forward pass (log-probs, values, full
    log-softmax): clipped policy loss (token or sequence ratio, clip ε_low / ε_high) with the loss
    aggregation's token weights (× truncated IS weights) − c₂·entropy, + c₁·clipped value loss with a critic,
    + β·k3 to the reference when the KL is a loss term (GRPO's form), all over ``exp.loss_mask``'s tokens.
    Returns (loss, stats named as logged)."""
    from rlhaif.policy.group_advantages import loss_token_weights
    from rlhaif.policy.kl import kl_loss
    from rlhaif.policy.losses import policy_loss, value_loss

    mask = exp.loss_mask[rows]
    # token weights: the loss aggregation (token mean, per-response mean, constant)
    weights = loss_token_weights(mask, loss_aggregation(cfg), cfg.max_new_tokens)
    if exp.tis is not None:  # w ≥ 0 scales max(−Â·r, −Â·clip(r)) exactly as it scales Â
        weights = weights * exp.tis[rows]
    old = logprobs.detach() if exp.old_logprobs is None else exp.old_logprobs[rows]  # reused: the ratio is 1
    pg_loss, pg_stats = policy_loss(logprobs, old, exp.advantages[rows] * weights, mask, cfg.clip_range,
                                    cfg.clip_range_high, cfg.importance_sampling_level)
    with torch.set_grad_enabled(cfg.entropy_coef > 0):  # off: a statistic, no (B, R, V) graph
        entropy, _ = entropy_from_logprobs(logp, mask)
    loss = pg_loss - cfg.entropy_coef * entropy
    stats = {"policy/loss": pg_loss, "policy/entropy": entropy, **{"policy/" + n: s for n, s in pg_stats.items()}}
    if cfg.advantage_estimator == "gae":
        v_loss, v_stats = value_loss(values, exp.values[rows], exp.returns[rows], mask, cfg.clip_range_value)
        loss = loss + cfg.vf_coef * v_loss
        stats.update({"value/loss": v_loss, "value/clipfrac": v_stats["vf_clipfrac"]})
    if not kl_in_reward(cfg) and not cfg.kl_free:  # GRPO's form: β·k3 to the reference as a loss term
        k_loss, _ = kl_loss(logprobs, exp.ref_logprobs[rows], mask, weights)
        loss = loss + cfg.kl_loss_coef * k_loss
        stats["policy/kl_loss"] = k_loss
    return loss, stats


def ppo_update(cfg: PPOConfig, acc, model, optimizer, exp: Experience) -> tuple[dict[str, float], bool]:
    """``ppo_epochs`` passes over shuffled minibatches of ``exp``, one optimizer step each; the step stops
    early once the approx KL to the rollout policy passes ``kl_ceiling``. With reused old log-probs (one
    minibatch: the whole batch) the pass also fills in the rollout's KL and entropy. Returns (each loss
    statistic's mean over minibatches, whether it stopped early)."""
    from rlhaif.policy.kl import sequence_kl

    stats: dict[str, list[float]] = {}
    critic, early_stop = cfg.advantage_estimator == "gae", False
    for rows in minibatches(exp.size, cfg.mini_batch_size, cfg.ppo_epochs, acc.device):
        with acc.autocast():
            logprobs, values, logp = forward_response(model, response_batch(exp.rollout, rows), cfg.temperature, critic)
        loss, mb_stats = ppo_loss(cfg, exp, rows, logprobs, values, logp)
        if exp.old_logprobs is None:  # the update's log-probs are the rollout's: its KL and entropy
            if exp.ref_logprobs is not None:
                exp.kl[rows] = sequence_kl(logprobs.detach(), exp.ref_logprobs[rows], exp.mask[rows],
                                           cfg.kl_estimator)
            exp.entropy = mb_stats["policy/entropy"].detach()
        acc.backward(loss)
        acc.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        for name, v in mb_stats.items():
            stats.setdefault(name, []).append(float(v.detach()))
        approx_kl = acc.reduce(mb_stats["policy/approx_kl"].detach().reshape(1), "mean")  # same on all ranks
        early_stop = cfg.kl_ceiling is not None and float(approx_kl) > cfg.kl_ceiling
        if early_stop:
            break
    return {k: sum(v) / len(v) for k, v in stats.items()}, early_stop


def minibatches(n: int, size: int, epochs: int, device):
    """Row indices of each minibatch: ``epochs`` passes, each a fresh permutation of the ``n`` rows cut into
    ``n // size`` minibatches (a permutation is drawn when its pass begins)."""
    for _epoch in range(epochs):
        order = torch.randperm(n)
        for k in range(n // size):
            yield order[k * size:(k + 1) * size].to(device)


# ------------------------------------------------------------------------------------------------- metrics


def step_metrics(cfg: PPOConfig, acc, exp: Experience, update_stats: dict[str, float], early_stop: bool,
                 kl_coef: float, learning_rate: float, timings: dict[str, float]) -> dict[str, float]:
    """The step's row of metrics.jsonl: objective/, response/, the update's policy/ and value/ means,
    rollout/ and monitor/, averaged over processes; then β (``kl_coef``, the one in force: in the reward or
    of the loss term), the learning rate and this process's timings."""
    from rlhaif.policy.group_advantages import group_stats
    from rlhaif.policy.losses import explained_variance

    local = {
        "objective/score": exp.scores.mean(),
        **({} if cfg.kl_free else {"objective/kl": exp.kl.mean(), "objective/non_score_reward": -kl_coef * exp.kl.mean()}),
        "objective/rlhf_reward": (exp.penalized_scores - kl_coef * exp.kl).mean(),
        "objective/entropy": exp.entropy,
        "response/length": exp.mask.sum(-1).mean(), "response/eos_share": exp.rollout.eos_reached.float().mean(),
        **{k: torch.tensor(v) for k, v in update_stats.items()}, **exp.stats,
        **{k: v.mean() for k, v in exp.score_metrics.items()},
    }
    if cfg.overlong_buffer is not None or cfg.mask_truncated_completions:
        local.update({"response/truncated_share": (~exp.rollout.eos_reached.bool()).float().mean(),
                      "objective/overlong_penalty": exp.overlong.mean()})
    if cfg.advantage_estimator == "gae":
        local["value/explained_variance"] = explained_variance(exp.values, exp.returns, exp.mask)
    K = cfg.num_generations
    if K > 1:  # groups of K responses to one prompt: how often they all score alike, and their spread
        local.update({"objective/zero_std_share": group_stats(exp.sequence_rewards(), K)["zero_std_share"],
                      "objective/group_score_std": group_stats(exp.penalized_scores, K)["group_std"]})
    keys = sorted(local)
    reduced = acc.reduce(torch.stack([torch.as_tensor(local[k], dtype=torch.float32).to(acc.device)
                                      for k in keys]), "mean")
    row = {k: float(v) for k, v in zip(keys, reduced)}
    row.update({"objective/beta": kl_coef, "policy/early_stop": float(early_stop), "train/learning_rate": learning_rate,
                **timings, "samples_per_second": exp.size * acc.num_processes / sum(timings.values())})
    return row


def write_samples(path: Path, step: int, exp: Experience, n: int = 4) -> None:
    """A few of the step's responses with their reward (``score``) and each objective's and monitor's score."""
    from rlhaif.data.io import append_jsonl

    for i in range(min(n, exp.size)):
        append_jsonl(path, {"step": step, "prompt": prompt_text(exp.prompts[i]), "response": exp.responses[i],
                            "score": float(exp.scores[i]), "eos": bool(exp.rollout.eos_reached[i]),
                            **{k: float(v[i]) for k, v in exp.score_metrics.items()}})


# ---------------------------------------------------------------------------------------------- the loop


@dataclass(frozen=True)
class PPOResult(TrainResult):
    """What `run_ppo` returns (and its manifest.json's ``outputs``): the training stages' fields, then these."""

    resumed_from: int  # the checkpoint's step, 0 for a fresh start
    precision: dict  # the rollout sampler's precision choice
    rank: int
    param_checksum: float  # Σ|θ| over the trained parameters (processes must agree)


def run_ppo(cfg: PPOConfig) -> PPOResult:
    from rlhaif.generate import read_prompts
    from rlhaif.metrics import MetricsLogger
    from rlhaif.policy.group_advantages import group_prompt_indices
    from rlhaif.policy.kl_control import AdaptiveKLController, FixedKLController
    from rlhaif.precision import choose_precision
    from rlhaif.scorers import load_scorer as load_spec
    from rlhaif.tokens import eos_ids
    from rlhaif.training import (finish_run, load_checkpoint, make_accelerator, make_optimizer, save_checkpoint,
                                 seed_everything, start_run)

    t_start = time.time()
    out = Path(cfg.output_dir)
    acc = make_accelerator(mixed_precision=cfg.mixed_precision, log_with=cfg.log_with, project_dir=out)
    rank, world = acc.process_index, acc.num_processes
    check_batch_sizes(cfg, world)
    seed_everything(cfg.seed)
    records = read_prompts(cfg.prompts)
    scorer, scorer_name = (ObjectiveScorers(cfg, device=acc.device), "objectives") if cfg.objectives else \
        load_scorer(cfg, device=acc.device)
    monitors = {name: load_spec(spec, device=acc.device) for name, spec in cfg.monitor_scorers.items()}
    model, ref, tok = load_policy(cfg)
    prompt_ids = encode_all_prompts(cfg, tok, records, context_length(model.policy))
    eos = eos_ids(tok, model.policy)
    optimizer, scheduler = make_optimizer(model, cfg.learning_rate, total_steps=cfg.steps)
    model, optimizer = acc.prepare(model, optimizer)
    if ref is not None:
        ref.to(acc.device)
    kl_ctl = (AdaptiveKLController(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon) if cfg.kl_target
              else FixedKLController(0.0 if cfg.kl_free else cfg.kl_coef))

    start = 0
    ckpt = start_run(cfg, "ppo", acc)  # resume (refused on other settings, logs cut back) or a fresh start
    if ckpt is not None:
        state = load_checkpoint(ckpt, model, optimizer, scheduler, acc)  # weights, optimizer, scheduler, RNG
        start = state["step"]
        kl_ctl.load_state_dict(state["kl_ctl"])
        if isinstance(scorer, ObjectiveScorers):
            scorer.load_state_dict(state["objectives"])  # λ of the constrained rule, exactly as saved
    else:
        seed_everything(cfg.seed + rank)  # each process samples differently
    if cfg.log_with:
        acc.init_trackers("ppo", config=cfg.model_dump(mode="json"))
    engine = rollout_engine(cfg, acc.unwrap_model(model).policy, tok, prompt_ids, rank)  # resumed weights on resume
    prec = choose_precision(cfg.precision, acc.device)
    maker = ExperienceMaker(cfg, acc, model, ref, tok, prompt_ids, records,
                            Scoring(scorer, scorer_name, monitors, cfg.score_clip), engine, eos, prec, kl_ctl)

    step, row, K = start, {}, cfg.num_generations
    show = ("objective/score", "objective/kl", "objective/beta", "policy/clipfrac")
    with MetricsLogger(out, total_steps=cfg.steps, description="ppo", accelerator=acc, show=show,
                       start_step=start) as log:
        for step in range(start + 1, cfg.steps + 1):
            idx = group_prompt_indices(prompt_indices(step, len(records), cfg.batch_size // K, rank, world, cfg.seed), K)
            exp = maker.make(step, idx)
            t_train = time.perf_counter()
            update_stats, early_stop = ppo_update(cfg, acc, model, optimizer, exp)
            scheduler.step()
            if engine is not None:  # the engine samples the next step from the updated policy
                t_sync = time.perf_counter()
                engine.update_weights(acc.unwrap_model(model).policy)
                exp.stats["time/weight_sync"] = torch.tensor(time.perf_counter() - t_sync)
            timings = {**exp.timings, "time/train": time.perf_counter() - t_train}
            kl_coef = kl_ctl.value if maker.kl_reward or cfg.kl_free else cfg.kl_loss_coef  # the β in force
            row = step_metrics(cfg, acc, exp, update_stats, early_stop, kl_coef, scheduler.get_last_lr()[0], timings)
            if not cfg.kl_free:
                kl_ctl.update(row["objective/kl"], cfg.batch_size * world)
            if isinstance(scorer, ObjectiveScorers):
                row.update(scorer.after_step(row))  # λ ← max(0, λ + η_λ·(mean cost − d)); logs the λ used
            log.log(step, row)
            if acc.is_main_process and cfg.sample_every and step % cfg.sample_every == 0:
                write_samples(out / "samples.jsonl", step, exp)
            done = cfg.score_threshold is not None and row["objective/score"] >= cfg.score_threshold
            if step % cfg.save_every == 0 or step == cfg.steps or done:
                save_checkpoint(out, step, model, optimizer, scheduler, {"kl_ctl": kl_ctl.state_dict(), **(
                    {"objectives": scorer.state_dict()} if isinstance(scorer, ObjectiveScorers) else {})}, acc)
            if done:
                log.print(f"score {row['objective/score']:.3f} reached score_threshold {cfg.score_threshold}: stop")
                break

    if engine is not None:
        engine.close()
    model_dir, checksum = save_final(cfg, acc, model, tok)
    result = finish_run("ppo", cfg, PPOResult(output_dir=str(cfg.output_dir), model=str(model_dir), metrics=row,
                                              steps=step, resumed_from=start, precision=prec.as_manifest(),
                                              rank=rank, param_checksum=checksum), t_start, acc)
    acc.end_training()
    return result


def save_final(cfg: PPOConfig, acc, model, tok) -> tuple[Path, float]:
    """Save the policy to ``model/`` (the value head beside it with a critic); (its folder, Σ|θ| over the
    trained parameters)."""
    from rlhaif.models.loading import is_adapter_folder
    from rlhaif.training import save_pretrained_atomic

    out, core = Path(cfg.output_dir), acc.unwrap_model(model)
    merge = cfg.merge_lora or (cfg.lora_r > 0 and is_adapter_folder(cfg.model))  # SFT adapter merged at load
    model_dir = save_pretrained_atomic(core.policy, tok, out / "model", merge_lora=merge, accelerator=acc)
    if acc.is_main_process and cfg.advantage_estimator == "gae":
        from safetensors.torch import save_file

        save_file({k: v.detach().cpu().contiguous() for k, v in core.value_head.state_dict().items()},
                  str(out / "value_head.safetensors"))
    return model_dir, float(sum(p.detach().double().abs().sum() for p in core.parameters() if p.requires_grad))
