"""Critic-free advantages from K responses per prompt (RLOO, GRPO, Dr. GRPO) and the per-response loss
weighting they use (GRPO's k3 KL loss term is ``kl.kl_loss``). Pure functions of tensors; run_ppo chooses by
``advantage_estimator``.

Layout: a rollout batch of B = G·K rows holds G groups of K consecutive rows (prompt g at rows g·K … g·K+K−1);
``rewards`` (B,) are sequence rewards R_i (score, minus β·Σ_t kl_t when the KL is in the reward).

    RLOO  (Ahmadian et al. 2024):  Â_i = R_i − (1/(K−1))·Σ_{j≠i} R_j
    GRPO  (Shao et al. 2024):      Â_i = (R_i − mean(R)) / (std(R) + ε)     (std with K − 1, as torch.std)
    Dr. GRPO (Liu et al. 2025):    Â_i = R_i − mean(R)

The same Â_i goes on every token of response i. A group whose rewards are all equal carries no signal: its
advantages are exactly 0 (not a rounding residue divided by ε) and it is counted in ``zero_std_share``.
"""

from __future__ import annotations

import torch

from rlhaif.errors import ConfigError

GROUP_ESTIMATORS = ("rloo", "grpo", "dr_grpo")


def group_prompt_indices(prompt_indices: list[int], num_generations: int) -> list[int]:
    """Each prompt index repeated K times in a row: the rollout batch of one process, groups contiguous.
    Prompts are picked per process before the repeat, so a group never splits across processes."""
    return [i for i in prompt_indices for _ in range(num_generations)]


def check_group_settings(estimator: str, num_generations: int, batch_size: int, kl_in_reward: bool,
                         kl_target, value_model) -> None:
    """One ConfigError per bad combination of the estimator settings, naming the field to change."""
    if num_generations < 1:
        raise ConfigError(f"num_generations must be at least 1 (it is {num_generations})")
    if estimator in GROUP_ESTIMATORS and num_generations < 2:
        raise ConfigError(f"advantage_estimator '{estimator}' compares the responses to one prompt with each "
                          f"other: set num_generations to 2 or more (it is {num_generations}), or use "
                          f"advantage_estimator 'gae'")
    if batch_size % num_generations:
        raise ConfigError(f"batch_size ({batch_size}) counts rollouts (prompts × num_generations) and must be a "
                          f"multiple of num_generations ({num_generations}): e.g. batch_size "
                          f"{max(1, batch_size // num_generations) * num_generations}")
    if estimator in GROUP_ESTIMATORS and value_model:
        raise ConfigError(f"value_model is the critic; advantage_estimator '{estimator}' uses none: "
                          f"drop value_model or use advantage_estimator 'gae'")
    if kl_target is not None and not kl_in_reward:
        raise ConfigError("kl_target adapts the KL coefficient in the reward (kl_coef), but kl_in_reward is false "
                          "(the KL is a loss term with kl_loss_coef): set kl_target to null or kl_in_reward true")


