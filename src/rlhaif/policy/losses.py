"""PPO losses as pure functions of tensors, each returning ``(loss, stats)``.

Shapes: response-aligned (B, R) tensors (``logprobs``, ``old_logprobs``, ``advantages``, ``values``,
``returns``, ``mask``); ``logp`` is (B, R, V). Means are over real response tokens only (``mask``); pads are dropped by selection
(``zero_pads``), so a NaN or inf on a pad reaches neither the loss nor the gradient.
"""

from __future__ import annotations

import torch

from rlhaif.policy.advantages import masked_mean, masked_var, zero_pads
from rlhaif.policy.kl import LOG_RATIO_CLAMP, kl_k3


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                mask: torch.Tensor, clip_range: float = 0.2, clip_range_high: float | None = None,
                importance_sampling_level: str = "token") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped surrogate (Schulman et al. 2017, eq. 7), to minimise:

        ratio = exp(log π_θ − log π_old);  L_clip = −E[min(ratio·Â, clip(ratio, 1 − ε_low, 1 + ε_high)·Â)]

    ε_low = ``clip_range``; ε_high = ``clip_range_high``, None = ε_low (the symmetric clip). A larger ε_high
    is DAPO's clip-higher (Yu et al. 2025): a token with Â > 0 may gain more probability before its gradient
    stops, so unlikely tokens can still grow and the entropy does not collapse; Â < 0 is clipped at 1 − ε_low
    as before.

    ``importance_sampling_level`` "token" uses each token's ratio; "sequence" is GSPO (Zheng et al. 2025):
    one ratio per response, the geometric mean of its token ratios,

        s_i = exp((1/L_i)·Σ_t (log π_θ − log π_old)),   clipped as a whole: clip(s_i, 1 − ε_low, 1 + ε_high)

    put on every token of response i (so a response is clipped or kept as one; the aggregation weights in
    ``advantages`` still decide how its tokens are summed).

    stats: ``clipfrac`` (share of tokens where the clipped term is the one used), ``approx_kl``
    (k3 estimate of KL(π_old‖π_θ) per token: E[(ratio − 1) − log ratio], ``kl.kl_k3``, token ratios at either
    level), ``ratio`` (mean of the ratio used, token or sequence, over tokens).
    The log-ratio is clamped to ±``LOG_RATIO_CLAMP`` before ``exp`` (no overflow)."""
    eps_high = clip_range if clip_range_high is None else clip_range_high
    log_ratio = zero_pads(logprobs - old_logprobs, mask).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    advantages = zero_pads(advantages, mask)
    if importance_sampling_level == "token":
        ratio = torch.exp(log_ratio)
    elif importance_sampling_level == "sequence":
        m = mask.to(log_ratio.dtype)
        seq_log_ratio = log_ratio.sum(-1, keepdim=True) / m.sum(-1, keepdim=True).clamp(min=1)  # (B, 1)
        ratio = torch.exp(seq_log_ratio).expand_as(log_ratio)
    else:
        raise ValueError(f"unknown importance_sampling_level '{importance_sampling_level}'; known: token, sequence")
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + eps_high)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        stats = {"clipfrac": masked_mean((clipped > unclipped).float(), mask),
                 "approx_kl": masked_mean(kl_k3(old_logprobs, logprobs), mask),
                 "ratio": masked_mean(ratio, mask)}
    return loss, stats


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip_range_value: float = 0.2) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss (PPO2 / TRL): the new value may not leave old_values ± ε_v for free.

        L_V = ½·E[max((V − ret)², (clip(V, V_old − ε_v, V_old + ε_v) − ret)²)]

    stats: ``vf_clipfrac`` (share of tokens where the clipped error is the larger)."""
    values, old_values, returns = (zero_pads(x, mask) for x in (values, old_values, returns))
    v_clipped = old_values + torch.clamp(values - old_values, -clip_range_value, clip_range_value)
    err = (values - returns) ** 2
    err_clipped = (v_clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(err, err_clipped), mask)
    with torch.no_grad():
        stats = {"vf_clipfrac": masked_mean((err_clipped > err).float(), mask)}
    return loss, stats


def entropy_from_logprobs(logp: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean per-token entropy H = −Σ_v p_v log p_v from ``logp`` (B, R, V), the log-softmax of the logits
    already divided by the sampling temperature. Returned as (entropy, stats); the PPO loss subtracts
    c₂·entropy (a bonus)."""
    ent = -(logp.exp() * logp).sum(-1)  # (B, R)
    entropy = masked_mean(ent, mask)
    return entropy, {"entropy": entropy.detach()}


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1 − Var[returns − values] / Var[returns] over masked tokens: 1 is a perfect critic, ≤ 0 a useless one.
    Constant returns (Var[returns] < 1e-8) leave it undefined: reported as 0, so a logged mean stays sane."""
    returns, values = zero_pads(returns, mask), zero_pads(values, mask)
    var_ret = masked_var(returns, mask)
    ev = 1 - masked_var(returns - values, mask) / var_ret.clamp(min=1e-8)
    return torch.where(var_ret < 1e-8, torch.zeros_like(ev), ev)