@torch.no_grad()
def group_advantages(rewards: torch.Tensor, num_generations: int, estimator: str, eps: float = 1e-6
                     ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(Â (B,), stats) for groups of ``num_generations`` consecutive rows. stats: ``zero_std_share`` (share of
    groups whose rewards are all equal), ``group_std`` (mean over groups of the within-group std of R)."""
    K = num_generations
    if K < 2 or rewards.numel() % K:
        raise ValueError(f"{rewards.numel()} rewards do not form groups of {K} (K ≥ 2)")
    r = rewards.reshape(-1, K).double()  # (G, K)
    mean = r.mean(-1, keepdim=True)
    std = r.std(-1, keepdim=True)  # K − 1 in the denominator
    if estimator == "rloo":
        adv = r - (r.sum(-1, keepdim=True) - r) / (K - 1)  # = K/(K−1)·(R − mean)
    elif estimator == "grpo":
        adv = (r - mean) / (std + eps)
    elif estimator == "dr_grpo":
        adv = r - mean
    else:
        raise ValueError(f"unknown group estimator '{estimator}'; known: {', '.join(GROUP_ESTIMATORS)}")
    flat = flat_groups(rewards, K)[:, None]  # (G, 1): no signal
    adv = torch.where(flat, torch.zeros_like(adv), adv)
    return adv.reshape(-1).to(rewards.dtype), group_stats(rewards, K)


@torch.no_grad()
def group_stats(values: torch.Tensor, num_generations: int) -> dict[str, torch.Tensor]:
    """``zero_std_share``: share of groups of ``num_generations`` consecutive rows whose values are all equal;
    ``group_std``: mean over groups of the within-group std (K − 1 in the denominator)."""
    v = values.reshape(-1, num_generations).double()
    flat = flat_groups(values, num_generations)
    return {"zero_std_share": flat.double().mean().to(values.dtype), "group_std": v.std(-1).mean().to(values.dtype)}


@torch.no_grad()
def flat_groups(values: torch.Tensor, num_generations: int) -> torch.Tensor:
    """(G,) bool: whether each group of ``num_generations`` consecutive rows has all its values equal (std 0:
    its group advantages are 0, it carries no gradient)."""
    v = values.reshape(-1, num_generations)
    return v.max(-1).values == v.min(-1).values


def informative_rows(values: torch.Tensor, num_generations: int, wanted_groups: int
                     ) -> tuple[list[int], list[int]]:
    """DAPO's dynamic-sampling filter (Yu et al. 2025) on one sampling round: (the rows of the first
    ``wanted_groups`` groups whose values are not all equal, the rows of the flat groups met before them),
    each in order and in whole groups of ``num_generations`` rows. Groups past the ``wanted_groups``-th
    informative one are in neither list."""
    K, kept, flat_rows = num_generations, [], []
    for g, flat in enumerate(flat_groups(values, K).tolist()):
        if len(kept) == wanted_groups * K:
            break
        (flat_rows if flat else kept).extend(range(g * K, (g + 1) * K))
    return kept, flat_rows


LOSS_AGGREGATIONS = ("token_mean", "sequence_mean", "constant")


def loss_token_weights(mask: torch.Tensor, aggregation: str, max_new_tokens: int) -> torch.Tensor:
    """(B, R) positive weights c with  masked_mean(c·ℓ, mask) = the loss aggregation named:

        "token_mean"     (PPO, RLOO; DAPO):  Σ_{i,t} ℓ_it / Σ_i L_i                 (c = 1)
        "sequence_mean"  (GRPO):             (1/B)·Σ_i (1/L_i)·Σ_t ℓ_it             (c = N/(B·L_i))
        "constant"       (Dr. GRPO):         (1/B)·Σ_i Σ_t ℓ_it / max_new_tokens    (c = N/(B·max_new_tokens))

    with L_i the length of response i, N = Σ_i L_i and B the number of responses with at least one token in
    ``mask`` (a response masked out of the loss, e.g. a truncated one, is not counted). The clipped surrogate
    is positively homogeneous in Â (max(−cÂr, −cÂ·clip(r)) = c·max(−Âr, −Â·clip(r)) for c > 0), so scaling the
    advantages by c weights its tokens the same way, and the clip decisions (clipfrac) do not change.

    GRPO's per-response mean gives each token of a short response more weight than a token of a long one:
    a positive Â pushes short answers harder and a negative Â punishes long ones less, which lengthens wrong
    answers (Liu et al. 2025, "length bias"). Dr. GRPO divides by a constant instead; DAPO's token mean gives
    every token the same weight (Yu et al. 2025), so long responses count in proportion to their length."""
    m = mask.to(torch.float32)
    if aggregation == "token_mean":
        return m.clone()
    lengths = m.sum(-1)
    B, n = max(1, int((lengths > 0).sum())), m.sum()
    if aggregation == "sequence_mean":
        per_row = n / (B * lengths.clamp(min=1))
    elif aggregation == "constant":
        per_row = (n / (B * max_new_tokens)).expand(m.shape[0])
    else:
        raise ValueError(f"unknown loss aggregation '{aggregation}'; known: {', '.join(LOSS_AGGREGATIONS)}")
    return per_row[:, None] * m


LOSS_AGGREGATION = {"gae": "token_mean", "rloo": "token_mean", "grpo": "sequence_mean", "dr_grpo": "constant"}
"""The loss aggregation each advantage estimator's paper uses: the default of ``loss_aggregation``."""
